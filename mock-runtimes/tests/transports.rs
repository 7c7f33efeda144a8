//! Transports: 200 in-process mocks in parallel, unix sockets (mode 0600, removed on drop), TCP,
//! many connections per mock, and graceful shutdown.
#![allow(clippy::unwrap_used)]

mod common;

use std::{
    os::unix::fs::{FileTypeExt, PermissionsExt},
    time::Duration,
};

use common::{Clients, start};
use iri_mock::{Method, MockRuntime, fixtures};
use iri_spec::machine::v1alpha1 as machine;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_mocks_in_parallel_do_not_interfere() {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200usize {
        tasks.spawn(async move {
            let (mock, mut c) = start(MockRuntime::builder()).await;
            let n = 1 + i % 3;
            let label = format!("mock-{i}");
            for _ in 0..n {
                c.create_machine(fixtures::machine_with_labels(&[("owner", &label)]))
                    .await;
            }
            let listed = c.list_machines().await;
            assert_eq!(listed.len(), n, "mock {i} sees only its own machines");
            assert!(
                listed
                    .iter()
                    .all(|m| m.metadata.as_ref().unwrap().labels["owner"] == label)
            );
            mock.assert_called(Method::CreateMachine, n);
            mock.shutdown().await.unwrap();
            n
        });
    }
    let mut total = 0;
    while let Some(res) = tasks.join_next().await {
        total += res.unwrap();
    }
    assert_eq!(total, (0..200).map(|i| 1 + i % 3).sum::<usize>());
}

#[tokio::test]
async fn unix_socket_is_private_and_removed() {
    let mock = MockRuntime::builder().start_unix_temp().await.unwrap();
    let Some(iri_spec::endpoint::Endpoint::Unix(path)) = mock.endpoint() else {
        panic!("unix endpoint expected");
    };
    let meta = std::fs::metadata(&path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let mut c = Clients::new(&mock);
    c.create_machine(fixtures::machine()).await;
    // An independent client over iri-spec's connect reaches the same mock.
    let channel = iri_spec::endpoint::connect(mock.endpoint().as_ref().unwrap())
        .await
        .unwrap();
    let mut other = machine::machine_runtime_client::MachineRuntimeClient::new(channel);
    let listed = other
        .list_machines(machine::ListMachinesRequest::default())
        .await
        .unwrap();
    assert_eq!(listed.into_inner().machines.len(), 1);
    drop(mock);
    assert!(!path.exists(), "socket removed on drop");
}

#[tokio::test]
async fn unix_socket_at_a_given_path_replaces_a_stale_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.sock");
    let first = MockRuntime::builder().start_unix(&path).await.unwrap();
    assert!(path.exists());
    // Simulate a crash: leave a socket file behind.
    let stale = std::os::unix::net::UnixListener::bind(dir.path().join("stale.sock")).unwrap();
    drop(stale);
    let second = MockRuntime::builder()
        .start_unix(dir.path().join("stale.sock"))
        .await
        .unwrap();
    let mut c = Clients::new(&second);
    c.create_machine(fixtures::machine()).await;
    second.shutdown().await.unwrap();
    drop(first);
}

