//! The errors of volume and snapshot operations, and their one mapping to gRPC codes.

use tonic::Status;
use tracing::warn;

/// Errors of volume operations; mapped to gRPC codes in one place.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Unknown volume or snapshot id.
    #[error("{kind} {id:?} not found")]
    NotFound {
        /// `volume` or `volume snapshot`.
        kind: &'static str,
        /// The id.
        id: String,
    },
    /// The request is malformed.
    #[error("{0}")]
    InvalidArgument(String),
    /// A size beyond what the root's filesystem (or `--max-volume-bytes`) allows.
    #[error("{0}")]
    OutOfRange(String),
    /// A file operation failed.
    #[error("{0}")]
    Io(String),
    /// The object is the source of a copy in progress (a snapshot being taken, a volume being
    /// restored); delete or expand it once the copy has finished.
    #[error("{kind} {id:?} is the source of a copy in progress; try again when it has finished")]
    Busy {
        /// `volume` or `volume snapshot`.
        kind: &'static str,
        /// The id.
        id: String,
    },
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        let message = e.to_string();
        match e {
            Error::NotFound { .. } => Status::not_found(message),
            Error::InvalidArgument(_) => Status::invalid_argument(message),
            Error::Busy { .. } => Status::failed_precondition(message),
            Error::OutOfRange(_) => Status::out_of_range(message),
            Error::Io(_) => {
                warn!(error = %message, "volume operation failed");
                Status::internal(message)
            }
        }
    }
}

/// Result of this crate's volume operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An [`Error::Io`] naming `what` failed.
pub(crate) fn io_err(what: &str) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error::Io(format!("{what}: {e}"))
}
