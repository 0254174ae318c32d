//! The latency-by-percentile plot (SVG): x is the percentile on the usual HdrHistogram scale
//! (each tick a further nine: 90%, 99%, 99.9%, ...), y the latency in milliseconds.

use hdrhistogram::Histogram;
use plotters::prelude::*;

/// Nines shown on the x axis: up to 99.999%.
const NINES_MAX: f64 = 5.0;
/// Points per plotted line.
const POINTS: usize = 400;

/// (x = 1 / (1 - q), latency in ms) along the distribution, up to the last quantile the
/// sample count can resolve.
fn points(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    let resolvable = (h.len() as f64).log10().min(NINES_MAX);
    (0..=POINTS)
        .map(|i| resolvable * i as f64 / POINTS as f64)
        .map(|nines| {
            let q = 1.0 - 10f64.powf(-nines);
            (10f64.powf(nines), h.value_at_quantile(q) as f64 / 1_000.0)
        })
        .collect()
}

fn percentile_label(x: &f64) -> String {
    let percent = 100.0 - 100.0 / x;
    let text = format!("{percent:.3}");
    format!("{}%", text.trim_end_matches('0').trim_end_matches('.'))
}

pub fn percentile_svg(title: &str, series: &[(&str, &Histogram<u64>)]) -> Result<String, String> {
    let lines: Vec<(&str, Vec<(f64, f64)>)> = series
        .iter()
        .filter(|(_, h)| !h.is_empty())
        .map(|(name, h)| (*name, points(h)))
        .collect();
    let y_max = lines
        .iter()
        .flat_map(|(_, p)| p.iter().map(|&(_, y)| y))
        .fold(0.001f64, f64::max)
        * 1.1;
    let mut svg = String::new();
    {
        let area = SVGBackend::with_string(&mut svg, (900, 560)).into_drawing_area();
        let failed = |e: &dyn std::fmt::Display| format!("drawing the plot: {e}");
        area.fill(&WHITE).map_err(|e| failed(&e))?;
        let mut chart = ChartBuilder::on(&area)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .margin_right(40)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d((1f64..10f64.powf(NINES_MAX)).log_scale(), 0f64..y_max)
            .map_err(|e| failed(&e))?;
        chart
            .configure_mesh()
            .x_desc("percentile")
            .y_desc("latency (ms)")
            .x_label_formatter(&percentile_label)
            .draw()
            .map_err(|e| failed(&e))?;
        for (i, (name, points)) in lines.into_iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))
                .map_err(|e| failed(&e))?
                .label(name)
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color));
        }
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE)
            .draw()
            .map_err(|e| failed(&e))?;
        area.present().map_err(|e| failed(&e))?;
    }
    Ok(svg)
}
