//! Exec console cases: the URL Exec answers is served with the Kubernetes remotecommand protocol
//! over WebSocket (subprotocol `v5.channel.k8s.io`, channel-prefixed binary frames), bytes written
//! reach the console and its output comes back, a second console is refused, a token works once.
//!
//! Exec is optional: a runtime answering an empty URL skips these cases with that reason, unless
//! [`crate::Params::require_exec`] (`--require exec`).

use std::time::Duration;

use super::machine::exec;
use anyhow::{Context as _, bail, ensure};
use futures::{SinkExt as _, StreamExt as _};
use iri_exec::{CLOSE, STDIN, STDOUT, client::Ws};
use tokio_tungstenite::tungstenite::Message;
use tonic::Code;

use crate::{
    case::{Case, Outcome, Profile, Service, pass, skip},
    ctx::{Ctx, expect_code, expect_ok},
};

/// How long a console has to answer.
const CONSOLE_TIMEOUT: Duration = Duration::from_secs(10);

macro_rules! case {
    ($v:ident, $id:literal, $desc:literal, |$ctx:ident, $url:ident, $machine:ident| $body:block) => {
        $v.push(Case::new(
            $id,
            Service::Machine,
            Profile::Core,
            $desc,
            |$ctx: Ctx| async move {
                let ($machine, $url) = match console_url(&$ctx).await? {
                    Ok(pair) => pair,
                    Err(outcome) => return Ok(outcome),
                };
                $body
            },
        ));
    };
}

/// A running machine and its Exec URL, or the skip (empty URL, Exec optional).
async fn console_url(ctx: &Ctx) -> anyhow::Result<Result<(String, String), Outcome>> {
    let id = ctx.running_machine().await?;
    let url = expect_ok(exec(ctx, &id).await, "Exec")?.url;
    if url.is_empty() {
        ensure!(
            !ctx.params().require_exec,
            "Exec answered an empty URL, but --require exec"
        );
        return Ok(Err(skip(
            "Exec answers an empty URL (no console; pass --require exec to fail)",
        )?));
    }
    Ok(Ok((id, url)))
}

/// Open the console at `url` with the v5 subprotocol (`iri-exec`'s client: the handshake
/// must answer that subprotocol).
async fn connect(url: &str) -> anyhow::Result<Ws> {
    iri_exec::client::connect(url, CONSOLE_TIMEOUT)
        .await
        .with_context(|| format!("opening the console at {url}"))
}

/// Read stdout until it contains `needle`.
async fn read_until(ws: &mut Ws, needle: &[u8]) -> anyhow::Result<()> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + CONSOLE_TIMEOUT;
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .with_context(|| {
                format!(
                    "{:?} did not come back from the console (stdout so far: {:?})",
                    String::from_utf8_lossy(needle),
                    String::from_utf8_lossy(&seen)
                )
            })?
            .context("the console closed")?
            .context("reading the console")?;
        if let Message::Binary(data) = msg
            && data.first() == Some(&STDOUT)
        {
            seen.extend_from_slice(&data[1..]);
            if seen.windows(needle.len()).any(|w| w == needle) {
                return Ok(());
            }
        }
    }
}

/// Close stdin (v5) and the WebSocket.
async fn hang_up(mut ws: Ws) {
    let _ = ws.send(Message::binary(vec![CLOSE, STDIN])).await;
    let _ = ws.close(None).await;
}

pub(crate) fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    case!(
        v,
        "machine.exec.console.url_served",
        "the Exec URL is served with the remotecommand protocol over WebSocket (v5.channel.k8s.io)",
        |ctx, url, _id| {
            let ws = connect(&url).await?;
            hang_up(ws).await;
            pass()
        }
    );
    case!(
        v,
        "machine.exec.console.round_trip",
        "bytes written to the console's stdin reach it and its output comes back on stdout",
        |ctx, url, _id| {
            let mut ws = connect(&url).await?;
            let marker = format!("iri-conformance-{:08x}", rand::random::<u32>());
            let mut frame = vec![STDIN];
            frame.extend_from_slice(marker.as_bytes());
            frame.push(b'\r');
            ws.send(Message::binary(frame))
                .await
                .context("writing stdin")?;
            read_until(&mut ws, marker.as_bytes()).await?;
            hang_up(ws).await;
            pass()
        }
    );
    case!(
        v,
        "machine.exec.console.second_refused",
        "while a machine's console is open, a second Exec is refused with FailedPrecondition",
        |ctx, url, id| {
            let ws = connect(&url).await?;
            let second = exec(&ctx, &id).await;
            hang_up(ws).await;
            expect_code(second, Code::FailedPrecondition, "a second Exec")?;
            pass()
        }
    );
    case!(
        v,
        "machine.exec.console.token_single_use",
        "an Exec URL works once: after its session ended, opening it again is refused",
        |ctx, url, id| {
            let ws = connect(&url).await?;
            hang_up(ws).await;
            // Wait until the console is free (a new Exec succeeds), then re-use the old URL.
            let deadline = tokio::time::Instant::now() + CONSOLE_TIMEOUT;
            loop {
                match exec(&ctx, &id).await {
                    Ok(_) => break,
                    Err(s) if s.code() == Code::FailedPrecondition => {
                        if tokio::time::Instant::now() > deadline {
                            bail!("the console stayed open after its session ended");
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Err(s) => bail!("Exec after the session ended: {s:?}"),
                }
            }
            if let Ok(ws) = connect(&url).await {
                hang_up(ws).await;
                bail!("the Exec URL {url} opened a second session");
            }
            pass()
        }
    );
    v
}
