//! The mock's scripted console through Exec: the remotecommand v5 stream over WebSocket, one
//! console per machine, single-use tokens, NotFound for an unknown machine.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use futures::{SinkExt as _, StreamExt as _};
mod common;

use common::Clients;
use iri_mock::{
    MockRuntime, MockRuntimeBuilder,
    console::{self, ConsoleServer},
    fixtures,
};
use iri_spec::machine::v1alpha1::{self as machine, machine_runtime_client::MachineRuntimeClient};
use tokio_tungstenite::tungstenite::{
    Message,
    client::IntoClientRequest as _,
    http::{HeaderValue, StatusCode},
};

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(url: &str) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let ws_url = url.replacen("http://", "ws://", 1);
    let mut req = ws_url.into_client_request().unwrap();
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static(console::SUBPROTOCOL),
    );
    let (ws, resp) = tokio_tungstenite::connect_async(req).await?;
    assert_eq!(
        resp.headers()["Sec-WebSocket-Protocol"],
        console::SUBPROTOCOL
    );
    Ok(ws)
}

/// The next frame's (channel, payload).
async fn next_frame(ws: &mut Ws) -> (u8, Vec<u8>) {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a frame in time")
            .expect("stream open")
            .unwrap();
        if let Message::Binary(data) = msg {
            return (data[0], data[1..].to_vec());
        }
    }
}

fn refused_with(err: tokio_tungstenite::tungstenite::Error) -> StatusCode {
    match err {
        tokio_tungstenite::tungstenite::Error::Http(resp) => resp.status(),
        other => panic!("want an HTTP refusal, have {other:?}"),
    }
}

type Client = MachineRuntimeClient<tonic::transport::Channel>;

/// Starts `builder`'s mock in process and creates a machine: the mock, a machine client, the
/// machine's id.
async fn with_machine(builder: MockRuntimeBuilder) -> (MockRuntime, Client, String) {
    let mock = builder.start_in_process().await.unwrap();
    let mut clients = Clients::new(&mock);
    let id = clients.create_machine(fixtures::machine()).await;
    (mock, clients.machine, id)
}

async fn exec(client: &mut Client, id: &str) -> Result<String, tonic::Status> {
    client
        .exec(machine::ExecRequest {
            machine_id: id.to_owned(),
        })
        .await
        .map(|r| r.into_inner().url)
}

#[tokio::test]
async fn scripted_console_through_exec() {
    let server = ConsoleServer::start().await.unwrap();
    let (_mock, mut client, id) =
        with_machine(MockRuntime::builder().console(server.clone())).await;

    // Unknown machine: NotFound.
    let status = exec(&mut client, "nope").await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);

    let url = exec(&mut client, &id).await.unwrap();
    assert!(
        url.starts_with(&format!("{}/exec/", server.base_url())),
        "{url}"
    );
    let mut ws = connect(&url).await.unwrap();
    assert_eq!(
        next_frame(&mut ws).await,
        (console::STDOUT, console::banner(&id).into_bytes())
    );
    // Bytes written reach the console and its output comes back.
    ws.send(Message::binary(b"\x00hello\r".to_vec()))
        .await
        .unwrap();
    assert_eq!(
        next_frame(&mut ws).await,
        (console::STDOUT, b"hello\r".to_vec())
    );
    // A resize is accepted without output; the next stdin still echoes.
    ws.send(Message::binary(
        b"\x04{\"Width\":80,\"Height\":24}".to_vec(),
    ))
    .await
    .unwrap();
    ws.send(Message::binary(b"\x00x".to_vec())).await.unwrap();
    assert_eq!(next_frame(&mut ws).await, (console::STDOUT, b"x".to_vec()));

    // One console per machine: a second Exec is FailedPrecondition.
    assert!(server.is_open(&id));
    let status = exec(&mut client, &id).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    // The token is single-use.
    assert_eq!(
        refused_with(connect(&url).await.unwrap_err()),
        StatusCode::NOT_FOUND
    );
    // A made-up token is refused too.
    let forged = format!("{}/exec/{:032x}", server.base_url(), 7);
    assert_eq!(
        refused_with(connect(&forged).await.unwrap_err()),
        StatusCode::NOT_FOUND
    );

    // v5: closing stdin ends the session with a Success status on the error channel.
    ws.send(Message::binary(vec![console::CLOSE, console::STDIN]))
        .await
        .unwrap();
    let (channel, status) = next_frame(&mut ws).await;
    assert_eq!(channel, console::ERROR);
    let status: serde_json::Value = serde_json::from_slice(&status).unwrap();
    assert_eq!(status["status"], "Success");
    drop(ws);

    // The console is free again.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while server.is_open(&id) {
        assert!(std::time::Instant::now() < deadline, "console not released");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let url2 = exec(&mut client, &id).await.unwrap();
    assert_ne!(url2, url);
    let mut ws = connect(&url2).await.unwrap();
    assert_eq!(next_frame(&mut ws).await.0, console::STDOUT);
}

#[tokio::test]
async fn console_requires_the_v5_subprotocol() {
    let server = ConsoleServer::start().await.unwrap();
    let url = server.issue("m").unwrap();
    let ws_url = url.replacen("http://", "ws://", 1);
    let err = tokio_tungstenite::connect_async(ws_url).await.unwrap_err();
    assert_eq!(refused_with(err), StatusCode::BAD_REQUEST);
    // The refused handshake did not use up the token.
    let mut ws = connect(&url).await.unwrap();
    assert_eq!(next_frame(&mut ws).await.0, console::STDOUT);
}

/// Each console mutant breaks exactly the rule its conformance case checks.
#[tokio::test]
async fn console_mutants_change_the_console() {
    async fn setup(mutant: iri_mock::Mutant) -> (MockRuntime, Client, String) {
        let console = ConsoleServer::start().await.unwrap();
        with_machine(MockRuntime::builder().console(console).mutant(mutant)).await
    }
    use iri_mock::Mutant;

    let (_mock, mut client, id) = setup(Mutant::ConsoleUrlNotServed).await;
    let url = exec(&mut client, &id).await.unwrap();
    assert_eq!(
        refused_with(connect(&url).await.unwrap_err()),
        StatusCode::NOT_FOUND
    );

    let (_mock, mut client, id) = setup(Mutant::ConsoleNoEcho).await;
    let mut ws = connect(&exec(&mut client, &id).await.unwrap())
        .await
        .unwrap();
    assert_eq!(next_frame(&mut ws).await.0, console::STDOUT);
    ws.send(Message::binary(b"\x00hello".to_vec()))
        .await
        .unwrap();
    ws.send(Message::binary(vec![console::CLOSE, console::STDIN]))
        .await
        .unwrap();
    assert_eq!(
        next_frame(&mut ws).await.0,
        console::ERROR,
        "stdin was echoed"
    );

    let (_mock, mut client, id) = setup(Mutant::ConsoleSecondAllowed).await;
    let _ws = connect(&exec(&mut client, &id).await.unwrap())
        .await
        .unwrap();
    assert!(exec(&mut client, &id).await.is_ok());

    let (_mock, mut client, id) = setup(Mutant::ConsoleTokenReusable).await;
    let url = exec(&mut client, &id).await.unwrap();
    drop(connect(&url).await.unwrap());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if connect(&url).await.is_ok() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "token not reusable");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
