//! The `finsync` binary: parses the command line and hands it to [`finsync::cli`].

use std::process::ExitCode;

use clap::Parser;

/// With `--features dhat-heap`, every allocation is counted (see `main`).
#[cfg(feature = "dhat-heap")]
#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

/// jemalloc unless asked otherwise (see the `jemalloc` feature in Cargo.toml).
#[cfg(all(feature = "jemalloc", not(feature = "dhat-heap")))]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    // The heap profile of the whole run, written to `dhat-heap.json` in the working
    // directory when the process ends normally (a command's end, SIGTERM, Ctrl-C).
    #[cfg(feature = "dhat-heap")]
    let _profiler = dhat::Profiler::new_heap();
    let cli = finsync::cli::Cli::parse();
    finsync::app::run_to_exit(finsync::cli::run(cli))
}
