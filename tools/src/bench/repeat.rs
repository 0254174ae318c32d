//! `--repeat N`: how reproducible a run is. Each figure of the N reports is summarised by its
//! median and spread (the largest distance from the median, in percent of it), so one noisy
//! run neither hides nor makes a difference between two configurations.

use super::report::Report;
use serde::Serialize;
use std::io::Write;
use std::path::Path;

/// One figure over the runs.
#[derive(Serialize, Debug, PartialEq)]
pub struct Spread {
    pub figure: &'static str,
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// Largest distance of a run from the median, in percent of the median.
    pub spread_percent: f64,
}

impl Spread {
    /// `None` without values.
    fn of(figure: &'static str, values: &[f64]) -> Option<Spread> {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let (&min, &max) = (sorted.first()?, sorted.last()?);
        let middle = sorted.len() / 2;
        let median = if sorted.len() % 2 == 1 {
            sorted[middle]
        } else {
            (sorted[middle - 1] + sorted[middle]) / 2.0
        };
        let distance = (max - median).max(median - min);
        Some(Spread {
            figure,
            median,
            min,
            max,
            spread_percent: if median > 0.0 {
                distance / median * 100.0
            } else {
                0.0
            },
        })
    }
}

/// The figures a run reports, where it has them.
fn figures(report: &Report) -> Vec<(&'static str, Option<f64>)> {
    let rate = |messages: u64, value: f64| (messages > 0).then_some(value);
    let mut figures = vec![
        (
            "produced msg/s",
            rate(
                report.figures.produced.messages,
                report.figures.produced.messages_per_second,
            ),
        ),
        (
            "produced MB/s",
            rate(
                report.figures.produced.messages,
                report.figures.produced.megabytes_per_second,
            ),
        ),
        (
            "consumed msg/s",
            rate(
                report.figures.consumed.messages,
                report.figures.consumed.messages_per_second,
            ),
        ),
    ];
    let publish = [
        "publish p50 ms",
        "publish p99 ms",
        "publish p99.9 ms",
        "publish max ms",
    ];
    let end_to_end = [
        "end-to-end p50 ms",
        "end-to-end p99 ms",
        "end-to-end p99.9 ms",
        "end-to-end max ms",
    ];
    for (names, p) in [
        (publish, &report.publish_latency_ms),
        (end_to_end, &report.end_to_end_latency_ms),
    ] {
        let values = p.as_ref().map(|p| [p.p50, p.p99, p.p99_9, p.max]);
        figures.extend((0..4).map(|i| (names[i], values.map(|v| v[i]))));
    }
    figures
}

/// Every run and the summary of each figure every run has.
#[derive(Serialize)]
pub struct Repeated {
    pub summary: Vec<Spread>,
    pub runs: Vec<Report>,
}

impl Repeated {
    pub fn of(runs: Vec<Report>) -> Repeated {
        let per_run: Vec<_> = runs.iter().map(figures).collect();
        let summary = per_run
            .first()
            .map(|first| {
                first
                    .iter()
                    .enumerate()
                    .filter_map(|(i, (name, _))| {
                        let values: Option<Vec<f64>> = per_run.iter().map(|f| f[i].1).collect();
                        Spread::of(name, &values?)
                    })
                    .collect()
            })
            .unwrap_or_default();
        Repeated { summary, runs }
    }

    pub fn print(&self, out: &mut impl Write) {
        let Some(first) = self.runs.first() else {
            return;
        };
        let mut text = format!("{} runs of {}", self.runs.len(), first.header());
        text += &format!(
            "{:<20} {:>12} {:>12} {:>12} {:>8}\n",
            "", "median", "min", "max", "spread"
        );
        for s in &self.summary {
            text += &format!(
                "{:<20} {:>12.3} {:>12.3} {:>12.3} {:>7.1}%\n",
                s.figure, s.median, s.min, s.max, s.spread_percent
            );
        }
        for (who, behind) in [
            (
                "producers",
                self.runs
                    .iter()
                    .filter(|r| r.figures.producers_fell_behind)
                    .count(),
            ),
            (
                "consumers",
                self.runs
                    .iter()
                    .filter(|r| r.figures.consumers_fell_behind)
                    .count(),
            ),
        ] {
            if behind > 0 {
                text += &format!("{who} fell behind in {behind} of the runs\n");
            }
        }
        let _ = out.write_all(text.as_bytes());
    }

    pub fn write_json(&self, path: Option<&Path>) -> Result<(), String> {
        path.map_or(Ok(()), |path| super::report::write_json(path, self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_and_spread_of_odd_and_even_counts() {
        let s = Spread::of("x", &[110.0, 90.0, 100.0, 104.0, 95.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (100.0, 90.0, 110.0));
        assert!((s.spread_percent - 10.0).abs() < 1e-9);
        let s = Spread::of("x", &[4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!(s.median, 2.5);
        assert!((s.spread_percent - 60.0).abs() < 1e-9);
        assert_eq!(Spread::of("x", &[]), None);
        assert_eq!(Spread::of("x", &[0.0, 0.0]).unwrap().spread_percent, 0.0);
    }
}
