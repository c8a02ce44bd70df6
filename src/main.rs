//! The `mixopt` binary: parse, run, map errors to a one-line message and exit code 1.

use clap::Parser;
use std::io::Write;

// The system allocator spent 15–20% of a proxy training step zeroing fresh
// pages (measured with `perf`); mimalloc reuses them (see `main`, and
// docs/benchmarks.md for the tokens/s it bought).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (index 15 of `mi_option_e` in both its
/// v2 and v3 headers; libmimalloc-sys names no constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn main() {
    // Never hand freed memory back to the OS. A proxy step frees and reallocates
    // the same multi-megabyte activation buffers every step; with purging on,
    // each reallocation faults in fresh (transparent huge) pages that the
    // kernel must zero — 54% of the 1m preset's step time in `perf`.
    // SAFETY: sets a process-wide allocator option; no allocation is in flight.
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1);
    }
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
