//! The console endpoint behind Exec URLs.
//!
//! [`ConsoleServer::bind`] listens on TCP (loopback by default); [`ConsoleServer::issue`] mints
//! the URL Exec answers, `<base-url>/exec/<token>`: a token works once and expires after
//! [`TOKEN_TTL`], and a machine has at most one console at a time (a second Exec while one is
//! open is FailedPrecondition, a second connection CONFLICT). A session is bridged to what the
//! [`Opener`] returns for the machine: its output goes out on stdout, stdin goes to its input.
//! The session ends when the backend's output closes, or when the client closes stdin (then
//! the output is still forwarded until it has been quiet for [`LINGER`]), with a `Success`
//! status on the error channel; a WebSocket close ends it at once.

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::{SinkExt as _, StreamExt as _};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use tokio_tungstenite::tungstenite::{
    Message,
    handshake::server::{ErrorResponse, Request, Response},
    http::{HeaderValue, StatusCode},
};
use tonic::Status;

use crate::{CLOSE, ERROR, STATUS_SUCCESS, STDIN, STDOUT, SUBPROTOCOL, frame};

/// How long an issued, unused Exec URL stays valid.
pub const TOKEN_TTL: Duration = Duration::from_secs(60);
/// After the client closed stdin, output is still forwarded until it was quiet this long.
pub const LINGER: Duration = Duration::from_millis(300);

/// Deliberate contract violations (the mock's console mutants). A real runtime uses the default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Violations {
    /// The URL's path is one nothing serves.
    pub url_not_served: bool,
    /// Stdin is dropped instead of echoed (interpreted by the mock's scripted backend).
    pub no_echo: bool,
    /// A second console of the same machine is allowed.
    pub second_allowed: bool,
    /// The token stays valid after use.
    pub token_reusable: bool,
}

/// One session's end of a console backend.
#[derive(Debug)]
pub struct Attached {
    /// The console's output (sent on stdout); the session ends when it closes.
    pub output: mpsc::Receiver<Vec<u8>>,
    /// The console's input (stdin frames go here).
    pub input: mpsc::Sender<Vec<u8>>,
}

/// Opens the console of a machine for one session, or says why not (an HTTP 503 before the
/// upgrade).
pub type Opener = Arc<dyn Fn(&str, Violations) -> Result<Attached, String> + Send + Sync>;

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
    opener: Opener,
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl ConsoleServer {
    /// Bind `addr` and serve consoles until the tokio runtime exits.
    ///
    /// # Errors
    /// The bind fails.
    pub async fn start(addr: SocketAddr, opener: Opener) -> std::io::Result<Self> {
        let server = Self::bind(addr, opener)?;
        server.serve();
        Ok(server)
    }

    /// Bind `addr` without a runtime; consoles are served from the first [`Self::issue`] on
    /// (which runs inside one). The base URL names the bound address (`http://ip:port`).
    ///
    /// # Errors
    /// The bind fails.
    pub fn bind(addr: SocketAddr, opener: Opener) -> std::io::Result<Self> {
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        Ok(Self {
            base_url: format!("http://{}", listener.local_addr()?),
            state: Arc::default(),
            opener,
            unserved: Arc::new(Mutex::new(Some(listener))),
        })
    }

    /// Start the accept loop once (needs a tokio runtime; without one, nothing happens).
    fn serve(&self) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let Some(std_listener) = lock(&self.unserved).take() else {
            return;
        };
        let accept = self.clone();
        handle.spawn(async move {
            let Ok(listener) = TcpListener::from_std(std_listener) else {
                return;
            };
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        // A console sends many small frames (a guest echoes byte by byte):
                        // Nagle plus the peer's delayed ACK would hold each for ~40 ms.
                        let _ = stream.set_nodelay(true);
                        let server = accept.clone();
                        tokio::spawn(async move { server.session(stream).await });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "console accept");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        });
    }

    /// `http://<ip>:<port>`.
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

    /// Forget the tokens of `machine_id` (it was deleted).
    pub fn forget(&self, machine_id: &str) {
        lock(&self.state)
            .tokens
            .retain(|_, (id, _, _)| id != machine_id);
    }

    /// Take the token in `path` (once), mark the machine's console open and attach to it.
    fn claim(&self, path: &str) -> Result<(String, Attached), (StatusCode, String)> {
        let token = path
            .strip_prefix("/exec/")
            .ok_or((StatusCode::NOT_FOUND, "not an exec URL".to_owned()))?;
        let (machine_id, violations) = {
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
            (machine_id, violations)
        };
        match (self.opener)(&machine_id, violations) {
            Ok(attached) => Ok((machine_id, attached)),
            Err(message) => {
                lock(&self.state).open.remove(&machine_id);
                Err((StatusCode::SERVICE_UNAVAILABLE, message))
            }
        }
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
        let Some((machine_id, attached)) = claimed else {
            return;
        };
        if let Ok(ws) = ws {
            run(ws, attached).await;
        }
        lock(&self.state).open.remove(&machine_id);
    }
}

/// Bridge one WebSocket session to a console backend.
async fn run(mut ws: tokio_tungstenite::WebSocketStream<TcpStream>, attached: Attached) {
    let Attached { mut output, input } = attached;
    let mut input = Some(input);
    let mut linger: Option<tokio::time::Instant> = None;
    loop {
        let quiet = async {
            match linger {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            out = output.recv() => match out {
                Some(data) => {
                    if ws.send(frame(STDOUT, &data)).await.is_err() {
                        return;
                    }
                    if linger.is_some() {
                        linger = Some(tokio::time::Instant::now() + LINGER);
                    }
                }
                None => break,
            },
            msg = ws.next(), if linger.is_none() => {
                let data = match msg {
                    Some(Ok(Message::Binary(data))) => data,
                    Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                    Some(Ok(_)) => continue,
                };
                match data.first() {
                    Some(&STDIN) => {
                        if let Some(tx) = &input {
                            let _ = tx.send(data[1..].to_vec()).await;
                        }
                    }
                    Some(&CLOSE) if data.get(1) == Some(&STDIN) => {
                        input = None;
                        linger = Some(tokio::time::Instant::now() + LINGER);
                    }
                    // Resize and anything else: a serial console has no size.
                    _ => {}
                }
            }
            () = quiet => break,
        }
    }
    let _ = ws.send(frame(ERROR, STATUS_SUCCESS.as_bytes())).await;
    let _ = ws.close(None).await;
}
