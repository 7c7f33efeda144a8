//! `iri-fuzz`: throws random requests at IRI runtime servers and reports what broke.
//!
//! Two kinds of input, drawn from one seeded RNG (a run is reproducible from `--seed`):
//! - **structure-aware** ([`inputs`]): well-typed requests of every RPC of the machine, volume and
//!   bucket services, whose fields are drawn from hostile values — `..` and `/` in ids and
//!   paths, NUL bytes, 64 KiB strings, huge and negative sizes, every enum value and beyond,
//!   thousands of volumes — mixed with the ids of objects the run created, so that attaches,
//!   updates and deletes reach existing objects too;
//! - **wire-level**: the encoding of such a request truncated, with bytes flipped or
//!   inserted, or with a field's wire type changed.
//!
//! Every input is sent as raw bytes ([`RawCodec`]) with a deadline. A *finding* is a call
//! that the runtime answers with `Unknown` or `Internal` (bad input must get
//! `InvalidArgument`, `NotFound`, `OutOfRange` or `FailedPrecondition`), a call that exceeds
//! its deadline (a hang), or a server that stops answering (a crash). One exception follows
//! gRPC's own status-code table: a request whose bytes are not a valid protobuf message gets
//! `Internal` from the gRPC framework itself ("failed to decode Protobuf message"), as in
//! every gRPC implementation; that answer to a garbage input is not a finding.
//!
//! The run keeps its footprint bounded: of each kind it keeps at most [`MAX_LIVE`] objects,
//! deleting the oldest (each delete is an input too).

use std::{
    collections::{BTreeMap, VecDeque},
    time::{Duration, Instant},
};

use bytes::{Buf, BufMut};
use rand::{Rng, SeedableRng, rngs::StdRng};
use tonic::{
    Code, Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    transport::Channel,
};

pub mod inputs;

/// Objects of one kind the run keeps alive at most.
pub const MAX_LIVE: usize = 8;

/// Sends and receives messages as raw bytes, so that any byte string can be a request.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

/// [`RawCodec`]'s encoder and decoder.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawBytes;

impl Encoder for RawBytes {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawBytes {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let mut out = vec![0; src.remaining()];
        src.copy_to_slice(&mut out);
        Ok(Some(out))
    }
}

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawBytes;
    type Decoder = RawBytes;

    fn encoder(&mut self) -> RawBytes {
        RawBytes
    }

    fn decoder(&mut self) -> RawBytes {
        RawBytes
    }
}

/// The IRI services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub enum Service {
    /// `machine.v1alpha1.MachineRuntime`.
    Machine,
    /// `volume.v1alpha1.VolumeRuntime`.
    Volume,
    /// `bucket.v1alpha1.BucketRuntime`.
    Bucket,
}

impl Service {
    /// The fully qualified service name.
    pub fn name(self) -> &'static str {
        match self {
            Service::Machine => "machine.v1alpha1.MachineRuntime",
            Service::Volume => "volume.v1alpha1.VolumeRuntime",
            Service::Bucket => "bucket.v1alpha1.BucketRuntime",
        }
    }
}

/// One input: which method, the request bytes, and whether they were mangled on the wire.
#[derive(Debug, Clone)]
pub struct Input {
    /// The service.
    pub service: Service,
    /// The method name (`CreateMachine`).
    pub method: &'static str,
    /// The encoded request.
    pub bytes: Vec<u8>,
    /// Whether `bytes` were mangled after encoding (wire-level garbage).
    pub garbage: bool,
}

/// What the run found wrong, grouped by method, code and message.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Finding {
    /// `CreateMachine`.
    pub method: String,
    /// `Internal`, `Unknown`, `hang`, or `server gone`.
    pub what: String,
    /// The status message (its first 200 characters).
    pub message: String,
    /// How many inputs hit it.
    pub count: u64,
    /// The first input that hit it, hex-encoded (reproduce with `--replay`).
    pub example_hex: String,
}

/// Settings of a run against one server.
#[derive(Debug, Clone)]
pub struct Config {
    /// Inputs to send.
    pub inputs: u64,
    /// RNG seed.
    pub seed: u64,
    /// Deadline of one call; a call that exceeds it is a hang.
    pub deadline: Duration,
    /// Share of wire-level garbage among the inputs (0..=1).
    pub garbage_share: f64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            inputs: 10_000,
            seed: 1,
            deadline: Duration::from_secs(10),
            garbage_share: 0.3,
        }
    }
}

/// The result of a run against one server.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// The service fuzzed.
    pub service: Service,
    /// Inputs sent.
    pub inputs: u64,
    /// Of those, wire-level garbage.
    pub garbage: u64,
    /// Wall time, seconds.
    pub seconds: f64,
    /// Inputs per second.
    pub inputs_per_second: f64,
    /// Answers by gRPC code name.
    pub codes: BTreeMap<String, u64>,
    /// What went wrong (empty: nothing).
    pub findings: Vec<Finding>,
}

