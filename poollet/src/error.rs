//! The poollet's reconcile error: store failures, runtime RPC failures and unmet invariants.
//! Reconcile errors are data: the controller's error policy turns them into a requeue.

use std::time::Duration;

use irikit_api::store;

/// Why a reconcile (or startup step) failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A store operation failed.
    #[error("store")]
    Store(#[from] store::Error),
    /// A runtime RPC returned an error status.
    #[error("runtime {rpc}: {code:?}: {message}")]
    Rpc {
        /// The RPC name (`CreateMachine`).
        rpc: &'static str,
        /// The gRPC status code.
        code: tonic::Code,
        /// The status message.
        message: String,
    },
    /// A runtime RPC did not answer in time.
    #[error("runtime {rpc}: no answer within {timeout:?}")]
    Timeout {
        /// The RPC name.
        rpc: &'static str,
        /// The timeout that expired.
        timeout: Duration,
    },
    /// An ironcore class does not map to exactly one runtime class.
    #[error("machine class {class:?}: {reason}")]
    ClassMapping {
        /// The ironcore class.
        class: String,
        /// Why it does not map.
        reason: ClassMapError,
    },
    /// An ironcore volume class does not map to exactly one runtime class.
    #[error("volume class {class:?}: {reason}")]
    VolumeClassMapping {
        /// The ironcore class.
        class: String,
        /// Why it does not map.
        reason: ClassMapError,
    },
    /// The runtime answered with something the poollet cannot use.
    #[error("runtime returned {0}")]
    BadResponse(String),
    /// The runtime machine the poollet created for a Machine (its `status.machineID`) is
    /// listed without the labels it was created with: creating another would only add one more
    /// unlabelled machine on every reconcile.
    #[error(
        "runtime machine {machine_id} lost the labels it was created with ({label} missing); not creating another"
    )]
    LabelsLost {
        /// IRI machine id.
        machine_id: String,
        /// The label the poollet finds its machines by.
        label: &'static str,
    },
    /// The runtime's machine has an annotation the handshake needs missing or malformed.
    #[error("runtime machine {machine_id}: annotation {key:?} missing or not a number")]
    Annotation {
        /// IRI machine id.
        machine_id: String,
        /// The annotation key.
        key: &'static str,
    },
}

impl Error {
    /// The gRPC code of an [`Error::Rpc`].
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            Error::Rpc { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether this is a store `NotFound`.
    pub fn is_store_not_found(&self) -> bool {
        matches!(self, Error::Store(store::Error::NotFound { .. }))
    }
}

/// Why a class mapping failed (reference §4.3).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClassMapError {
    /// No runtime class has the same capabilities.
    #[error("no matching runtime class")]
    NoMatch,
    /// Several runtime classes have the same capabilities and none has the same name.
    #[error("ambiguous: runtime classes {0:?} match")]
    Ambiguous(Vec<String>),
    /// The runtime's classes are not known yet (no successful Status so far).
    #[error("runtime classes not known yet")]
    Unknown,
}

/// Result alias for reconciles.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Runs one runtime RPC with a timeout, converting status and timeout into [`Error`].
pub(crate) async fn rpc<T>(
    rpc: &'static str,
    timeout: Duration,
    call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T> {
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => Err(Error::Rpc {
            rpc,
            code: status.code(),
            message: status.message().to_string(),
        }),
        Err(_) => Err(Error::Timeout { rpc, timeout }),
    }
}

/// Checks a runtime's `Version` answer at startup (an empty `runtime_name` is fatal, since it
/// names every `<runtime>://<id>` the poollet writes) and logs the connection.
pub(crate) fn runtime_connected(
    kind: &str,
    runtime_name: &str,
    runtime_version: &str,
    pool: &str,
) -> Result<()> {
    if runtime_name.is_empty() {
        return Err(Error::BadResponse(
            "Version with an empty runtime_name".into(),
        ));
    }
    tracing::info!(
        runtime = %runtime_name,
        version = %runtime_version,
        %pool,
        "connected to the {kind} runtime"
    );
    Ok(())
}
