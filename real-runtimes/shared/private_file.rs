//! Replacing a file atomically with one only the runtime's user can read, as both real runtimes
//! do (included with `#[path]` by ch-machine-runtime and file-volume-runtime, so neither
//! depends on the other).

use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _, path::Path};

/// Put `bytes` at `path` by way of `tmp`: a 0600 file, written (and synced when `durable`),
/// then renamed over `path`.
pub(crate) fn replace(tmp: &Path, path: &Path, bytes: &[u8], durable: bool) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(tmp)?;
    f.write_all(bytes)?;
    if durable {
        f.sync_all()?;
    }
    drop(f);
    std::fs::rename(tmp, path)
}
