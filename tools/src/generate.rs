//! `oxbow generate`: shell completions and man pages made from the command definitions, so
//! they cannot drift from the commands (`scripts/package` ships them in the Debian package).

use clap::Subcommand;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum GenerateCommand {
    /// A completion script for SHELL, to standard output.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Man pages into a directory: oxbow(1), and oxbow-serve(1) and so on for each command.
    Man {
        /// The directory (made if missing).
        #[arg(long)]
        out: PathBuf,
    },
}

/// Writes what `command` asks for about the whole `cli`.
pub fn run(command: GenerateCommand, mut cli: clap::Command) -> Result<(), String> {
    match command {
        GenerateCommand::Completions { shell } => {
            let name = cli.get_name().to_string();
            clap_complete::generate(shell, &mut cli, name, &mut std::io::stdout());
            Ok(())
        }
        GenerateCommand::Man { out } => {
            let failed = |e: std::io::Error| format!("writing man pages to {}: {e}", out.display());
            std::fs::create_dir_all(&out).map_err(failed)?;
            clap_mangen::generate_to(cli, &out).map_err(failed)
        }
    }
}
