//! gRPC client stacks of other languages against `ch-machine-runtime` on `ch-sim` and the
//! file-volume-runtime of the same stack (issue 13): a stock Python grpcio (≥ 1.57: the
//! percent-encoded socket path as `:authority`; and the raw path, as grpc-java sends it) and
//! Debian's grpc-go 1.33.3 (the raw path).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "../../../iri-spec/clients/grpc_go.rs"]
mod grpc_go;
#[path = "../../../iri-spec/clients/grpcio.rs"]
mod grpcio;

use std::path::Path;

use common::{Backend, Runtimes, Vmm};
use iri_spec::endpoint::Endpoint;

/// A ch-sim stack; `call` gets the machine and the volume runtime's sockets (on a blocking
/// thread: the clients are child processes driven synchronously).
async fn on_ch_sim(call: impl FnOnce(&Path, &Path) + Send + 'static) {
    let runtimes = Runtimes::start(Vmm::CloudHypervisor(Backend::Sim), &[])
        .await
        .expect("ch-sim stack");
    let (Endpoint::Unix(machine), Endpoint::Unix(volume)) =
        (runtimes.machine.clone(), runtimes.volume.clone())
    else {
        panic!("unix endpoints expected");
    };
    tokio::task::spawn_blocking(move || call(&machine, &volume))
        .await
        .unwrap();
    drop(runtimes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_calls_the_machine_runtime_on_ch_sim() {
    if !grpcio::available() {
        return;
    }
    on_ch_sim(|machine, volume| {
        grpcio::assert_serves(env!("CARGO_MANIFEST_DIR"), machine, "machine");
        grpcio::assert_serves(env!("CARGO_MANIFEST_DIR"), volume, "volume");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_go_calls_the_machine_runtime_on_ch_sim() {
    let Some(bin) = grpc_go::available(env!("CARGO_MANIFEST_DIR")) else {
        return;
    };
    on_ch_sim(move |machine, volume| {
        grpc_go::assert_serves(&bin, machine, "machine");
        grpc_go::assert_serves(&bin, volume, "volume");
    })
    .await;
}
