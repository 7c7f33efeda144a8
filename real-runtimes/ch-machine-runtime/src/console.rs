//! The machines' serial consoles behind Exec.
//!
//! Each VM's serial port is a unix socket its VMM listens on (`VmPaths::serial_socket`). Per
//! machine, one pump task is that socket's only client, for the machine's whole life: it
//! connects whenever the socket is there (again after a VMM restart, a power cycle, or a
//! runtime restart that adopted the VMM), appends what the guest prints to `serial.log`
//! (rotated into `serial.log.old` past [`SERIAL_LOG_MAX`], which keeps at most
//! [`vmm::SERIAL_HISTORY_MAX`]: at most 2 MiB per machine), and fans it out to the one attached
//! Exec session, whose stdin it writes to the serial port.
//!
//! The sessions themselves are `iri-exec`'s [`ConsoleServer`]: `<base-url>/exec/<one-time
//! token>`, remotecommand `v5.channel.k8s.io` over WebSocket, one console per machine. A new
//! session first gets the last [`SCROLLBACK`] bytes of `serial.log`, so a guest's boot banner
//! is there even when the session opens after it.

use std::{
    collections::HashMap,
    io::Write as _,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use iri_exec::server::{Attached, ConsoleServer, Opener};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::UnixStream,
    sync::{Notify, mpsc, watch},
};
use tokio_util::sync::CancellationToken;

use crate::vmm::{self, VmPaths};

/// `serial.log` is rotated into `serial.log.old` when it grows past this.
pub const SERIAL_LOG_MAX: u64 = 1 << 20;
/// How much of `serial.log` a new session gets first.
pub const SCROLLBACK: u64 = 16 << 10;
/// First and longest pause between attempts to reach a serial socket that is not there.
const RETRY: (Duration, Duration) = (Duration::from_millis(20), Duration::from_millis(500));
/// Output chunks queued for a session before further output is dropped (a stalled client must
/// not stall the pump, which also writes the log).
const SESSION_QUEUE: usize = 1024;

/// Why Exec has no console to offer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The machine's VMM is not running (not started yet, powered off, or gone).
    #[error("machine {0:?} has no running VMM: its console is not available")]
    NotRunning(String),
    /// A console of the machine is open.
    #[error("{0}")]
    Busy(String),
}

struct Pump {
    log: PathBuf,
    connected: watch::Sender<bool>,
    /// Try to connect now (a boot is about to start).
    kick: Notify,
    /// The attached session's output queue. Held while a chunk is logged and sent, so that a
    /// session attaching in between gets the scrollback and then every later byte once.
    session: Mutex<Option<mpsc::Sender<Vec<u8>>>>,
    input: mpsc::Sender<Vec<u8>>,
    cancel: CancellationToken,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

type Pumps = Arc<Mutex<HashMap<String, Arc<Pump>>>>;

/// Every machine's console pump and the Exec endpoint. Cheap to clone.
#[derive(Clone)]
pub struct Consoles {
    server: ConsoleServer,
    pumps: Pumps,
    token: CancellationToken,
}

impl std::fmt::Debug for Consoles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consoles")
            .field("base_url", &self.server.base_url())
            .finish_non_exhaustive()
    }
}

impl Consoles {
    /// Bind the Exec endpoint on `addr`; pumps stop when `token` is cancelled.
    ///
    /// # Errors
    /// The bind fails.
    pub fn bind(addr: SocketAddr, token: CancellationToken) -> std::io::Result<Self> {
        let pumps: Pumps = Arc::default();
        let weak = Arc::downgrade(&pumps);
        let opener: Opener = Arc::new(move |id: &str, _| {
            let pump = weak
                .upgrade()
                .and_then(|p| lock(&p).get(id).cloned())
                .ok_or_else(|| format!("machine {id:?} is gone"))?;
            Ok(pump.attach())
        });
        Ok(Self {
            server: ConsoleServer::bind(addr, opener)?,
            pumps,
            token,
        })
    }

    /// The base of every Exec URL (`http://ip:port`).
    #[must_use]
    pub fn base_url(&self) -> &str {
        self.server.base_url()
    }

    /// Start the pump of machine `id` (whose files are `paths`), unless it runs.
    pub fn ensure(&self, id: &str, paths: &VmPaths) {
        let mut pumps = lock(&self.pumps);
        if pumps.contains_key(id) {
            return;
        }
        let (input, input_rx) = mpsc::channel(64);
        let pump = Arc::new(Pump {
            log: paths.serial.clone(),
            connected: watch::Sender::new(false),
            kick: Notify::new(),
            session: Mutex::new(None),
            input,
            cancel: self.token.child_token(),
        });
        pumps.insert(id.to_owned(), Arc::clone(&pump));
        tokio::spawn(pump.run(paths.serial_socket.clone(), input_rx));
    }

