//! A small QMP (QEMU Machine Protocol) client over QEMU's unix monitor socket.
//!
//! One connection per operation: connect, read the greeting, `qmp_capabilities`, run the
//! commands, drop. QEMU serves one QMP client at a time per socket, and a connection per
//! operation keeps the backend stateless, so a restarted runtime simply reconnects. Events
//! that arrive while a command runs are kept for [`Conn::wait_event`]. A socket that is
//! missing, refuses connections or closes mid-command is [`Error::Gone`]: QEMU has exited.

use std::{path::Path, time::Duration};

use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader},
    net::{
        UnixStream,
        unix::{OwnedReadHalf, OwnedWriteHalf},
    },
};

/// Errors of a QMP exchange.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// The socket is gone, refuses connections or was closed: QEMU is not running.
    #[error("qmp socket is gone")]
    Gone,
    /// No answer in time.
    #[error("qmp {command} timed out")]
    Timeout {
        /// The command (or `connect`).
        command: &'static str,
    },
    /// QEMU answered with an error object.
    #[error("qmp {command} failed: {class}: {desc}")]
    Command {
        /// The command.
        command: &'static str,
        /// QMP's error class (`GenericError`, `DeviceNotFound`, ...).
        class: String,
        /// QMP's description.
        desc: String,
    },
    /// Anything else (malformed JSON, unexpected I/O errors).
    #[error("qmp {command}: {message}")]
    Protocol {
        /// The command.
        command: &'static str,
        /// What went wrong.
        message: String,
    },
}

pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;

/// Timeout for the connect + greeting + capabilities handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default timeout for one command.
pub(crate) const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// One open QMP session.
#[derive(Debug)]
pub(crate) struct Conn {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    events: Vec<Value>,
    peer_pid: Option<i32>,
}

fn io_error(command: &'static str, e: &std::io::Error) -> Error {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::NotFound
        | K::ConnectionRefused
        | K::ConnectionReset
        | K::ConnectionAborted
        | K::BrokenPipe
        | K::UnexpectedEof => Error::Gone,
        _ => Error::Protocol {
            command,
            message: e.to_string(),
        },
    }
}

impl Conn {
    /// Connect, read the greeting and enter command mode.
    pub(crate) async fn connect(socket: &Path) -> Result<Self> {
        let fut = async {
            let stream = UnixStream::connect(socket)
                .await
                .map_err(|e| io_error("connect", &e))?;
            let peer_pid = stream.peer_cred().ok().and_then(|c| c.pid());
            let (read, writer) = stream.into_split();
            let mut conn = Self {
                reader: BufReader::new(read),
                writer,
                events: Vec::new(),
                peer_pid,
            };
            let greeting = conn.read_message("connect").await?;
            if greeting.get("QMP").is_none() {
                return Err(Error::Protocol {
                    command: "connect",
                    message: format!("unexpected greeting {greeting}"),
                });
            }
            conn.execute_inner("qmp_capabilities", None).await?;
            Ok(conn)
        };
        tokio::time::timeout(CONNECT_TIMEOUT, fut)
            .await
            .map_err(|_| Error::Timeout { command: "connect" })?
    }

    /// The pid of the process serving the socket (`SO_PEERCRED`), i.e. QEMU's pid.
    pub(crate) fn peer_pid(&self) -> Option<i32> {
        self.peer_pid
    }

    async fn read_message(&mut self, command: &'static str) -> Result<Value> {
        let mut line = String::new();
        loop {
            line.clear();
            let n = self
                .reader
                .read_line(&mut line)
                .await
                .map_err(|e| io_error(command, &e))?;
            if n == 0 {
                return Err(Error::Gone);
            }
            if line.trim().is_empty() {
                continue;
            }
            return serde_json::from_str(&line).map_err(|e| Error::Protocol {
                command,
                message: format!("bad json from qemu: {e}"),
            });
        }
    }

    async fn execute_inner(&mut self, command: &'static str, args: Option<Value>) -> Result<Value> {
        let mut msg = json!({ "execute": command });
        if let Some(args) = args {
            msg["arguments"] = args;
        }
        let mut bytes = msg.to_string().into_bytes();
        bytes.push(b'\n');
        self.writer
            .write_all(&bytes)
            .await
            .map_err(|e| io_error(command, &e))?;
        loop {
            let reply = self.read_message(command).await?;
            if reply.get("event").is_some() {
                self.events.push(reply);
                continue;
            }
            if let Some(ret) = reply.get("return") {
                return Ok(ret.clone());
            }
            if let Some(err) = reply.get("error") {
                return Err(Error::Command {
                    command,
                    class: err["class"].as_str().unwrap_or("GenericError").to_owned(),
                    desc: err["desc"].as_str().unwrap_or_default().to_owned(),
                });
            }
            return Err(Error::Protocol {
                command,
                message: format!("unexpected reply {reply}"),
            });
        }
    }

