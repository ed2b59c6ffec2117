//! The `finsync` binary: parses the command line and hands it to [`finsync::cli`].

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = finsync::cli::Cli::parse();
    finsync::app::run_to_exit(finsync::cli::run(cli))
}
