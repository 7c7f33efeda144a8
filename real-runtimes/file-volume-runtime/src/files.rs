//! Volume and snapshot files: making, copying (holes kept), converting and growing raw and qcow2
//! files. `qemu-img` always gets `-f`: it never probes a format from tenant-written bytes.

use std::{
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::Path,
    process::Stdio,
};

use crate::{
    Format,
    error::{Error, Result, io_err},
};

/// The file work of one runtime: its `qemu-img`, if it has one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Files<'a> {
    /// The `qemu-img` binary.
    pub(crate) qemu_img: Option<&'a Path>,
}

impl Files<'_> {
    /// `qemu-img <flags> <paths> [size]`.
    async fn qemu_img(&self, flags: &[&str], paths: &[&Path], size: Option<u64>) -> Result<()> {
        let bin = self
            .qemu_img
            .ok_or_else(|| Error::Io("qemu-img is not available".into()))?;
        let mut args: Vec<std::ffi::OsString> = flags.iter().map(Into::into).collect();
        args.extend(paths.iter().map(|p| p.as_os_str().to_owned()));
        args.extend(size.map(|s| s.to_string().into()));
        let out = tokio::process::Command::new(bin)
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(io_err("run qemu-img"))?;
        if !out.status.success() {
            return Err(Error::Io(format!(
                "qemu-img {:?}: {}",
                args,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(())
    }

    /// Make `dest` a `format` file of `size` bytes, from `source` (in its recorded format) if
    /// given; a qcow2 source that names a backing or data file is refused.
    pub(crate) async fn make(
        &self,
        dest: &Path,
        format: Format,
        size: u64,
        source: Option<(&Path, Format)>,
    ) -> Result<()> {
        match (format, source) {
            (Format::Raw, None) => {
                let f = create_private(dest).map_err(io_err("create volume file"))?;
                f.set_len(size).map_err(io_err("size volume file"))?;
                f.sync_all().map_err(io_err("sync volume file"))?;
            }
            (Format::Qcow2, None) => {
                self.qemu_img(&["create", "-q", "-f", "qcow2"], &[dest], Some(size))
                    .await?;
            }
            (format, Some((source, source_format))) => {
                if source_format == Format::Qcow2 {
                    crate::check_plain_qcow2(source)
                        .map_err(|e| Error::InvalidArgument(e.to_string()))?;
                }
                self.copy(source, source_format, dest, format, "copy image")
                    .await?;
                self.grow(dest, format, size).await?;
            }
        }
        chmod_private(dest, "chmod volume file")
    }

    /// Copy `source` (in `source_format`) to the new file `dest` in `format`: a sparse copy from
    /// raw to raw (`what` names it in an error), else `qemu-img convert`.
    pub(crate) async fn copy(
        &self,
        source: &Path,
        source_format: Format,
        dest: &Path,
        format: Format,
        what: &'static str,
    ) -> Result<()> {
        if (source_format, format) == (Format::Raw, Format::Raw) {
            let (s, d) = (source.to_owned(), dest.to_owned());
            return tokio::task::spawn_blocking(move || copy_sparse(&s, &d))
                .await
                .map_err(|e| Error::Io(e.to_string()))?
                .map_err(io_err(what));
        }
        let flags = ["convert", "-q", "-f", source_format.as_str()];
        let flags = [&flags[..], &["-O", format.as_str()]].concat();
        self.qemu_img(&flags, &[source, dest], None).await
    }

    /// Grow `path` to at least `size` bytes (virtual size for qcow2).
    pub(crate) async fn grow(&self, path: &Path, format: Format, size: u64) -> Result<()> {
        match format {
            Format::Raw => {
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(io_err("open volume file"))?;
                let len = f.metadata().map_err(io_err("stat volume file"))?.len();
                if len < size {
                    f.set_len(size).map_err(io_err("grow volume file"))?;
                }
                f.sync_all().map_err(io_err("sync volume file"))?;
            }
            Format::Qcow2 => {
                if qcow2_virtual_size(path).unwrap_or(0) < size {
                    self.qemu_img(&["resize", "-q", "-f", "qcow2"], &[path], Some(size))
                        .await?;
                }
            }
        }
        Ok(())
    }
}

/// Make `path` readable and writable by the runtime's user only (`what` names it in an error).
pub(crate) fn chmod_private(path: &Path, what: &str) -> Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io_err(what))
}

/// Copies `source` to a new file `dest` keeping holes: only the data extents (`SEEK_DATA` /
/// `SEEK_HOLE`) are read and written, so a sparse 1 GiB volume with a few written blocks
/// copies in microseconds instead of writing 1 GiB of zeros (`std::fs::copy` fills holes).
fn copy_sparse(source: &Path, dest: &Path) -> std::io::Result<()> {
    use rustix::fs::SeekFrom;
    use std::os::unix::fs::FileExt as _;
    let src = std::fs::File::open(source)?;
    let len = src.metadata()?.len();
    let dst = create_private(dest)?;
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
fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

/// The qcow2 header's virtual size (big-endian u64 at offset 24).
fn qcow2_virtual_size(path: &Path) -> Option<u64> {
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

/// The size a guest sees: the file's length (raw) or the qcow2 header's virtual size.
pub(crate) fn virtual_size(path: &Path, format: Format) -> u64 {
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
