//! Serving one runtime kind on a listener with gRPC health and reflection, as the
//! `iri-mock-runtime` binary does. Usable by anyone who wants the same out-of-process shape.

use std::io;

use iri_spec::{endpoint::RuntimeKind, serve::AnyAuthority};
use tokio::net::UnixListener;
use tokio_stream::StreamExt as _;
use tokio_util::sync::CancellationToken;

use crate::{BucketService, MachineService, MockHandle, VolumeService, conn::MockConn};

/// Errors of serving.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The reflection service could not be built from the descriptor sets.
    #[error("build reflection service")]
    Reflection(#[source] tonic_reflection::server::Error),
    /// The gRPC server failed.
    #[error("serve")]
    Serve(#[source] tonic::transport::Error),
}

/// The fully qualified gRPC service name of `kind`.
pub fn service_name(kind: RuntimeKind) -> &'static str {
    match kind {
        RuntimeKind::Machine => "machine.v1alpha1.MachineRuntime",
        RuntimeKind::Volume => "volume.v1alpha1.VolumeRuntime",
        RuntimeKind::Bucket => "bucket.v1alpha1.BucketRuntime",
    }
}

/// irikit's reservation extension, served (and reflected) with the machine runtime.
const RESERVATION_SERVICE: &str = "irikit.reservation.v1alpha1.ReservationRuntime";

/// Serves `kind`'s runtime of `handle`, `grpc.health.v1.Health` (SERVING for the runtime and
/// for "") and server reflection (v1 and v1alpha) on `listener` until `shutdown` is cancelled.
/// Connections accept any `:authority` ([`iri_spec::serve::AnyAuthority`]; not with the
/// `strict-authority` mutant) and are wrapped so that the drop-connection fault works.
pub async fn serve_unix(
    handle: &MockHandle,
    kind: RuntimeKind,
    listener: UnixListener,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let (reporter, health) = tonic_health::server::health_reporter();
    let name = service_name(kind);
    let reflection = || {
        let builder = tonic_reflection::server::Builder::configure();
        let builder = if matches!(kind, RuntimeKind::Machine) {
            builder.with_service_name(RESERVATION_SERVICE)
        } else {
            builder
        };
        builder
            .register_encoded_file_descriptor_set(iri_spec::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(iri_spec::IRIKIT_FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .with_service_name(name)
            .with_service_name("grpc.health.v1.Health")
            .with_service_name("grpc.reflection.v1.ServerReflection")
            .with_service_name("grpc.reflection.v1alpha.ServerReflection")
    };
    let v1 = reflection().build_v1().map_err(ServeError::Reflection)?;
    let v1alpha = reflection()
        .build_v1alpha()
        .map_err(ServeError::Reflection)?;
    reporter
        .set_service_status(name, tonic_health::ServingStatus::Serving)
        .await;
    let router = iri_spec::serve::builder()
        .add_service(health)
        .add_service(v1)
        .add_service(v1alpha);
    let router = match kind {
        // irikit's reservation extension shares the machine runtime's socket.
        RuntimeKind::Machine => router
            .add_service(
                MachineService {
                    core: handle.core.clone(),
                }
                .into_server(),
            )
            .add_service(handle.reservation_service().into_server()),
        RuntimeKind::Volume => router.add_service(
            VolumeService {
                core: handle.core.clone(),
            }
            .into_server(),
        ),
        RuntimeKind::Bucket => router.add_service(
            BucketService {
                core: handle.core.clone(),
            }
            .into_server(),
        ),
    };
    let core = handle.core.clone();
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener).map(
        move |s: io::Result<tokio::net::UnixStream>| {
            s.map(|s| MockConn::new(AnyAuthority::new(s, core.authority())))
        },
    );
    let core_shutdown = handle.core.shutdown.clone();
    let res = router
        .serve_with_incoming_shutdown(incoming, async move {
            shutdown.cancelled().await;
            // Release hanging (fault-injected) calls so graceful shutdown can finish.
            core_shutdown.cancel();
        })
        .await;
    res.map_err(ServeError::Serve)
}