    /// Run `command` with optional arguments; returns its `return` value.
    pub(crate) async fn execute(
        &mut self,
        command: &'static str,
        args: Option<Value>,
    ) -> Result<Value> {
        self.execute_timeout(command, args, COMMAND_TIMEOUT).await
    }

    /// [`Conn::execute`] with an explicit timeout.
    pub(crate) async fn execute_timeout(
        &mut self,
        command: &'static str,
        args: Option<Value>,
        timeout: Duration,
    ) -> Result<Value> {
        tokio::time::timeout(timeout, self.execute_inner(command, args))
            .await
            .map_err(|_| Error::Timeout { command })?
    }

    /// Wait up to `timeout` for an event named `name` whose `data` satisfies `pred`; events
    /// already received are checked first. `Ok(None)` on timeout; [`Error::Gone`] when QEMU
    /// closes the socket (it exited).
    pub(crate) async fn wait_event(
        &mut self,
        name: &str,
        pred: impl Fn(&Value) -> bool,
        timeout: Duration,
    ) -> Result<Option<Value>> {
        let matches = |ev: &Value| ev["event"] == name && pred(&ev["data"]);
        if let Some(i) = self.events.iter().position(matches) {
            return Ok(Some(self.events.remove(i)));
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let msg = match tokio::time::timeout_at(deadline, self.read_message("wait-event")).await
            {
                Err(_) => return Ok(None),
                Ok(msg) => msg?,
            };
            if matches(&msg) {
                return Ok(Some(msg));
            }
            if msg.get("event").is_some() {
                self.events.push(msg);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake QMP server on a socket pair: greeting, capabilities, one command with an
    /// interleaved event, one error, then an event.
    #[tokio::test]
    async fn handshake_commands_errors_and_events() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("qmp.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap_or_else(|e| panic!("{e}"));
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap_or_else(|e| panic!("{e}"));
            let (read, mut write) = stream.into_split();
            let mut lines = BufReader::new(read).lines();
            write
                .write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\r\n")
                .await
                .ok();
            let mut replies = vec![
                "{\"return\": {}}\r\n".to_owned(),
                "{\"event\": \"RESUME\"}\r\n{\"return\": {\"status\": \"running\", \"running\": true}}\r\n".to_owned(),
                "{\"error\": {\"class\": \"DeviceNotFound\", \"desc\": \"Device 'x' not found\"}}\r\n".to_owned(),
            ]
            .into_iter();
            while let Ok(Some(_line)) = lines.next_line().await {
                match replies.next() {
                    Some(r) => {
                        write.write_all(r.as_bytes()).await.ok();
                    }
                    None => break,
                }
            }
            write
                .write_all(b"{\"event\": \"DEVICE_DELETED\", \"data\": {\"device\": \"x\"}}\r\n")
                .await
                .ok();
        });
        let mut conn = Conn::connect(&path).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(conn.peer_pid(), i32::try_from(std::process::id()).ok());
        let status = conn
            .execute("query-status", None)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(status["status"], "running");
        let err = conn.execute("device_del", Some(json!({"id": "x"}))).await;
        assert!(
            matches!(err, Err(Error::Command { ref class, .. }) if class == "DeviceNotFound"),
            "{err:?}"
        );
        let resume = conn
            .wait_event("RESUME", |_| true, Duration::from_secs(1))
            .await;
        assert!(matches!(resume, Ok(Some(_))));
        // Triggers the server to send DEVICE_DELETED and close.
        conn.writer.write_all(b"{}\n").await.ok();
        let deleted = conn
            .wait_event(
                "DEVICE_DELETED",
                |d| d["device"] == "x",
                Duration::from_secs(5),
            )
            .await;
        assert!(matches!(deleted, Ok(Some(_))), "{deleted:?}");
        let gone = conn
            .wait_event("NOPE", |_| true, Duration::from_secs(5))
            .await;
        assert!(matches!(gone, Err(Error::Gone)), "{gone:?}");
        server.await.ok();
        assert!(matches!(
            Conn::connect(&dir.path().join("missing")).await,
            Err(Error::Gone)
        ));
    }
}
