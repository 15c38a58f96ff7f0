//! Noticing that a model file was replaced.
//!
//! `funadtrain` calls [`notify_model_written`] after it puts a model into
//! service, which wakes every `funadscore` of the process at once. A scorer
//! in another process notices the new file at its next check of the file's
//! [`FileStamp`], by default once a second.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Condvar, LazyLock, Mutex};
use std::time::Duration;

static WRITES: LazyLock<(Mutex<u64>, Condvar)> = LazyLock::new(|| (Mutex::new(0), Condvar::new()));

/// Wakes every waiter of [`wait_for_write`] in this process.
pub fn notify_model_written() {
    let (count, cond) = &*WRITES;
    *count.lock().unwrap() += 1;
    cond.notify_all();
}

/// Number of model writes notified so far in this process.
pub fn writes() -> u64 {
    *WRITES.0.lock().unwrap()
}

/// Waits until a write after `seen` is notified, or `timeout` passes, and
/// returns the current number of writes.
pub fn wait_for_write(seen: u64, timeout: Duration) -> u64 {
    let (count, cond) = &*WRITES;
    let guard = count.lock().unwrap();
    let (guard, _) = cond
        .wait_timeout_while(guard, timeout, |c| *c == seen)
        .unwrap();
    *guard
}

/// Identity of one version of a file: an atomic rename gives a new inode,
/// an in-place rewrite a new modification time or size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStamp {
    inode: u64,
    len: u64,
    mtime_ns: i128,
}

impl FileStamp {
    /// Returns the stamp of `path`, or `None` when it cannot be read.
    pub fn of(path: &Path) -> Option<Self> {
        let m = std::fs::metadata(path).ok()?;
        Some(FileStamp {
            inode: m.ino(),
            len: m.len(),
            mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
        })
    }
}
