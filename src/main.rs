//! The `mixopt` binary: parse, run, map errors to a one-line message and exit code 1.

use clap::Parser;
use std::io::Write;

// The default allocator spent 15–20% of a proxy training step zeroing fresh
// pages (DESIGN.md, "Allocator"); mimalloc reuses them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    // Die quietly on a closed pipe (`mixopt predict ... | head`) like other Unix
    // tools, instead of panicking inside println!.
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = mixopt::cli::Cli::parse();
    if let Err(err) = mixopt::cli::run(cli) {
        let mut stderr = std::io::stderr().lock();
        let _ = writeln!(stderr, "error: {err:#}");
        std::process::exit(1);
    }
}