/// The ids the run created and keeps alive, by kind.
#[derive(Debug, Default)]
pub struct Live {
    /// Machine ids.
    pub machines: VecDeque<String>,
    /// Volume ids.
    pub volumes: VecDeque<String>,
    /// Snapshot ids.
    pub snapshots: VecDeque<String>,
    /// Bucket ids.
    pub buckets: VecDeque<String>,
}

/// Sends one input; `Ok(bytes)` or the status.
pub async fn send(channel: &Channel, input: &Input, deadline: Duration) -> Result<Vec<u8>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(format!("channel not ready: {e}")))?;
    let path = format!("/{}/{}", input.service.name(), input.method);
    let path = http::uri::PathAndQuery::try_from(path)
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    let mut request = tonic::Request::new(input.bytes.clone());
    request.set_timeout(deadline);
    match tokio::time::timeout(
        deadline + Duration::from_secs(1),
        grpc.unary(request, path, RawCodec),
    )
    .await
    {
        Ok(res) => res.map(tonic::Response::into_inner),
        Err(_) => Err(Status::deadline_exceeded("client-side timeout")),
    }
}

fn is_framework_decode_error(status: &Status) -> bool {
    status.code() == Code::Internal && status.message().contains("failed to decode Protobuf")
}

/// Whether an answer is acceptable for this input.
fn judge(input: &Input, res: &Result<Vec<u8>, Status>) -> Option<(String, String)> {
    let status = match res {
        Ok(_) => return None,
        Err(status) => status,
    };
    match status.code() {
        Code::Internal if input.garbage && is_framework_decode_error(status) => None,
        Code::Internal | Code::Unknown => Some((
            format!("{:?}", status.code()),
            status.message().chars().take(200).collect(),
        )),
        Code::DeadlineExceeded | Code::Cancelled => {
            Some(("hang".into(), status.message().chars().take(200).collect()))
        }
        _ => None,
    }
}

/// The service's `Version` answers (the server is alive).
async fn alive(channel: &Channel, service: Service, deadline: Duration) -> bool {
    let input = Input {
        service,
        method: "Version",
        bytes: Vec::new(),
        garbage: false,
    };
    send(channel, &input, deadline).await.is_ok()
}

/// Runs `config.inputs` inputs against `service` on `channel`.
pub async fn run(channel: &Channel, service: Service, config: &Config) -> Report {
    let mut rng = StdRng::seed_from_u64(config.seed);
    let mut live = Live::default();
    let mut codes: BTreeMap<String, u64> = BTreeMap::new();
    let mut findings: BTreeMap<(String, String, String), Finding> = BTreeMap::new();
    let mut garbage = 0;
    let started = Instant::now();
    let mut sent = 0;
    while sent < config.inputs {
        let mut input = if let Some(cleanup) = inputs::cleanup(service, &mut live) {
            cleanup
        } else {
            inputs::request(service, &mut rng, &live)
        };
        if !input.bytes.is_empty() && rng.random_bool(config.garbage_share.clamp(0.0, 1.0)) {
            inputs::mangle(&mut input.bytes, &mut rng);
            input.garbage = true;
            garbage += 1;
        }
        let res = send(channel, &input, config.deadline).await;
        sent += 1;
        let code = match &res {
            Ok(bytes) => {
                inputs::remember(service, input.method, bytes, &mut live);
                "Ok".to_string()
            }
            Err(status) => format!("{:?}", status.code()),
        };
        *codes.entry(code).or_default() += 1;
        if let Some((what, message)) = judge(&input, &res) {
            let key = (input.method.to_string(), what.clone(), message.clone());
            findings
                .entry(key)
                .or_insert_with(|| Finding {
                    method: input.method.to_string(),
                    what,
                    message,
                    count: 0,
                    example_hex: hex(&input.bytes),
                })
                .count += 1;
            if !alive(channel, service, config.deadline).await {
                findings.insert(
                    (
                        input.method.to_string(),
                        "server gone".into(),
                        String::new(),
                    ),
                    Finding {
                        method: input.method.to_string(),
                        what: "server gone".into(),
                        message: "Version no longer answers".into(),
                        count: 1,
                        example_hex: hex(&input.bytes),
                    },
                );
                break;
            }
        }
    }
    // Leave nothing behind.
    while let Some(cleanup) = inputs::drain(service, &mut live) {
        let _ = send(channel, &cleanup, config.deadline).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    Report {
        service,
        inputs: sent,
        garbage,
        seconds,
        inputs_per_second: if seconds > 0.0 {
            sent as f64 / seconds
        } else {
            0.0
        },
        codes,
        findings: findings.into_values().collect(),
    }
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Parses [`hex`] back.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}
