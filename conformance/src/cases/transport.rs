//! The `transport` group (issue 13): a gRPC call with each `:authority` form real client
//! stacks send on a unix socket must be served. h2 (under tonic) rejects all but `localhost`
//! unless the server accepts any authority, which locks whole client ecosystems out. The calls
//! are hand-encoded HTTP/2 ([`iri_spec::serve::probe`]), since no client library sends every
//! form.

use anyhow::{Context as _, bail, ensure};
use iri_spec::{endpoint::Endpoint, serve::probe};
use prost::Message as _;

use crate::{
    case::{Case, Outcome, Profile, Service, pass, skip},
    ctx::Ctx,
    lifecycle::Upstream,
};

/// One `:authority` form and who sends it.
#[derive(Debug, Clone, Copy)]
enum Form {
    Localhost,
    PercentEncoded,
    RawPath,
    Absent,
}

impl Form {
    const ALL: [Form; 4] = [
        Form::Localhost,
        Form::PercentEncoded,
        Form::RawPath,
        Form::Absent,
    ];

    fn id(self) -> &'static str {
        match self {
            Form::Localhost => "authority_localhost",
            Form::PercentEncoded => "authority_percent_encoded",
            Form::RawPath => "authority_raw_path",
            Form::Absent => "authority_absent",
        }
    }

    fn rule(self) -> &'static str {
        match self {
            Form::Localhost => "a call with :authority localhost (grpc-go, tonic) is served",
            Form::PercentEncoded => {
                "a call with the percent-encoded socket path as :authority (grpc-core >= 1.57) is served"
            }
            Form::RawPath => {
                "a call with the raw socket path as :authority (grpc-java/netty, grpc-swift) is served"
            }
            Form::Absent => "a call without :authority (allowed by HTTP/2) is served",
        }
    }

    /// The client stacks a runtime that rejects this form locks out.
    fn locks_out(self) -> &'static str {
        match self {
            Form::Localhost => "grpc-go and tonic clients",
            Form::PercentEncoded => {
                "every grpc-core client since 1.57: Python grpcio, C++, Ruby, PHP and C#"
            }
            Form::RawPath => "grpc-java/netty and grpc-swift clients",
            Form::Absent => "clients that omit :authority, as HTTP/2 allows",
        }
    }

    /// The value sent for a socket at `path`.
    fn value(self, path: &str) -> Option<Vec<u8>> {
        match self {
            Form::Localhost => Some(b"localhost".to_vec()),
            Form::PercentEncoded => Some(percent_encode(path.trim_start_matches('/')).into_bytes()),
            Form::RawPath => Some(path.as_bytes().to_vec()),
            Form::Absent => None,
        }
    }
}

/// grpc-core's escaping of a unix socket path: every byte but the URI-unreserved ones.
fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn grpc_path(service: Service) -> &'static str {
    match service {
        Service::Machine => "/machine.v1alpha1.MachineRuntime/Version",
        Service::Volume => "/volume.v1alpha1.VolumeRuntime/Version",
        Service::Bucket => "/bucket.v1alpha1.BucketRuntime/Version",
    }
}

fn reason(code: u32) -> &'static str {
    match code {
        0 => "NO_ERROR",
        1 => "PROTOCOL_ERROR",
        2 => "INTERNAL_ERROR",
        7 => "REFUSED_STREAM",
        9 => "COMPRESSION_ERROR",
        _ => "error",
    }
}

async fn check(ctx: Ctx, service: Service, form: Form) -> anyhow::Result<Outcome> {
    let upstream = ctx
        .upstreams
        .get(&service)
        .cloned()
        .with_context(|| format!("no {service} runtime endpoint"))?;
    let timeout = ctx.params().rpc_timeout;
    let request = iri_spec::machine::v1alpha1::VersionRequest {
        version: "0.1.0".to_owned(),
    }
    .encode_to_vec();
    // The in-process mock has no path: it stands for a server on this socket.
    let (path, answer) = match &upstream {
        Upstream::Endpoint(Endpoint::Unix(p)) => {
            let path = p.display().to_string();
            let io = tokio::net::UnixStream::connect(p)
                .await
                .with_context(|| format!("connect {path}"))?;
            let value = form.value(&path);
            let answer = probe::call(io, grpc_path(service), value.as_deref(), &request, timeout);
            (path, answer.await)
        }
        Upstream::Endpoint(Endpoint::Tcp { .. }) => {
            return skip("a TCP endpoint: :authority forms of unix-socket clients do not apply");
        }
        Upstream::InProcess(dialer) => {
            let path = format!("/run/iri-{service}.sock");
            let io = dialer.dial().context("dial the embedded mock")?;
            let value = form.value(&path);
            let answer = probe::call(io, grpc_path(service), value.as_deref(), &request, timeout);
            (path, answer.await)
        }
    };
    let sent = form.value(&path).map_or_else(
        || "no :authority".to_owned(),
        |v| format!(":authority {:?}", String::from_utf8_lossy(&v)),
    );
    let locked = form.locks_out();
    match answer.with_context(|| format!("Version with {sent}"))? {
        probe::ProbeAnswer::Answered {
            grpc_status: Some(0),
            body,
            ..
        } => {
            ensure!(
                body.len() >= 5,
                "Version with {sent}: OK without a response message"
            );
            let r = iri_spec::machine::v1alpha1::VersionResponse::decode(&body[5..])
                .with_context(|| format!("Version with {sent}: undecodable response"))?;
            ensure!(
                !r.runtime_name.is_empty(),
                "Version with {sent}: empty runtime_name"
            );
            pass()
        }
        probe::ProbeAnswer::Answered {
            grpc_status,
            grpc_message,
            http_status,
            ..
        } => bail!(
            "Version with {sent} answered grpc-status {grpc_status:?} (HTTP {http_status:?}): {}; \
             this locks out {locked}",
            grpc_message.unwrap_or_default()
        ),
        probe::ProbeAnswer::StreamReset(code) => bail!(
            "the runtime reset the call with {sent} (RST_STREAM {}); this locks out {locked}: \
             accept any :authority on a unix socket",
            reason(code)
        ),
        probe::ProbeAnswer::GoAway(code) => bail!(
            "the runtime closed the connection (GOAWAY {}) on a call with {sent}; this locks out \
             {locked}",
            reason(code)
        ),
        probe::ProbeAnswer::Closed => bail!(
            "the runtime closed the connection on a call with {sent}; this locks out {locked}"
        ),
    }
}

/// Every transport case: each authority form on each service.
pub(crate) fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    for service in Service::ALL {
        for form in Form::ALL {
            v.push(Case::new(
                format!("{}.transport.{}", service.name(), form.id()),
                service,
                Profile::Core,
                form.rule(),
                move |ctx| check(ctx, service, form),
            ));
        }
    }
    v
}

#[cfg(test)]
mod tests {
    #[test]
    fn percent_encoding_matches_grpc_core() {
        assert_eq!(super::percent_encode("tmp/m/m.sock"), "tmp%2Fm%2Fm.sock");
    }
}
