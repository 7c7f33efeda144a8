//! File work of the volume service that needs no service state: sparse copies, private
//! files, and a volume file's virtual size.

use std::{os::unix::fs::OpenOptionsExt as _, path::Path};

use crate::Format;

/// Copies `source` to a new file `dest` keeping holes: only the data extents (`SEEK_DATA` /
/// `SEEK_HOLE`) are read and written, so a sparse 1 GiB volume with a few written blocks
/// copies in microseconds instead of writing 1 GiB of zeros (`std::fs::copy` fills holes).
pub(super) fn copy_sparse(source: &Path, dest: &Path) -> std::io::Result<()> {
    use rustix::fs::SeekFrom;
    use std::os::unix::fs::FileExt as _;
    let src = std::fs::File::open(source)?;
    let len = src.metadata()?.len();
    let dst = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dest)?;
    dst.set_len(len)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut offset = 0u64;
    while offset < len {
        // ENXIO: no data after `offset` (the rest is a hole).
        let data = match rustix::fs::seek(&src, SeekFrom::Data(offset)) {
            Ok(data) => data,
            Err(rustix::io::Errno::NXIO) => break,
            Err(e) => return Err(e.into()),
        };
        let hole = rustix::fs::seek(&src, SeekFrom::Hole(data))?.min(len);
        let mut at = data;
        while at < hole {
            let want = usize::try_from(hole - at).map_or(buf.len(), |n| n.min(buf.len()));
            let n = src.read_at(&mut buf[..want], at)?;
            if n == 0 {
                break; // the file shrank under us: the rest stays a hole
            }
            dst.write_all_at(&buf[..n], at)?;
            at += u64::try_from(n).unwrap_or(u64::MAX);
        }
        offset = hole.max(at);
    }
    dst.sync_all()
}

/// Create a new file readable and writable by the runtime's user only.
pub(super) fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

/// The qcow2 header's virtual size (big-endian u64 at offset 24).
pub(super) fn qcow2_virtual_size(path: &Path) -> Option<u64> {
    use std::io::Read as _;
    let mut header = [0u8; 32];
    std::fs::File::open(path)
        .ok()?
        .read_exact(&mut header)
        .ok()?;
    (header[..4] == *b"QFI\xfb").then(|| {
        let mut size = [0u8; 8];
        size.copy_from_slice(&header[24..32]);
        u64::from_be_bytes(size)
    })
}

pub(super) fn file_virtual_size(path: &Path, format: Format) -> u64 {
    match format {
        Format::Qcow2 => qcow2_virtual_size(path).unwrap_or(0),
        Format::Raw => std::fs::metadata(path).map_or(0, |m| m.len()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::os::unix::fs::{FileExt as _, MetadataExt as _};

    use super::copy_sparse;

    #[test]
    fn copy_sparse_keeps_data_and_holes() {
        let dir = tempfile::tempdir().unwrap();
        let (source, dest) = (dir.path().join("src"), dir.path().join("dst"));
        let f = std::fs::File::create(&source).unwrap();
        f.set_len(64 << 20).unwrap();
        f.write_all_at(b"head", 0).unwrap();
        f.write_all_at(&vec![7u8; 3 << 20], 20 << 20).unwrap();
        f.write_all_at(b"tail", (64 << 20) - 4).unwrap();
        drop(f);
        copy_sparse(&source, &dest).unwrap();
        assert_eq!(
            std::fs::read(&source).unwrap(),
            std::fs::read(&dest).unwrap()
        );
        // 3 MiB + two blocks of data: far below the 64 MiB a hole-filling copy allocates.
        let allocated = std::fs::metadata(&dest).unwrap().blocks() * 512;
        assert!(allocated < 8 << 20, "{allocated} bytes allocated");
        // An existing destination is never overwritten.
        assert!(copy_sparse(&source, &dest).is_err());
    }
}
