//! `oxbow storage torture-writer`: the process the torture kills. It appends to one partition
//! on direct I/O until killed (`oxbow_storage::torture::kill`), printing every event on a line.

use clap::{Args, ValueEnum};
use oxbow_core::FlushPolicy;
use oxbow_storage::torture::kill::{self, Event};
use oxbow_storage::{OpenOptions, Partition};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::rc::Rc;

/// `oxbow storage torture-writer ...`: the process the torture kills.
#[derive(Args, Debug)]
pub struct WriterArgs {
    /// The partition directory.
    #[arg(long)]
    dir: PathBuf,
    #[arg(long)]
    epoch: i32,
    #[arg(long)]
    first_id: u64,
    #[arg(long)]
    seed: u64,
    #[arg(long, value_enum)]
    flush: Flush,
}

/// The writer's flush policy, as a flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Flush {
    Always,
    Interval,
    Never,
}

impl Flush {
    pub const ALL: [Flush; 3] = [Flush::Always, Flush::Interval, Flush::Never];

    pub fn policy(self) -> FlushPolicy {
        match self {
            Flush::Always => FlushPolicy::Always,
            Flush::Interval => FlushPolicy::Interval,
            Flush::Never => FlushPolicy::Never,
        }
    }
}

/// The writer process: appends until killed, one line per event on stdout.
pub fn writer(args: WriterArgs) -> Result<ExitCode, String> {
    let flush = args.flush.policy();
    let data = args
        .dir
        .parent()
        .and_then(Path::parent)
        .ok_or("--dir is <data>/<topic>/<partition>")?
        .to_path_buf();
    glommio::LocalExecutorBuilder::default()
        .name("torture-writer")
        .spawn(move || async move {
            oxbow_storage::prepare_shard_io(&data, "writer")
                .await
                .map_err(|e| format!("preparing direct I/O in {data:?}: {e}"))?;
            let partition = Partition::open(&args.dir, kill::config(flush), OpenOptions::default())
                .await
                .map_err(|e| format!("opening {:?}: {e}", args.dir))?;
            let report: Rc<dyn Fn(Event) -> std::io::Result<()>> = Rc::new(|event| {
                let mut out = std::io::stdout().lock();
                writeln!(out, "{event}")?;
                out.flush()
            });
            kill::write_until_killed(
                Rc::new(partition),
                args.epoch,
                args.first_id,
                args.seed,
                report,
            )
            .await
            .map_err(|v| v.to_string())
        })
        .map_err(|e| format!("starting the writer: {e}"))?
        .join()
        .map_err(|e| format!("the writer: {e}"))??;
    Ok(ExitCode::SUCCESS)
}
