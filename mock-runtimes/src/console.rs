//! A scripted serial console served the way IronCore's Exec URLs are: the Kubernetes
//! remotecommand streaming protocol over WebSocket, subprotocol `v5.channel.k8s.io`.
//!
//! Every binary frame starts with a channel byte: 0 stdin, 1 stdout, 2 stderr, 3 error (a
//! `metav1.Status` JSON when the session ends), 4 resize (`{"Width":…,"Height":…}`); v5 adds
//! `[255, channel]`, closing that channel (the client's end of stdin). The WebSocket framing is
//! tokio-tungstenite's.
//!
//! [`ConsoleServer::start`] binds loopback TCP; [`ConsoleServer::issue`] mints the URL Exec
//! answers, `<base-url>/exec/<token>`: a token works once and expires after
//! [`TOKEN_TTL`], and a machine has at most one console at a time (a second Exec while one
//! is open is FailedPrecondition). The console prints a banner on stdout, then echoes every
//! stdin byte back on stdout; closing stdin ends the session with a `Success` status.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::{SinkExt as _, StreamExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::{
    Message,
    handshake::server::{ErrorResponse, Request, Response},
    http::{HeaderValue, StatusCode},
};
use tonic::Status;

/// The WebSocket subprotocol of the remotecommand stream (KEP-4006).
pub const SUBPROTOCOL: &str = "v5.channel.k8s.io";
/// How long an issued, unused Exec URL stays valid.
pub const TOKEN_TTL: Duration = Duration::from_secs(60);
/// Channel bytes.
pub const STDIN: u8 = 0;
/// Channel bytes.
pub const STDOUT: u8 = 1;
/// The error channel: the session's final `metav1.Status`.
pub const ERROR: u8 = 3;
/// The resize channel.
pub const RESIZE: u8 = 4;
/// v5's close-channel prefix.
pub const CLOSE: u8 = 255;

/// The banner the scripted console prints first.
#[must_use]
pub fn banner(machine_id: &str) -> String {
    format!("iri-mock console of machine {machine_id}\r\n")
}

/// Deliberate contract violations of the console (the mock's console mutants).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Violations {
    /// The URL's path is one nothing serves.
    pub url_not_served: bool,
    /// Stdin is dropped instead of echoed.
    pub no_echo: bool,
    /// A second console of the same machine is allowed.
    pub second_allowed: bool,
    /// The token stays valid after use.
    pub token_reusable: bool,
}

#[derive(Default)]
struct State {
    /// token → (machine id, issued at, violations).
    tokens: HashMap<String, (String, Instant, Violations)>,
    /// Machines with an open console.
    open: HashSet<String>,
}

/// The console endpoint; cheap to clone.
#[derive(Clone)]
pub struct ConsoleServer {
    base_url: String,
    state: Arc<Mutex<State>>,
    /// The bound listener until the accept loop takes it (at [`Self::start`] or the first
    /// [`Self::issue`] inside a tokio runtime).
    unserved: Arc<Mutex<Option<std::net::TcpListener>>>,
}

