//! A stock Python grpcio client (≥ 1.57: the percent-encoded socket path as `:authority`; and
//! the raw path, as grpc-java sends it) against the `file-volume-runtime` binary (issue 13).
#![allow(clippy::unwrap_used)]

mod common;
#[path = "../../../iri-spec/clients/grpcio.rs"]
mod grpcio;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_calls_the_volume_runtime() {
    if !grpcio::available() {
        return;
    }
    let rt = common::Runtime::start().await;
    let socket = rt.socket.clone();
    tokio::task::spawn_blocking(move || {
        grpcio::assert_serves(env!("CARGO_MANIFEST_DIR"), &socket, "volume");
    })
    .await
    .unwrap();
    drop(rt);
}
