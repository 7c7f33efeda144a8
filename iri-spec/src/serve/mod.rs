//! The one bind-and-accept path of every irikit gRPC server on a unix socket
//! (`iri-mock-runtime`, `ch-machine-runtime`, `file-volume-runtime`, and any later one):
//!
//! - [`bind_unix`] creates the socket safely: an existing path is replaced only if it is a
//!   socket nobody answers on (a live server is refused with "another server is listening on
//!   …"; a regular file, directory, symlink or anything else is refused and never deleted), and
//!   the socket is born with mode 0600: it is bound inside a fresh private (0700) directory next
//!   to the target, chmodded there, and hard-linked into place (which fails instead of
//!   replacing anything that appeared meanwhile).
//! - [`incoming`] accepts connections wrapped in [`AnyAuthority`], which makes h2 accept the
//!   `:authority` every gRPC client stack sends on a unix socket: grpc-core (Python, C++, Ruby,
//!   PHP, C#) ≥ 1.57 sends the percent-encoded socket path, grpc-java/netty and grpc-swift the
//!   raw path, some clients nothing or an empty value; h2 alone rejects all but the last.
//!
//! A server then runs `Server::builder()…serve_with_incoming_shutdown(incoming(listener,
//! AuthorityPolicy::Any), shutdown)`. TCP listeners do not use this module and keep h2's
//! strict checks.

mod authority;
mod hpack;
pub mod probe;
pub mod status_cap;
#[cfg(test)]
mod tests;

use std::{
    io,
    os::unix::fs::{DirBuilderExt as _, FileTypeExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

pub use authority::{AnyAuthority, AuthorityPolicy};
pub use status_cap::CapStatusMessage;
use tokio::net::{UnixListener, UnixStream};
use tokio_stream::{Stream, StreamExt as _, wrappers::UnixListenerStream};

/// Why a socket could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// A server answers on the path.
    #[error("another server is listening on {0}")]
    InUse(PathBuf),
    /// The path exists and is not a socket (it is never deleted).
    #[error("{path} exists and is {kind}, not a socket: refusing to replace it")]
    NotASocket {
        /// The path.
        path: PathBuf,
        /// What it is (`a regular file`, `a directory`, ...).
        kind: &'static str,
    },
    /// A filesystem step failed.
    #[error("{what} {path}")]
    Io {
        /// The step (`create directory`, `bind`, `remove stale socket`, ...).
        what: &'static str,
        /// The path it was applied to.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> BindError + 'a {
    move |source| BindError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

fn kind_of(ft: std::fs::FileType) -> &'static str {
    if ft.is_file() {
        "a regular file"
    } else if ft.is_dir() {
        "a directory"
    } else if ft.is_symlink() {
        "a symbolic link"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_block_device() || ft.is_char_device() {
        "a device"
    } else {
        "not a socket"
    }
}

/// Makes room for a socket at `path`: nothing there, or a stale socket (removed). A socket a
/// server still answers on, or anything that is not a socket, is an error.
fn clear_stale(path: &Path) -> Result<(), BindError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("inspect", path)(e)),
    };
    let ft = meta.file_type();
    if !ft.is_socket() {
        return Err(BindError::NotASocket {
            path: path.to_owned(),
            kind: kind_of(ft),
        });
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(BindError::InUse(path.to_owned())),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => std::fs::remove_file(path)
            .or_else(|e| match e.kind() {
                io::ErrorKind::NotFound => Ok(()),
                _ => Err(io_err("remove stale socket", path)(e)),
            }),
        Err(e) => Err(io_err("probe existing socket", path)(e)),
    }
}

/// Binds a unix listener at `path` with mode 0600 from the start (see the module docs):
/// replaces only a stale socket, refuses a live one and anything that is not a socket. The
/// parent directory must exist.
pub fn bind_unix(path: &Path) -> Result<UnixListener, BindError> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    clear_stale(path)?;
    // A private directory next to the target (same filesystem, so the link below works).
    let mut attempt = 0u32;
    let dir = loop {
        let dir = parent.join(format!(
            ".iri{:x}{:x}",
            std::process::id() & 0xffff,
            rand_u32() & 0xfffff
        ));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => break dir,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < 16 => attempt += 1,
            Err(e) => return Err(io_err("create private directory", &dir)(e)),
        }
    };
    let tmp = dir.join("s");
    let res = (|| {
        let listener = UnixListener::bind(&tmp).map_err(io_err("bind", &tmp))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
            .map_err(io_err("set mode of", &tmp))?;
        std::fs::hard_link(&tmp, path).map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                BindError::NotASocket {
                    path: path.to_owned(),
                    kind: "something created while binding",
                }
            } else {
                io_err("link socket to", path)(e)
            }
        })?;
        Ok(listener)
    })();
    let _ = std::fs::remove_file(&tmp);
    let _ = std::fs::remove_dir(&dir);
    res
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish() as u32
}

/// The accepted connections of `listener`, each wrapped with `policy`.
pub fn incoming(
    listener: UnixListener,
    policy: AuthorityPolicy,
) -> impl Stream<Item = io::Result<AnyAuthority<UnixStream>>> + Send + 'static {
    UnixListenerStream::new(listener).map(move |s| s.map(|s| AnyAuthority::new(s, policy)))
}

/// The gRPC server builder every irikit runtime server starts from (unix socket or TCP):
/// tonic's, with [`CapStatusMessage`] so that no error answer carries a `grpc-message` larger
/// than clients accept.
pub fn builder() -> tonic::transport::Server<
    tower::layer::util::Stack<CapStatusMessage, tower::layer::util::Identity>,
> {
    tonic::transport::Server::builder().layer(CapStatusMessage)
}
