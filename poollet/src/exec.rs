//! The machinepoollet's exec server (reference §3.9): `GET|POST
//! /apis/compute.ironcore.dev/namespaces/<ns>/machines/<name>/exec`, upgraded to a WebSocket
//! with subprotocol `v5.channel.k8s.io`, is proxied to the console URL the runtime's `Exec`
//! answers for that Machine.
//!
//! As IronCore's poollet does, the IRI machine is found by the poollet's namespace and name
//! labels (ListMachines with a label selector), then `Exec(machine_id)` gives the URL, which is
//! dialled before the client's upgrade is answered, so that failures are plain HTTP statuses:
//! no IRI machine or `NotFound` 404, `FailedPrecondition` (a console is open) 409,
//! `Unavailable` (no VMM runs the machine) 503, an empty URL 501, a runtime console that refuses
//! the upgrade its own status, anything else 500 (IronCore answers 500 for all but NotFound).
//! After `101 Switching Protocols` every frame is copied both ways ([`iri_exec::bridge`]).
//! Plain HTTP on the address given (loopback in tests); no TLS or authentication yet.

use std::{convert::Infallible, net::SocketAddr, time::Duration};

use http_body_util::Full;
use hyper::{
    Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header::{self, HeaderValue},
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use iri_spec::{
    keys,
    machine::v1alpha1::{self as machine, machine_runtime_client::MachineRuntimeClient},
};
use tokio::net::TcpListener;
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{handshake::derive_accept_key, protocol::Role},
};
use tokio_util::sync::CancellationToken;
use tonic::{Code, transport::Channel};
use tracing::{debug, info, warn};

/// How long dialling the runtime's console may take.
const CONSOLE_DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// The exec server; [`ExecServer::serve`] runs it.
#[derive(Debug)]
pub struct ExecServer {
    listener: TcpListener,
    channel: Channel,
    rpc_timeout: Duration,
}

type Reply = Response<Full<Bytes>>;

fn reply(status: StatusCode, message: &str) -> Reply {
    let mut resp = Response::new(Full::new(Bytes::from(format!("{message}\n"))));
    *resp.status_mut() = status;
    resp
}

/// `(namespace, name)` of an exec path.
fn parse_path(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/apis/compute.ironcore.dev/namespaces/")?;
    let (ns, rest) = rest.split_once('/')?;
    let name = rest.strip_prefix("machines/")?.strip_suffix("/exec")?;
    let ok = |s: &str| !s.is_empty() && !s.contains('/');
    (ok(ns) && ok(name)).then_some((ns, name))
}

