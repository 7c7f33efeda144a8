//! Dialling an Exec URL.

use std::time::Duration;

use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{self, client::IntoClientRequest as _, http::HeaderValue},
};

use crate::SUBPROTOCOL;

/// A console session from the client's side.
pub type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// Why a console could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The URL is not a WebSocket-able `http(s)://` or `ws(s)://` URL.
    #[error("invalid exec URL {0:?}")]
    BadUrl(String),
    /// The handshake did not finish in time.
    #[error("the console handshake timed out")]
    Timeout,
    /// The server refused the upgrade (its HTTP status and body).
    #[error("the console was refused: HTTP {status} {body}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// Response body, if any.
        body: String,
    },
    /// Any other WebSocket failure.
    #[error("opening the console: {0}")]
    WebSocket(String),
    /// The server answered another subprotocol.
    #[error("the console answered subprotocol {0:?}, want v5.channel.k8s.io")]
    Subprotocol(Option<String>),
}

/// Open the console at `url` (`http://` is dialled as `ws://`) with the v5 subprotocol.
///
/// # Errors
/// See [`Error`].
pub async fn connect(url: &str, timeout: Duration) -> Result<Ws, Error> {
    let ws_url = url
        .replacen("https://", "wss://", 1)
        .replacen("http://", "ws://", 1);
    let mut req = ws_url
        .into_client_request()
        .map_err(|_| Error::BadUrl(url.to_owned()))?;
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static(SUBPROTOCOL),
    );
    // Nagle off: console frames are small and interactive.
    let dial = tokio_tungstenite::connect_async_with_config(req, None, true);
    let (ws, resp) = match tokio::time::timeout(timeout, dial)
        .await
        .map_err(|_| Error::Timeout)?
    {
        Ok(pair) => pair,
        Err(tungstenite::Error::Http(resp)) => {
            return Err(Error::Refused {
                status: resp.status().as_u16(),
                body: resp
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default(),
            });
        }
        Err(e) => return Err(Error::WebSocket(e.to_string())),
    };
    let proto = resp
        .headers()
        .get("Sec-WebSocket-Protocol")
        .and_then(|v| v.to_str().ok());
    if proto != Some(SUBPROTOCOL) {
        return Err(Error::Subprotocol(proto.map(str::to_owned)));
    }
    Ok(ws)
}