    /// Stop the pump of machine `id` (deleted); an open session ends.
    pub fn remove(&self, id: &str) {
        if let Some(pump) = lock(&self.pumps).remove(id) {
            pump.cancel.cancel();
            lock(&pump.session).take();
        }
        self.server.forget(id);
    }

    /// Wait up to `timeout` until the pump of `id` is connected to its serial socket (a VM is
    /// about to boot: what it prints first must not be missed). Whether it is.
    pub async fn wait_connected(&self, id: &str, timeout: Duration) -> bool {
        let Some(pump) = lock(&self.pumps).get(id).cloned() else {
            return false;
        };
        pump.kick.notify_one();
        let mut rx = pump.connected.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|c| *c))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// An Exec URL for machine `id`.
    ///
    /// # Errors
    /// No VMM serves its serial port ([`Error::NotRunning`]), or a console is open.
    pub fn exec(&self, id: &str) -> Result<String, Error> {
        let connected = lock(&self.pumps)
            .get(id)
            .is_some_and(|p| *p.connected.borrow());
        if !connected {
            return Err(Error::NotRunning(id.to_owned()));
        }
        self.server
            .issue(id)
            .map_err(|s| Error::Busy(s.message().to_owned()))
    }
}

impl Pump {
    fn attach(&self) -> Attached {
        let (tx, output) = mpsc::channel(SESSION_QUEUE);
        let mut session = lock(&self.session);
        if let Ok(tail) = vmm::read_tail(&self.log, SCROLLBACK)
            && !tail.is_empty()
        {
            let _ = tx.try_send(tail);
        }
        *session = Some(tx);
        Attached {
            output,
            input: self.input.clone(),
        }
    }

    async fn run(self: Arc<Self>, socket: PathBuf, mut input_rx: mpsc::Receiver<Vec<u8>>) {
        let mut pause = RETRY.0;
        loop {
            let stream = tokio::select! {
                () = self.cancel.cancelled() => return,
                s = UnixStream::connect(&socket) => s,
            };
            match stream {
                Ok(stream) => {
                    pause = RETRY.0;
                    self.connected.send_replace(true);
                    tracing::debug!(socket = %socket.display(), "console pump connected");
                    self.pump(stream, &mut input_rx).await;
                    self.connected.send_replace(false);
                }
                Err(_) => {
                    // Input for a console nobody serves is dropped.
                    while input_rx.try_recv().is_ok() {}
                    tokio::select! {
                        () = self.cancel.cancelled() => return,
                        () = self.kick.notified() => {}
                        () = tokio::time::sleep(pause) => {}
                    }
                    pause = (pause * 2).min(RETRY.1);
                }
            }
        }
    }

    /// Copy the serial port to the log and the session, and the session's input to the
    /// serial port, until the VMM closes the socket.
    async fn pump(&self, stream: UnixStream, input_rx: &mut mpsc::Receiver<Vec<u8>>) {
        let (mut rd, mut wr) = stream.into_split();
        let mut log = open_log(&self.log);
        // Reading and writing run side by side: a guest echoing a long input blocks on its
        // output until this side reads it.
        let read = async {
            let mut buf = vec![0u8; 4096];
            loop {
                match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => self.output(&buf[..n], &mut log),
                }
            }
        };
        let write = async {
            while let Some(data) = input_rx.recv().await {
                if wr.write_all(&data).await.is_err() {
                    return;
                }
            }
        };
        tokio::select! {
            () = self.cancel.cancelled() => {}
            () = read => {}
            () = write => {}
        }
    }

    fn output(&self, data: &[u8], log: &mut Option<std::fs::File>) {
        let mut session = lock(&self.session);
        if let Some(f) = log.as_mut() {
            let _ = f.write_all(data);
            if f.metadata().is_ok_and(|m| m.len() > SERIAL_LOG_MAX)
                && let Err(e) = vmm::keep_serial_history_blocking(&self.log)
            {
                tracing::warn!(error = %e, "rotate serial log");
            }
        }
        if let Some(tx) = session.as_ref() {
            match tx.try_send(data.to_vec()) {
                Err(mpsc::error::TrySendError::Closed(_)) => *session = None,
                Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => {}
            }
        }
    }
}

/// `serial.log` for appending (0600); `None` if it cannot be opened (the console still works).
fn open_log(path: &Path) -> Option<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| tracing::warn!(error = %e, path = %path.display(), "open serial log"))
        .ok()
}