fn grpc_status(status: &tonic::Status) -> StatusCode {
    match status.code() {
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::FailedPrecondition => StatusCode::CONFLICT,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl ExecServer {
    /// Bind `addr`; runtime calls go over `channel` with `rpc_timeout`.
    ///
    /// # Errors
    /// The bind fails.
    pub async fn bind(
        addr: SocketAddr,
        channel: Channel,
        rpc_timeout: Duration,
    ) -> std::io::Result<Self> {
        Ok(Self {
            listener: TcpListener::bind(addr).await?,
            channel,
            rpc_timeout,
        })
    }

    /// The bound address.
    ///
    /// # Errors
    /// The socket has none.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serve until `token` is cancelled (open sessions keep running until they end).
    pub async fn serve(self, token: CancellationToken) {
        if let Ok(addr) = self.listener.local_addr() {
            info!(%addr, "serving machine exec");
        }
        loop {
            let (stream, _) = tokio::select! {
                () = token.cancelled() => return,
                accepted = self.listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        warn!(error = %e, "exec accept");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            // Small interactive frames: no Nagle.
            let _ = stream.set_nodelay(true);
            let channel = self.channel.clone();
            let rpc_timeout = self.rpc_timeout;
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let channel = channel.clone();
                    async move { Ok::<_, Infallible>(handle(req, channel, rpc_timeout).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades();
                if let Err(e) = conn.await {
                    debug!(error = %e, "exec connection");
                }
            });
        }
    }
}

async fn handle(mut req: Request<Incoming>, channel: Channel, rpc_timeout: Duration) -> Reply {
    let Some((ns, name)) = parse_path(req.uri().path()) else {
        return reply(StatusCode::NOT_FOUND, "not an exec path");
    };
    let (ns, name) = (ns.to_owned(), name.to_owned());
    if req.method() != hyper::Method::GET && req.method() != hyper::Method::POST {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "exec takes GET or POST");
    }
    let headers = req.headers();
    let upgrade = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let offered = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == iri_exec::SUBPROTOCOL);
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY).cloned() else {
        return reply(StatusCode::BAD_REQUEST, "a WebSocket upgrade is required");
    };
    if !upgrade || !offered {
        return reply(
            StatusCode::BAD_REQUEST,
            &format!(
                "a WebSocket upgrade with subprotocol {} is required",
                iri_exec::SUBPROTOCOL
            ),
        );
    }

    // The IRI machine of namespace/name, by the poollet's labels.
    let mut client = MachineRuntimeClient::new(channel);
    let mut request = tonic::Request::new(machine::ListMachinesRequest {
        filter: Some(machine::MachineFilter {
            id: String::new(),
            label_selector: [
                (keys::MACHINE_NAMESPACE_LABEL.to_owned(), ns.clone()),
                (keys::MACHINE_NAME_LABEL.to_owned(), name.clone()),
            ]
            .into(),
        }),
    });
    request.set_timeout(rpc_timeout);
    let machines = match client.list_machines(request).await {
        Ok(r) => r.into_inner().machines,
        Err(s) => return reply(grpc_status(&s), &format!("list machines: {}", s.message())),
    };
    let Some(id) = machines
        .iter()
        .find_map(|m| m.metadata.as_ref().map(|meta| meta.id.clone()))
    else {
        return reply(
            StatusCode::NOT_FOUND,
            &format!("machine {ns}/{name} has no machine in the runtime"),
        );
    };
    let mut request = tonic::Request::new(machine::ExecRequest {
        machine_id: id.clone(),
    });
    request.set_timeout(rpc_timeout);
    let url = match client.exec(request).await {
        Ok(r) => r.into_inner().url,
        Err(s) => return reply(grpc_status(&s), &format!("exec: {}", s.message())),
    };
    if url.is_empty() {
        return reply(
            StatusCode::NOT_IMPLEMENTED,
            "the runtime's Exec answered no URL (no console)",
        );
    }
    let upstream = match iri_exec::client::connect(&url, CONSOLE_DIAL_TIMEOUT).await {
        Ok(ws) => ws,
        Err(iri_exec::client::Error::Refused { status, body }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
            return reply(status, &format!("the runtime's console: {body}"));
        }
        Err(e) => {
            return reply(
                StatusCode::BAD_GATEWAY,
                &format!("the runtime's console: {e}"),
            );
        }
    };

    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let downstream =
                    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None)
                        .await;
                debug!(machine.id = %id, "exec session open");
                iri_exec::bridge(downstream, upstream).await;
                debug!(machine.id = %id, "exec session closed");
            }
            Err(e) => debug!(error = %e, "exec upgrade"),
        }
    });
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(iri_exec::SUBPROTOCOL),
    );
    if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_paths() {
        assert_eq!(
            parse_path("/apis/compute.ironcore.dev/namespaces/default/machines/web-0/exec"),
            Some(("default", "web-0"))
        );
        for bad in [
            "/apis/compute.ironcore.dev/namespaces/default/machines/web-0",
            "/apis/compute.ironcore.dev/namespaces//machines/web-0/exec",
            "/apis/compute.ironcore.dev/namespaces/a/b/machines/web-0/exec",
            "/apis/compute.ironcore.dev/namespaces/a/machines/x/y/exec",
            "/exec/token",
        ] {
            assert_eq!(parse_path(bad), None, "{bad}");
        }
    }
}
