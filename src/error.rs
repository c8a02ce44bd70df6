//! Library error type. Every variant names the file, line or field at fault so
//! the CLI can print one clear line; the CLI adds context with `anyhow`.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O failure on a named path. (`err` is deliberately not a `#[source]`:
    /// the message already includes it, and anyhow would print it twice.)
    #[error("{}: {err}", path.display())]
    Io { path: PathBuf, err: std::io::Error },
    /// Malformed content at a known place in a file (line is 1-based; 0 = whole file).
    #[error("{file}{}: {msg}", if *line > 0 { format!(":{line}") } else { String::new() })]
    Parse {
        file: String,
        line: usize,
        msg: String,
    },
    /// A value that is well-formed but not acceptable (names the field).
    #[error("{0}")]
    Invalid(String),
    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().to_path_buf(),
            err: source,
        }
    }

    pub fn parse(file: impl AsRef<Path>, line: usize, msg: impl Into<String>) -> Self {
        Error::Parse {
            file: file.as_ref().display().to_string(),
            line,
            msg: msg.into(),
        }
    }

    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::Invalid(msg.into())
    }
}

/// Attach a path to `std::io::Result`s.
pub trait IoContext<T> {
    fn at(self, path: impl AsRef<Path>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl AsRef<Path>) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}
