//! `irictl exec`: a console session on an Exec URL (remotecommand `v5.channel.k8s.io` over
//! WebSocket, `iri-exec`'s client).
//!
//! On a terminal (stdin and stdout both TTYs) the session is interactive: the terminal is in
//! raw mode until the session ends, and Ctrl+] (0x1d) leaves. Otherwise it is a pipe for
//! scripts: stdin goes to the console's stdin, stdout and stderr come out on ours; at the end
//! of our stdin the console's stdin is closed (v5) and the session runs until the server ends
//! it. A `Failure` status on the error channel is an error (non-zero exit).

use std::{
    io::{IsTerminal as _, Read as _, Write as _},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use futures::{SinkExt as _, StreamExt as _};
use iri_exec::{CLOSE, ERROR, STDERR, STDIN, STDOUT, frame};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// Ctrl+]: leaves an interactive console.
const ESCAPE: u8 = 0x1d;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The terminal in raw mode while this lives.
struct RawMode(rustix::termios::Termios);

impl RawMode {
    fn enter() -> Result<Self> {
        let stdin = std::io::stdin();
        let saved = rustix::termios::tcgetattr(&stdin).context("read the terminal's mode")?;
        let mut raw = saved.clone();
        raw.make_raw();
        rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &raw)
            .context("set the terminal to raw mode")?;
        Ok(Self(saved))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(
            std::io::stdin(),
            rustix::termios::OptionalActions::Now,
            &self.0,
        );
    }
}

/// Our stdin, chunk by chunk, from a thread (stdin has no async reader that a pipe and a TTY
/// both honour); `None` at its end.
fn stdin_chunks() -> mpsc::Receiver<Option<Vec<u8>>> {
    let (tx, rx) = mpsc::channel(16);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = [0u8; 4096];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => {
                    let _ = tx.blocking_send(None);
                    return;
                }
                Ok(n) => {
                    if tx.blocking_send(Some(buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
            }
        }
    });
    rx
}

fn write_out(channel: u8, data: &[u8]) -> Result<()> {
    let res = if channel == STDERR {
        let mut e = std::io::stderr().lock();
        e.write_all(data).and_then(|()| e.flush())
    } else {
        let mut o = std::io::stdout().lock();
        o.write_all(data).and_then(|()| o.flush())
    };
    match res {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e).context("write output"),
        _ => Ok(()),
    }
}

/// Run one console session on `url` until it ends (or Ctrl+] on a terminal).
pub(crate) async fn session(url: &str) -> Result<()> {
    let ws = iri_exec::client::connect(url, HANDSHAKE_TIMEOUT)
        .await
        .with_context(|| format!("open the console at {url}"))?;
    let interactive = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let _raw = if interactive {
        let raw = RawMode::enter()?;
        eprint!("Connected to the console (Ctrl+] leaves).\r\n");
        Some(raw)
    } else {
        None
    };
    let (mut tx, mut rx) = ws.split();
    let mut stdin = stdin_chunks();
    let mut stdin_open = true;
    loop {
        tokio::select! {
            chunk = stdin.recv(), if stdin_open => match chunk.flatten() {
                Some(data) => {
                    let escape = interactive.then(|| data.iter().position(|b| *b == ESCAPE)).flatten();
                    let data = escape.map_or(&data[..], |at| &data[..at]);
                    if !data.is_empty() {
                        tx.send(frame(STDIN, data)).await.context("write to the console")?;
                    }
                    if escape.is_some() {
                        let _ = tx.send(Message::binary(vec![CLOSE, STDIN])).await;
                        let _ = tx.close().await;
                        eprint!("\r\nLeft the console.\r\n");
                        return Ok(());
                    }
                }
                None => {
                    stdin_open = false;
                    tx.send(Message::binary(vec![CLOSE, STDIN]))
                        .await
                        .context("close the console's stdin")?;
                }
            },
            msg = rx.next() => match msg {
                Some(Ok(Message::Binary(data))) => match data.first() {
                    Some(&c @ (STDOUT | STDERR)) => write_out(c, &data[1..])?,
                    Some(&ERROR) => {
                        if iri_exec::status_is_success(&data[1..]) {
                            return Ok(());
                        }
                        bail!("the console ended with {}", String::from_utf8_lossy(&data[1..]));
                    }
                    _ => {}
                },
                Some(Ok(Message::Close(_))) | None => return Ok(()),
                Some(Ok(_)) => {}
                Some(Err(e)) => bail!("console connection: {e}"),
            },
        }
    }
}
