//! `machine-broker`: an IRI `MachineRuntime` whose machines are Machines of a lower irikit
//! control plane, as IronCore's machinebroker is one whose machines are Machines of a lower
//! IronCore cluster (reference §2.1 "machinebroker", §1.2: the IRI id is the lower object's
//! name). The lower plane has its own Store (memory or etcd), scheduler, poollets and runtimes,
//! and can itself be a broker: a pool of the upper plane whose runtime is a broker stands for
//! a whole lower cluster.
//!
//! - [`broker::Broker`]: every IRI call as reads and writes of lower objects in one namespace
//!   ([`convert`] holds the pure mapping), `Status` = the classes and summed capacity of the
//!   lower pools a selector picks, events forwarded from the lower Events of its Machines.
//! - irikit's reservation extension (IEP-11, `irikit.reservation.v1alpha1`): a reservation is
//!   passed one level down as a lower api `Reservation` asking every selected pool; its IRI
//!   state is the lower pools' answers folded (any Bound → BOUND, any Accepted → ACCEPTED,
//!   every candidate Rejected → REJECTED, else PENDING). A CreateMachine naming a
//!   reservation makes a lower Machine annotated `reservation.irikit.dev/name`, which the
//!   lower scheduler (reservation mode) places on a pool that accepted.
//! - [`server::BrokerService`] serves both; [`serve`] binds it on a unix socket (0600) with
//!   `iri_spec::serve`.
//! - [`plane`]: an embedded lower plane over `iri-mock` leaves, and [`plane::Hierarchy`], the
//!   two-level hierarchy (upper plane → brokers → leaf pools) the acceptance test and
//!   `reservation-bench` run.

pub mod broker;
pub mod convert;
pub mod error;
pub mod plane;
pub mod server;
pub mod workload;

use std::path::Path;

use anyhow::Context as _;
use iri_spec::{
    irikit::reservation::v1alpha1::reservation_runtime_server::ReservationRuntimeServer,
    machine::v1alpha1::machine_runtime_server::MachineRuntimeServer,
};
use tokio_util::sync::CancellationToken;

pub use broker::{Broker, BrokerConfig};
pub use error::{Error, Result};
pub use server::BrokerService;

/// Serves `broker` on the unix socket `socket` (mode 0600, a stale socket replaced, a live one
/// refused) until `token` is cancelled; removes the socket afterwards.
pub async fn serve(broker: Broker, socket: &Path, token: CancellationToken) -> anyhow::Result<()> {
    let listener = bind(socket)?;
    serve_on(broker, listener, socket, token).await
}

/// Binds the broker's unix socket (see [`serve`]), creating its directory.
pub fn bind(socket: &Path) -> anyhow::Result<tokio::net::UnixListener> {
    if let Some(parent) = socket.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
    }
    Ok(iri_spec::serve::bind_unix(socket)?)
}

/// Serves `broker` on a listener from [`bind`] until `token` is cancelled; removes `socket`
/// afterwards.
pub async fn serve_on(
    broker: Broker,
    listener: tokio::net::UnixListener,
    socket: &Path,
    token: CancellationToken,
) -> anyhow::Result<()> {
    tracing::info!(socket = %socket.display(), namespace = %broker.config().namespace, "serving the machine broker");
    // Any :authority a gRPC client stack sends on a unix socket is accepted (issue 13).
    let incoming = iri_spec::serve::incoming(listener, iri_spec::serve::AuthorityPolicy::Any);
    let service = BrokerService::new(broker);
    let res = iri_spec::serve::builder()
        .add_service(MachineRuntimeServer::new(service.clone()))
        .add_service(ReservationRuntimeServer::new(service))
        .serve_with_incoming_shutdown(incoming, token.cancelled())
        .await
        .context("serve grpc");
    let _ = std::fs::remove_file(socket);
    res
}
