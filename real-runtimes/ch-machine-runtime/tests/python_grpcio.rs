//! A stock Python grpcio client (≥ 1.57: the percent-encoded socket path as `:authority`; and
//! the raw path, as grpc-java sends it) against `ch-machine-runtime` on `ch-sim` and the
//! file-volume-runtime of the same stack (issue 13).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "../../../iri-spec/clients/grpcio.rs"]
mod grpcio;

use common::{Backend, Runtimes, Vmm};
use iri_spec::endpoint::Endpoint;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_calls_the_machine_runtime_on_ch_sim() {
    if !grpcio::available() {
        return;
    }
    let runtimes = Runtimes::start(Vmm::CloudHypervisor(Backend::Sim), &[])
        .await
        .expect("ch-sim stack");
    let (Endpoint::Unix(machine), Endpoint::Unix(volume)) =
        (runtimes.machine.clone(), runtimes.volume.clone())
    else {
        panic!("unix endpoints expected");
    };
    tokio::task::spawn_blocking(move || {
        grpcio::assert_serves(env!("CARGO_MANIFEST_DIR"), &machine, "machine");
        grpcio::assert_serves(env!("CARGO_MANIFEST_DIR"), &volume, "volume");
    })
    .await
    .unwrap();
    drop(runtimes);
}
