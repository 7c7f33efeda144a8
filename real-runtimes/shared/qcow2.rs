//! The qcow2 header checks both real runtimes share (included with `#[path]` by
//! ch-machine-runtime and file-volume-runtime, so neither depends on the other): the format of
//! an operator-provided image, and the refusal of a qcow2 file that names another file.

use std::path::Path;

/// The format of an operator-provided image (from `--image-dir`, never a guest-writable file):
/// `qcow2` when it starts with the qcow2 magic `QFI\xfb`, else `raw` (the caller's values of
/// its format type). Guest-writable files (volumes, snapshots, local disks) are never sniffed:
/// their format is the one recorded when a runtime made them.
pub(crate) fn sniff_operator_image<F>(path: &Path, qcow2: F, raw: F) -> std::io::Result<F> {
    use std::io::Read as _;
    let mut magic = [0u8; 4];
    let n = std::fs::File::open(path)?.read(&mut magic)?;
    Ok(if n == 4 && magic == *b"QFI\xfb" {
        qcow2
    } else {
        raw
    })
}

/// Refuse a qcow2 file that would make a VMM or `qemu-img` open another file: one with a
/// backing file (header offset 8) or an external data file / unknown incompatible feature
/// (version 3 headers). Defence in depth: the runtimes hand a file over as qcow2 only where
/// its recorded format says so (a file the runtime made, whose header no guest can reach), and
/// QEMU also gets `backing: null`.
pub fn check_plain_qcow2(path: &Path) -> std::io::Result<()> {
    use std::io::Read as _;
    let mut header = [0u8; 80];
    let mut f = std::fs::File::open(path)?;
    let mut n = 0;
    while n < header.len() {
        match f.read(&mut header[n..])? {
            0 => break,
            k => n += k,
        }
    }
    let bad = |why: &str| {
        Err(std::io::Error::other(format!(
            "qcow2 file {}: {why}",
            path.display()
        )))
    };
    if n < 72 || header[..4] != *b"QFI\xfb" {
        return bad("no qcow2 header");
    }
    let be64 = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&header[at..at + 8]);
        u64::from_be_bytes(b)
    };
    let version = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    if be64(8) != 0 {
        return bad("names a backing file (refused)");
    }
    if version >= 3 && (n < 80 || be64(72) & !0b11 != 0) {
        return bad("uses an external data file or unknown incompatible features (refused)");
    }
    Ok(())
}
