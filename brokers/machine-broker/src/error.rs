//! The broker's one error type and its one mapping to gRPC status codes (reference §2.1,
//! "machinebroker" column: NotFound for unknown ids and names, AlreadyExists for a duplicate
//! NIC or volume name, InvalidArgument for malformed requests and for a lower object the
//! broker does not manage, Internal for anything else; irikit adds Unavailable when the lower
//! store cannot be reached, so callers retry).

use tonic::Status;

/// What a broker call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed, or names an object the broker does not manage.
    #[error("{0}")]
    InvalidArgument(String),
    /// The machine, reservation, volume or NIC does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A volume or NIC of that name is already attached.
    #[error("{0}")]
    AlreadyExists(String),
    /// The request is well-formed but the lower plane's state forbids it (e.g. a machine
    /// naming a reservation that does not exist).
    #[error("{0}")]
    FailedPrecondition(String),
    /// No lower pool can host the machine (it names no reservation and every pool that
    /// serves reservations rejected one for it).
    #[error("{0}")]
    ResourceExhausted(String),
    /// The lower store refused or failed.
    #[error("lower store")]
    Store(#[source] irikit_api::store::Error),
}

/// Result of the broker's operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<irikit_api::store::Error> for Error {
    fn from(err: irikit_api::store::Error) -> Self {
        Error::Store(err)
    }
}

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        use irikit_api::store::Error as S;
        match err {
            Error::InvalidArgument(m) => Status::invalid_argument(m),
            Error::NotFound(m) => Status::not_found(m),
            Error::AlreadyExists(m) => Status::already_exists(m),
            Error::FailedPrecondition(m) => Status::failed_precondition(m),
            Error::ResourceExhausted(m) => Status::resource_exhausted(m),
            Error::Store(S::Invalid { .. } | S::BadRequest(_)) => {
                Status::invalid_argument(format!("{:#}", anyhow::Error::new(err)))
            }
            Error::Store(S::Backend(_)) => {
                Status::unavailable(format!("{:#}", anyhow::Error::new(err)))
            }
            Error::Store(_) => Status::internal(format!("{:#}", anyhow::Error::new(err))),
        }
    }
}

/// Shorthand for [`Error::InvalidArgument`].
pub(crate) fn invalid(message: impl Into<String>) -> Error {
    Error::InvalidArgument(message.into())
}
