//! The `mixopt` binary: parse, run, map errors to a one-line message and exit code 1.

use clap::Parser;
use std::io::Write;

// The default allocator spent 15–20% of a proxy training step zeroing fresh
// pages (DESIGN.md, "Allocator"); mimalloc reuses them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = mixopt::cli::Cli::parse();
    if let Err(err) = mixopt::cli::run(cli) {
        // A closed pipe (e.g. `mixopt predict | head`) is not a failure.
        if err.chain().any(|c| {
            c.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
        }) {
            std::process::exit(0);
        }
        let mut stderr = std::io::stderr().lock();
        let _ = writeln!(stderr, "error: {err:#}");
        std::process::exit(1);
    }
}
