//! The machinepoollet's exec server against iri-mock's scripted console: the Machine's IRI
//! machine is found by the poollet's namespace and name labels, its Exec URL is dialled, and
//! the WebSocket stream is proxied both ways; failures are HTTP statuses before the upgrade.
//! The `machinepoollet` binary serves it with `--exec-listen`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use futures::{SinkExt as _, StreamExt as _};
use iri_exec::{CLOSE, ERROR, STDIN, STDOUT, client, frame};
use iri_mock::{MockRuntime, console::ConsoleServer, fixtures};
use iri_spec::keys;
use poollet::ExecServer;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

const TIMEOUT: Duration = Duration::from_secs(10);

fn exec_url(addr: std::net::SocketAddr, ns: &str, name: &str) -> String {
    format!("http://{addr}/apis/compute.ironcore.dev/namespaces/{ns}/machines/{name}/exec")
}

/// An IRI machine labelled as the poollet labels the Machine `ns/name`; its id.
async fn create(mock: &MockRuntime, ns: &str, name: &str) -> String {
    let mut m = fixtures::machine();
    let labels = &mut m.metadata.get_or_insert_with(Default::default).labels;
    labels.insert(keys::MACHINE_NAMESPACE_LABEL.into(), ns.into());
    labels.insert(keys::MACHINE_NAME_LABEL.into(), name.into());
    common::create_on_runtime(mock, m).await
}

/// An exec server on a loopback port for the mock's machines; its address and the token that
/// stops it.
async fn serve_exec(mock: &MockRuntime) -> (std::net::SocketAddr, CancellationToken) {
    let server = ExecServer::bind(
        "127.0.0.1:0".parse().unwrap(),
        mock.machine_channel(),
        TIMEOUT,
    )
    .await
    .unwrap();
    let addr = server.local_addr().unwrap();
    let token = CancellationToken::new();
    tokio::spawn(server.serve(token.clone()));
    (addr, token)
}

async fn next_stdout(ws: &mut client::Ws) -> Vec<u8> {
    loop {
        let msg = tokio::time::timeout(TIMEOUT, ws.next())
            .await
            .expect("a frame in time")
            .expect("stream open")
            .unwrap();
        if let Message::Binary(data) = msg
            && data.first() == Some(&STDOUT)
        {
            return data[1..].to_vec();
        }
    }
}

fn refused(res: Result<client::Ws, client::Error>) -> u16 {
    match res {
        Err(client::Error::Refused { status, .. }) => status,
        Err(other) => panic!("want an HTTP refusal, have {other:?}"),
        Ok(_) => panic!("want an HTTP refusal, the upgrade succeeded"),
    }
}

#[tokio::test]
async fn proxies_the_console_of_a_machine() {
    let mock = MockRuntime::builder()
        .console(ConsoleServer::start().await.unwrap())
        .start_in_process()
        .await
        .unwrap();
    let id = create(&mock, "default", "web-0").await;
    let (addr, token) = serve_exec(&mock).await;

    let url = exec_url(addr, "default", "web-0");
    let mut ws = client::connect(&url, TIMEOUT).await.unwrap();
    assert_eq!(
        next_stdout(&mut ws).await,
        iri_mock::console::banner(&id).into_bytes()
    );
    ws.send(frame(STDIN, b"through-the-poollet\r"))
        .await
        .unwrap();
    assert_eq!(next_stdout(&mut ws).await, b"through-the-poollet\r");

    // The machine's console is open: a second session is 409 (FailedPrecondition).
    assert_eq!(refused(client::connect(&url, TIMEOUT).await), 409);
    // No IRI machine with those labels: 404. Not an exec path: 404.
    assert_eq!(
        refused(client::connect(&exec_url(addr, "default", "nope"), TIMEOUT).await),
        404
    );
    assert_eq!(
        refused(client::connect(&format!("http://{addr}/exec/x"), TIMEOUT).await),
        404
    );

    // Closing stdin ends the session with the runtime's Success status, through the proxy.
    ws.send(Message::binary(vec![CLOSE, STDIN])).await.unwrap();
    let status = loop {
        let msg = tokio::time::timeout(TIMEOUT, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Message::Binary(data) = msg
            && data.first() == Some(&ERROR)
        {
            break data[1..].to_vec();
        }
    };
    assert!(iri_exec::status_is_success(&status));
    drop(ws);
    // The console is free again.
    common_eventually_opens(&url).await;
    token.cancel();
}

async fn common_eventually_opens(url: &str) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        match client::connect(url, TIMEOUT).await {
            Ok(ws) => {
                drop(ws);
                return;
            }
            Err(e) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "console stays busy: {e}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// A plain GET (no upgrade) is 400; a runtime whose Exec answers no URL is 501.
#[tokio::test]
async fn refuses_without_upgrade_and_without_console() {
    let mock = MockRuntime::builder().start_in_process().await.unwrap();
    create(&mock, "ns", "m").await;
    let (addr, _token) = serve_exec(&mock).await;
    assert_eq!(
        refused(client::connect(&exec_url(addr, "ns", "m"), TIMEOUT).await),
        501
    );
    // A raw HTTP/1.1 GET without the WebSocket headers.
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"GET /apis/compute.ironcore.dev/namespaces/ns/machines/m/exec HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).await.unwrap();
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
}

/// `--exec-listen 127.0.0.1:0`: the binary logs the address it serves exec on, and answers 404
/// for a machine its runtime does not have.
#[tokio::test]
async fn the_binary_serves_exec_with_the_flag() {
    let (_mock, endpoint) =
        common::unix_mock(MockRuntime::builder().console(ConsoleServer::start().await.unwrap()))
            .await;
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_machinepoollet"));
    cmd.args([
        "--machine-pool-name",
        "p",
        "--provider-id",
        "ironcore://p",
        "--machine-runtime-endpoint",
        &endpoint,
        "--exec-listen",
        "127.0.0.1:0",
        "--log-format",
        "json",
    ]);
    let (mut child, mut lines) = common::spawn_logging(cmd);
    let line = tokio::time::timeout(
        TIMEOUT,
        common::line_with(&mut lines, "serving machine exec"),
    )
    .await
    .expect("the exec address is logged")
    .expect("the poollet exited without serving exec");
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    let addr: std::net::SocketAddr = v["fields"]["addr"].as_str().unwrap().parse().unwrap();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    assert_eq!(
        refused(client::connect(&exec_url(addr, "default", "none"), TIMEOUT).await),
        404
    );
    child.kill().await.unwrap();
}
