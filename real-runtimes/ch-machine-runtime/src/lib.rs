//! Cloud Hypervisor machine runtime for the IronCore Runtime Interface (IRI).
//!
//! One `cloud-hypervisor` process per machine, driven over its REST API by a small private
//! client behind the [`vmm::Vmm`] trait (so a second backend can replace CH), state in one
//! JSON file per machine ([`store`]), reconcile workers in [`runtime`], the gRPC surface in
//! [`server`] (with irikit's reservation extension on the same socket), and [`sim`], the CH
//! API simulator shipped as the `ch-sim` binary.

pub mod config;
pub mod console;
#[path = "../../shared/events.rs"]
mod events;
#[path = "../../shared/private_file.rs"]
mod private_file;
#[path = "../../shared/qcow2.rs"]
mod qcow2;
pub mod runtime;
pub mod server;
pub mod sim;
pub mod store;
pub mod validate;
pub mod vmm;

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use iri_spec::{
    irikit::reservation::v1alpha1::reservation_runtime_server::ReservationRuntimeServer,
    machine::v1alpha1::machine_runtime_server::MachineRuntimeServer,
};
use tokio_util::sync::CancellationToken;

/// Run the runtime on `socket` until `token` is cancelled, then shut down as configured
/// (VMs keep running unless `stop_vms_on_exit`).
pub async fn serve(
    cfg: config::Config,
    vmm: Arc<dyn vmm::Vmm>,
    socket: std::path::PathBuf,
    token: CancellationToken,
) -> anyhow::Result<()> {
    if let Some(parent) = socket.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
    }
    let listener = iri_spec::serve::bind_unix(&socket)?;
    let runtime = runtime::Runtime::start(cfg, vmm, token.child_token())
        .await
        .context("start runtime")?;
    tracing::info!(
        socket = %socket.display(),
        vmm = runtime.vmm_name(),
        console = runtime.console_base_url(),
        "serving MachineRuntime"
    );
    // Any :authority a gRPC client stack sends on a unix socket is accepted (issue 13).
    let incoming = iri_spec::serve::incoming(listener, iri_spec::serve::AuthorityPolicy::Any);
    let res = iri_spec::serve::builder()
        .add_service(MachineRuntimeServer::new(server::MachineService::new(
            runtime.clone(),
        )))
        .add_service(ReservationRuntimeServer::new(
            server::ReservationService::new(runtime.clone()),
        ))
        .serve_with_incoming_shutdown(incoming, token.cancelled())
        .await
        .context("serve grpc");
    runtime.shutdown(Duration::from_secs(30)).await;
    let _ = std::fs::remove_file(&socket);
    res
}