#[tokio::test]
async fn tcp_on_loopback() {
    let mock = MockRuntime::builder().start_tcp().await.unwrap();
    let endpoint = mock.endpoint().unwrap();
    assert!(endpoint.to_string().starts_with("tcp://127.0.0.1:"));
    let mut c = Clients::new(&mock);
    c.create_machine(fixtures::machine()).await;
    assert_eq!(c.list_machines().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_connections_to_one_mock() {
    let mock = MockRuntime::builder().start_in_process().await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let channel = mock.new_channel();
        tasks.spawn(async move {
            let mut client = machine::machine_runtime_client::MachineRuntimeClient::new(channel);
            for _ in 0..4 {
                client
                    .create_machine(machine::CreateMachineRequest {
                        machine: Some(fixtures::machine()),
                    })
                    .await
                    .unwrap();
            }
        });
    }
    while let Some(res) = tasks.join_next().await {
        res.unwrap();
    }
    assert_eq!(mock.machine_count(), 200);
    let ids: std::collections::HashSet<_> = mock
        .machines()
        .into_iter()
        .map(|m| m.metadata.unwrap().id)
        .collect();
    assert_eq!(ids.len(), 200, "ids are unique under concurrency");
}

#[tokio::test]
async fn shutdown_is_graceful_and_refuses_new_calls() {
    let mock = MockRuntime::builder().start_in_process().await.unwrap();
    let channel = mock.new_channel();
    let mut c = Clients::new(&mock);
    c.create_machine(fixtures::machine()).await;
    mock.shutdown().await.unwrap();
    let mut client = machine::machine_runtime_client::MachineRuntimeClient::new(channel);
    let err = client
        .list_machines(machine::ListMachinesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
}

#[tokio::test]
async fn services_can_be_served_on_a_transport_of_ones_own() {
    let handle = MockRuntime::builder().build();
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let server = tonic::transport::Server::builder()
        .add_service(handle.machine_service().into_server())
        .serve_with_incoming(tokio_stream::once(Ok::<_, std::io::Error>(server_io)));
    tokio::spawn(server);
    let mut client_io = Some(client_io);
    let channel = tonic::transport::Endpoint::from_static("http://x")
        .connect_with_connector(tower::service_fn(move |_| {
            let io = client_io.take();
            async move {
                io.map(hyper_util::rt::TokioIo::new)
                    .ok_or_else(|| std::io::Error::other("one connection only"))
            }
        }))
        .await
        .unwrap();
    let mut client = machine::machine_runtime_client::MachineRuntimeClient::new(channel);
    client
        .create_machine(machine::CreateMachineRequest {
            machine: Some(fixtures::machine()),
        })
        .await
        .unwrap();
    assert_eq!(handle.machine_count(), 1);
}

/// Issue 13: on a unix socket every `:authority` form is served, a malformed header block gets
/// h2's connection error (GOAWAY), and TCP keeps h2's strict authority check.
#[tokio::test]
async fn any_authority_on_unix_strict_on_tcp_and_goaway_for_garbage() {
    use iri_spec::serve::probe::{self, ProbeAnswer};
    const VERSION: &str = "/machine.v1alpha1.MachineRuntime/Version";
    let t = Duration::from_secs(10);
    let mock = MockRuntime::builder().start_unix_temp().await.unwrap();
    let Some(iri_spec::endpoint::Endpoint::Unix(path)) = mock.endpoint() else {
        panic!("unix endpoint expected");
    };
    let raw = path.display().to_string();
    let encoded = raw.trim_start_matches('/').replace('/', "%2F");
    for authority in [
        Some("localhost".as_bytes()),
        Some(encoded.as_bytes()),
        Some(raw.as_bytes()),
        Some(b"".as_slice()),
        None,
    ] {
        let io = tokio::net::UnixStream::connect(&path).await.unwrap();
        let answer = probe::call(io, VERSION, authority, &[], t).await.unwrap();
        assert!(
            matches!(
                answer,
                ProbeAnswer::Answered {
                    grpc_status: Some(0),
                    ..
                }
            ),
            "{authority:?}: {answer:?}"
        );
    }
    // An undecodable header block (a string longer than the block): a connection error.
    let io = tokio::net::UnixStream::connect(&path).await.unwrap();
    let answer = probe::call_with_block(io, &[0x83, 0x00, 0x7f], &[], t)
        .await
        .unwrap();
    assert!(matches!(answer, ProbeAnswer::GoAway(_)), "{answer:?}");
    // The server still serves new connections.
    let io = tokio::net::UnixStream::connect(&path).await.unwrap();
    let answer = probe::call(io, VERSION, Some(raw.as_bytes()), &[], t)
        .await
        .unwrap();
    assert!(matches!(
        answer,
        ProbeAnswer::Answered {
            grpc_status: Some(0),
            ..
        }
    ));

    let tcp = MockRuntime::builder().start_tcp().await.unwrap();
    let Some(iri_spec::endpoint::Endpoint::Tcp { host, port }) = tcp.endpoint() else {
        panic!("tcp endpoint expected");
    };
    let io = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .unwrap();
    let answer = probe::call(io, VERSION, Some(raw.as_bytes()), &[], t)
        .await
        .unwrap();
    assert_eq!(
        answer,
        ProbeAnswer::StreamReset(1),
        "TCP keeps h2's strict check"
    );
}
