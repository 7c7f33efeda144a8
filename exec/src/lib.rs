//! IronCore's Exec console protocol, shared by every irikit part that serves, dials or proxies
//! an Exec URL: the Kubernetes remotecommand streaming protocol over WebSocket, subprotocol
//! `v5.channel.k8s.io` (KEP-4006), with tokio-tungstenite's framing.
//!
//! Every binary frame starts with a channel byte: 0 stdin, 1 stdout, 2 stderr, 3 error (a
//! `metav1.Status` JSON when the session ends), 4 resize (`{"Width":…,"Height":…}`); v5 adds
//! `[255, channel]`, closing that channel (the client's end of stdin).
//!
//! - [`server::ConsoleServer`] serves `<base-url>/exec/<one-time token>` on TCP and bridges each
//!   session to a console backend (an [`server::Opener`]: the mock's scripted console, a VM's
//!   serial port).
//! - [`client::connect`] opens an Exec URL (irictl, the conformance suite, the poollet proxy).
//! - [`bridge`] copies frames both ways between two WebSocket streams (the machinepoollet's exec
//!   proxy).

pub mod client;
pub mod server;

use futures::{SinkExt as _, StreamExt as _};
use tokio_tungstenite::{WebSocketStream, tungstenite::Message};

/// The WebSocket subprotocol of the remotecommand stream (KEP-4006).
pub const SUBPROTOCOL: &str = "v5.channel.k8s.io";
/// Channel byte: the console's input.
pub const STDIN: u8 = 0;
/// Channel byte: the console's output.
pub const STDOUT: u8 = 1;
/// Channel byte: the console's error output.
pub const STDERR: u8 = 2;
/// The error channel: the session's final `metav1.Status`.
pub const ERROR: u8 = 3;
/// The resize channel.
pub const RESIZE: u8 = 4;
/// v5's close-channel prefix.
pub const CLOSE: u8 = 255;

/// A binary frame on `channel`.
#[must_use]
pub fn frame(channel: u8, data: &[u8]) -> Message {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(channel);
    v.extend_from_slice(data);
    Message::binary(v)
}

/// The `metav1.Status` that ends a successful session.
pub const STATUS_SUCCESS: &str = r#"{"metadata":{},"status":"Success"}"#;

/// A `metav1.Status` failure with `reason` (`NotFound`, `InternalError`, …) and HTTP `code`.
#[must_use]
pub fn status_failure(reason: &str, code: u16, message: &str) -> String {
    let escaped: String = message
        .chars()
        .flat_map(|c| match c {
            '"' => vec!['\\', '"'],
            '\\' => vec!['\\', '\\'],
            c if c.is_control() => vec![' '],
            c => vec![c],
        })
        .collect();
    format!(
        r#"{{"kind":"Status","apiVersion":"v1","metadata":{{}},"status":"Failure","message":"{escaped}","reason":"{reason}","code":{code}}}"#
    )
}

/// Whether an error-channel payload reports success.
#[must_use]
pub fn status_is_success(payload: &[u8]) -> bool {
    let text = String::from_utf8_lossy(payload);
    text.contains(r#""status":"Success""#)
}

/// Passes one frame read from one side on to the other side `tx`: data frames and the close
/// frame; false once the session is over (a close frame, the end of the stream, an error).
async fn forward<S>(
    m: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    tx: &mut S,
) -> bool
where
    S: futures::Sink<Message> + Unpin,
{
    match m {
        Some(Ok(Message::Close(c))) => {
            let _ = tx.send(Message::Close(c)).await;
            false
        }
        Some(Ok(m @ (Message::Binary(_) | Message::Text(_)))) => tx.send(m).await.is_ok(),
        Some(Ok(_)) => true,
        Some(Err(_)) | None => false,
    }
}

/// Copy every frame between `a` and `b` (both directions) until either side closes or fails;
/// then close both. What the machinepoollet's exec proxy runs per session.
pub async fn bridge<A, B>(a: WebSocketStream<A>, b: WebSocketStream<B>)
where
    A: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    B: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut a_tx, mut a_rx) = a.split();
    let (mut b_tx, mut b_rx) = b.split();
    loop {
        let go_on = tokio::select! {
            m = a_rx.next() => forward(m, &mut b_tx).await,
            m = b_rx.next() => forward(m, &mut a_tx).await,
        };
        if !go_on {
            break;
        }
    }
    let _ = a_tx.close().await;
    let _ = b_tx.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_status_is_json_escaped() {
        let s = status_failure("NotFound", 404, "machine \"x\"\n");
        assert!(s.contains(r#""message":"machine \"x\" ""#), "{s}");
        assert!(!status_is_success(s.as_bytes()));
        assert!(status_is_success(STATUS_SUCCESS.as_bytes()));
    }
}
