//! gRPC client stacks of other languages against the `file-volume-runtime` binary (issue 13): a
//! stock Python grpcio (≥ 1.57: the percent-encoded socket path as `:authority`; and the raw
//! path, as grpc-java sends it) and Debian's grpc-go 1.33.3 (the raw path).
#![allow(clippy::unwrap_used)]

mod common;
#[path = "../../../iri-spec/clients/grpc_go.rs"]
mod grpc_go;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_go_calls_the_volume_runtime() {
    let Some(bin) = grpc_go::available(env!("CARGO_MANIFEST_DIR")) else {
        return;
    };
    let rt = common::Runtime::start().await;
    let socket = rt.socket.clone();
    tokio::task::spawn_blocking(move || grpc_go::assert_serves(&bin, &socket, "volume"))
        .await
        .unwrap();
    drop(rt);
}