impl std::fmt::Debug for ConsoleServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleServer")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl ConsoleServer {
    /// Bind `127.0.0.1:0` and serve consoles until the runtime exits.
    ///
    /// # Errors
    /// The bind fails.
    pub async fn start() -> std::io::Result<Self> {
        let server = Self::bind()?;
        server.serve();
        Ok(server)
    }

    /// Bind `127.0.0.1:0` without a runtime; consoles are served from the first
    /// [`Self::issue`] on (which runs inside one).
    ///
    /// # Errors
    /// The bind fails.
    pub fn bind() -> std::io::Result<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        Ok(Self {
            base_url: format!("http://{}", listener.local_addr()?),
            state: Arc::default(),
            unserved: Arc::new(Mutex::new(Some(listener))),
        })
    }

    /// Start the accept loop once (needs a tokio runtime; without one, nothing happens).
    fn serve(&self) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let Some(std_listener) = self
            .unserved
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        else {
            return;
        };
        let accept = self.clone();
        handle.spawn(async move {
            let Ok(listener) = TcpListener::from_std(std_listener) else {
                return;
            };
            while let Ok((stream, _)) = listener.accept().await {
                let server = accept.clone();
                tokio::spawn(async move { server.session(stream).await });
            }
        });
    }

    /// `http://127.0.0.1:<port>`.
    #[must_use]
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The URL Exec answers for `machine_id`, or FailedPrecondition while its console is open.
    ///
    /// # Errors
    /// A console of that machine is open.
    pub fn issue(&self, machine_id: &str) -> Result<String, Status> {
        self.issue_with(machine_id, Violations::default())
    }

    /// [`Self::issue`] with deliberate violations (mutants).
    ///
    /// # Errors
    /// A console of that machine is open (unless `violations.second_allowed`).
    pub fn issue_with(&self, machine_id: &str, violations: Violations) -> Result<String, Status> {
        self.serve();
        let mut st = lock(&self.state);
        if st.open.contains(machine_id) && !violations.second_allowed {
            return Err(Status::failed_precondition(format!(
                "machine {machine_id:?} already has an open console"
            )));
        }
        st.tokens
            .retain(|_, (_, issued, _)| issued.elapsed() < TOKEN_TTL);
        let token = format!("{:032x}", rand::random::<u128>());
        st.tokens.insert(
            token.clone(),
            (machine_id.to_owned(), Instant::now(), violations),
        );
        let path = if violations.url_not_served {
            "nothing"
        } else {
            "exec"
        };
        Ok(format!("{}/{path}/{token}", self.base_url))
    }

    /// Whether `machine_id` has an open console.
    #[must_use]
    pub fn is_open(&self, machine_id: &str) -> bool {
        lock(&self.state).open.contains(machine_id)
    }

    /// Take the token in `path` (once) and open the machine's console.
    fn claim(&self, path: &str) -> Result<(String, Violations), (StatusCode, String)> {
        let token = path
            .strip_prefix("/exec/")
            .ok_or((StatusCode::NOT_FOUND, "not an exec URL".to_owned()))?;
        let mut st = lock(&self.state);
        let (machine_id, issued, violations) = st.tokens.remove(token).ok_or((
            StatusCode::NOT_FOUND,
            "unknown or already used exec token".to_owned(),
        ))?;
        if issued.elapsed() >= TOKEN_TTL {
            return Err((StatusCode::GONE, "exec token expired".to_owned()));
        }
        if violations.token_reusable {
            st.tokens.insert(
                token.to_owned(),
                (machine_id.clone(), Instant::now(), violations),
            );
        }
        if !st.open.insert(machine_id.clone()) && !violations.second_allowed {
            return Err((
                StatusCode::CONFLICT,
                format!("machine {machine_id:?} already has an open console"),
            ));
        }
        Ok((machine_id, violations))
    }

    async fn session(&self, stream: TcpStream) {
        let mut claimed = None;
        // The callback's types are tungstenite's.
        #[allow(clippy::result_large_err)]
        let callback = |req: &Request, mut resp: Response| -> Result<Response, ErrorResponse> {
            let offered = req
                .headers()
                .get_all("Sec-WebSocket-Protocol")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .any(|p| p.trim() == SUBPROTOCOL);
            let refuse = |code: StatusCode, message: String| {
                let mut r = ErrorResponse::new(Some(message));
                *r.status_mut() = code;
                r
            };
            if !offered {
                return Err(refuse(
                    StatusCode::BAD_REQUEST,
                    format!("subprotocol {SUBPROTOCOL} required"),
                ));
            }
            let claim = self
                .claim(req.uri().path())
                .map_err(|(code, message)| refuse(code, message))?;
            claimed = Some(claim);
            resp.headers_mut().insert(
                "Sec-WebSocket-Protocol",
                HeaderValue::from_static(SUBPROTOCOL),
            );
            Ok(resp)
        };
        let ws = tokio_tungstenite::accept_hdr_async(stream, callback).await;
        let Some((machine_id, violations)) = claimed else {
            return;
        };
        if let Ok(ws) = ws {
            Self::scripted(ws, &machine_id, violations.no_echo).await;
        }
        lock(&self.state).open.remove(&machine_id);
    }

    /// The scripted console: banner, then echo stdin until the client closes it.
    async fn scripted(
        mut ws: tokio_tungstenite::WebSocketStream<TcpStream>,
        machine_id: &str,
        no_echo: bool,
    ) {
        let frame = |channel: u8, data: &[u8]| {
            let mut v = Vec::with_capacity(data.len() + 1);
            v.push(channel);
            v.extend_from_slice(data);
            Message::binary(v)
        };
        if ws
            .send(frame(STDOUT, banner(machine_id).as_bytes()))
            .await
            .is_err()
        {
            return;
        }
        while let Some(Ok(msg)) = ws.next().await {
            let data = match msg {
                Message::Binary(data) => data,
                Message::Close(_) => return,
                _ => continue,
            };
            match data.first() {
                // Echo stdin on stdout.
                Some(&STDIN) if !no_echo && ws.send(frame(STDOUT, &data[1..])).await.is_err() => {
                    return;
                }
                Some(&CLOSE) if data.get(1) == Some(&STDIN) => break,
                // Resize and anything else: nothing to do for a scripted console.
                _ => {}
            }
        }
        let status = br#"{"metadata":{},"status":"Success"}"#;
        let _ = ws.send(frame(ERROR, status)).await;
        let _ = ws.close(None).await;
    }
}
