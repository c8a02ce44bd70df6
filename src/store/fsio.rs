//! Durable file writes and single-writer locks, shared by every stage that
//! writes state a later run depends on (runs tables and their sidecars, the
//! online state file, law.json, weights.json, the token cache manifest).
//!
//! `write_atomic` gives "old file or new file, never a mix, and the new one
//! survives a power cut once this returns": a uniquely named temporary file in
//! the same directory, fsync of its data, rename over the target, fsync of the
//! directory (the rename is a directory change). Unique names mean two writers
//! of one path never write into the same temporary file.
//!
//! `lock_exclusive` refuses a second writer of the same file: it takes an
//! advisory `flock`-style lock (std's `File::try_lock`) that the OS drops when
//! the holder exits, `kill -9` included, so a crashed writer never leaves a
//! stale lock behind.

use crate::error::{Error, IoContext, Result};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Distinguishes temporary files of one process (with the pid, of all).
static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The directory holding `path` (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// A temporary name beside `path`, unique to this process and call:
/// `.NAME.PID.N.tmp~` (hidden, and `*.tmp~` as before for cleanup scripts).
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    parent_dir(path).join(format!(".{name}.{}.{n}.tmp~", std::process::id()))
}

/// fsync a directory so a rename or a new entry in it is durable. Not every
/// platform can open a directory; there the rename is as durable as the OS makes it.
pub fn sync_dir(dir: &Path) -> Result<()> {
    match File::open(dir) {
        Ok(d) => match d.sync_all() {
            Ok(()) => Ok(()),
            // Some filesystems refuse fsync on a directory handle: nothing more to do.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::EBADF)) => Ok(()),
            Err(e) => Err(Error::io(dir, e)),
        },
        Err(_) => Ok(()),
    }
}

/// Write bytes to `path` atomically and durably (see the module note).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = parent_dir(path);
    std::fs::create_dir_all(dir).at(dir)?;
    let tmp = temp_path(path);
    let written = (|| {
        let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(&tmp, e));
    }
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    sync_dir(dir)
}

/// Read a text file whole, without a leading UTF-8 byte-order mark (editors
/// on Windows add one; JSON and TOML parsers refuse it as a stray character).
pub fn read_text(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path).at(path)?;
    Ok(match text.strip_prefix('\u{feff}') {
        Some(rest) => rest.to_string(),
        None => text,
    })
}

/// An exclusive lock held until dropped (or the process ends).
#[derive(Debug)]
pub struct FileLock {
    _file: File,
    path: PathBuf,
}

impl FileLock {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Lock `file` (already open on `path`) for this process alone, or say who
/// holds it. `what` names the kind of writer for the message ("sweep", "online
/// server"); `hint` says what to do instead.
pub fn try_lock_file(file: &File, path: &Path, what: &str, hint: &str) -> Result<()> {
    match file.try_lock() {
        Ok(()) => Ok(()),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::invalid(format!(
            "{}: locked by another running {what} (two writers would corrupt it); {hint}",
            path.display()
        ))),
        // A filesystem without locks: go on unprotected, but say so.
        Err(std::fs::TryLockError::Error(e)) if e.kind() == std::io::ErrorKind::Unsupported => {
            eprintln!(
                "warning: {}: this filesystem does not support file locks; make sure only one {what} writes it",
                path.display()
            );
            Ok(())
        }
        Err(std::fs::TryLockError::Error(e)) => Err(Error::io(path, e)),
    }
}

/// Create (if needed) and lock `lock_path`, a file that exists only to be
/// locked (for targets replaced by rename, whose inode changes on every write).
pub fn lock_exclusive(lock_path: &Path, what: &str, hint: &str) -> Result<FileLock> {
    let dir = parent_dir(lock_path);
    std::fs::create_dir_all(dir).at(dir)?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(lock_path)
        .at(lock_path)?;
    try_lock_file(&file, lock_path, what, hint)?;
    Ok(FileLock {
        _file: file,
        path: lock_path.to_path_buf(),
    })
}

/// `PATH.lock`: the lock file of a target replaced by rename.
pub fn lock_path_for(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_os_string();
    p.push(".lock");
    PathBuf::from(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_atomic_writes_of_one_path_never_collide() {
        // With one fixed temporary name, two writers rename each other's
        // temporary file away (ENOENT) or publish a mix of both payloads.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let payloads: Vec<Vec<u8>> = (0..4u8).map(|t| vec![b'a' + t; 64 * 1024]).collect();
        std::thread::scope(|s| {
            for p in &payloads {
                let path = &path;
                s.spawn(move || {
                    for _ in 0..50 {
                        write_atomic(path, p).unwrap();
                    }
                });
            }
        });
        let back = std::fs::read(&path).unwrap();
        assert!(payloads.contains(&back), "a mix of payloads was published");
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("state.json")]);
    }

    #[test]
    fn second_lock_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.lock");
        let first = lock_exclusive(&p, "test writer", "wait").unwrap();
        let e = lock_exclusive(&p, "test writer", "wait")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("x.lock") && e.contains("locked by another running test writer"),
            "{e}"
        );
        drop(first);
        lock_exclusive(&p, "test writer", "wait").unwrap();
    }
}
