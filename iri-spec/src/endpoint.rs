//! IRI endpoints: parsing, discovery and connecting, as IronCore's Go code does it.
//!
//! Discovery follows `iri/remote/common.GetAddress`: an explicit value wins; else the runtime's
//! environment variable (`IRI_MACHINE_RUNTIME_ENDPOINT`, ...); else poll, every second until a
//! timeout, for the first well-known path that exists and is a socket, returned as `unix://<path>`.
//!
//! This module is the only place in `iri-spec` that touches the file system or the network.

use std::{
    fmt,
    path::{Path, PathBuf},
    str::FromStr,
    time::Duration,
};

use tonic::transport::{Channel, Uri};

/// Errors of endpoint parsing, discovery and connecting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The endpoint string has no known scheme.
    #[error("endpoint {0:?} has no scheme: use unix:///path/to.sock or tcp://host:port")]
    NoScheme(String),
    /// The endpoint uses a scheme we do not speak.
    #[error("endpoint {endpoint:?} has unsupported scheme {scheme:?}: use unix:// or tcp://")]
    UnsupportedScheme {
        /// The endpoint as given.
        endpoint: String,
        /// Its scheme.
        scheme: String,
    },
    /// A unix endpoint without a path, or with a relative `unix://` authority.
    #[error(
        "endpoint {0:?} is not a valid unix endpoint: use unix:///absolute/path or unix:relative/path"
    )]
    BadUnixPath(String),
    /// A TCP endpoint without `host:port`.
    #[error("endpoint {0:?} is not a valid tcp endpoint: use tcp://host:port")]
    BadTcpAddress(String),
    /// No explicit endpoint, no environment variable, and no well-known socket within the timeout.
    #[error(
        "no {kind} runtime endpoint: set {env_var}, pass an endpoint, or create one of {candidates} (waited {waited:?})"
    )]
    NotDiscovered {
        /// Which runtime.
        kind: RuntimeKind,
        /// The environment variable that was empty.
        env_var: &'static str,
        /// The well-known paths polled, comma separated.
        candidates: String,
        /// How long discovery polled.
        waited: Duration,
    },
    /// The transport could not connect.
    #[error("connect to {endpoint}")]
    Connect {
        /// The endpoint.
        endpoint: Endpoint,
        /// The cause.
        #[source]
        source: tonic::transport::Error,
    },
}

/// Result of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A parsed IRI endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// A unix domain socket path (`unix:///abs/path` or `unix:rel/path`).
    Unix(PathBuf),
    /// A TCP address (`tcp://host:port`); plaintext HTTP/2 like Go's insecure credentials.
    Tcp {
        /// Host name or IP address (IPv6 without brackets).
        host: String,
        /// Port.
        port: u16,
    },
}

impl Endpoint {
    /// A unix endpoint for `path`.
    pub fn unix(path: impl Into<PathBuf>) -> Self {
        Endpoint::Unix(path.into())
    }

    /// An endpoint flag as irikit's CLIs take it: `unix:///path`, `tcp://host:port`, or a bare
    /// socket path.
    pub fn from_flag(s: &str) -> Result<Self> {
        if s.contains("://") || s.starts_with("unix:") {
            s.parse()
        } else {
            Ok(Endpoint::unix(s))
        }
    }
}

impl FromStr for Endpoint {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let Some((scheme, rest)) = s.split_once(':') else {
            return Err(Error::NoScheme(s.to_owned()));
        };
        match scheme {
            "unix" => {
                // grpc-go: "unix://absolute_path" or "unix:path".
                let path = match rest.strip_prefix("//") {
                    Some(abs) if abs.starts_with('/') => abs,
                    Some(_) => return Err(Error::BadUnixPath(s.to_owned())),
                    None => rest,
                };
                if path.is_empty() || path.contains('\0') {
                    return Err(Error::BadUnixPath(s.to_owned()));
                }
                Ok(Endpoint::Unix(PathBuf::from(path)))
            }
            "tcp" => {
                let addr = rest
                    .strip_prefix("//")
                    .ok_or_else(|| Error::BadTcpAddress(s.to_owned()))?;
                let addr = addr.trim_end_matches('/');
                let (host, port) = addr
                    .rsplit_once(':')
                    .ok_or_else(|| Error::BadTcpAddress(s.to_owned()))?;
                let host = host
                    .strip_prefix('[')
                    .and_then(|h| h.strip_suffix(']'))
                    .unwrap_or(host);
                let port: u16 = port
                    .parse()
                    .map_err(|_| Error::BadTcpAddress(s.to_owned()))?;
                if host.is_empty() || host.contains(['/', '[', ']']) {
                    return Err(Error::BadTcpAddress(s.to_owned()));
                }
                Ok(Endpoint::Tcp {
                    host: host.to_owned(),
                    port,
                })
            }
            _ if scheme.starts_with('/') || scheme.starts_with('.') || scheme.is_empty() => {
                Err(Error::NoScheme(s.to_owned()))
            }
            _ => Err(Error::UnsupportedScheme {
                endpoint: s.to_owned(),
                scheme: scheme.to_owned(),
            }),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Unix(path) if path.is_absolute() => write!(f, "unix://{}", path.display()),
            Endpoint::Unix(path) => write!(f, "unix:{}", path.display()),
            Endpoint::Tcp { host, port } if host.contains(':') => {
                write!(f, "tcp://[{host}]:{port}")
            }
            Endpoint::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
        }
    }
}

/// The three IRI runtimes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RuntimeKind {
    /// `machine.v1alpha1.MachineRuntime`.
    Machine,
    /// `volume.v1alpha1.VolumeRuntime`.
    Volume,
    /// `bucket.v1alpha1.BucketRuntime`.
    Bucket,
}

impl fmt::Display for RuntimeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RuntimeKind::Machine => "machine",
            RuntimeKind::Volume => "volume",
            RuntimeKind::Bucket => "bucket",
        })
    }
}

impl RuntimeKind {
    /// The environment variable IronCore reads for this runtime's endpoint.
    pub fn env_var(self) -> &'static str {
        match self {
            RuntimeKind::Machine => "IRI_MACHINE_RUNTIME_ENDPOINT",
            RuntimeKind::Volume => "IRI_VOLUME_RUNTIME_ENDPOINT",
            RuntimeKind::Bucket => "IRI_BUCKET_RUNTIME_ENDPOINT",
        }
    }

    /// The well-known socket paths, in the order IronCore polls them.
    pub fn well_known_sockets(self) -> [&'static str; 2] {
        match self {
            RuntimeKind::Machine => [
                "/var/run/iri-machinebroker.sock",
                "/var/run/iri-machineprovider.sock",
            ],
            RuntimeKind::Volume => [
                "/var/run/iri-volumebroker.sock",
                "/var/run/iri-volumeprovider.sock",
            ],
            RuntimeKind::Bucket => [
                "/var/run/iri-bucketbroker.sock",
                "/var/run/iri-bucketprovider.sock",
            ],
        }
    }
}

/// The inputs of endpoint discovery, separated from the process environment so they can be tested.
#[derive(Debug, Clone)]
pub struct Discovery {
    /// Which runtime.
    pub kind: RuntimeKind,
    /// An explicit endpoint (a flag value); wins when non-empty.
    pub explicit: Option<String>,
    /// The value of the runtime's environment variable; used when non-empty.
    pub env: Option<String>,
    /// Well-known socket paths to poll, in order.
    pub candidates: Vec<PathBuf>,
    /// How long to poll for a candidate socket.
    pub timeout: Duration,
    /// Pause between polls (IronCore: 1 s).
    pub poll_interval: Duration,
}

impl Discovery {
    /// Discovery for `kind` as IronCore does it: explicit value, then the environment variable,
    /// then the well-known sockets polled every second until `timeout`.
    pub fn new(kind: RuntimeKind, explicit: Option<&str>, timeout: Duration) -> Self {
        Discovery {
            kind,
            explicit: explicit.map(str::to_owned),
            env: std::env::var(kind.env_var()).ok(),
            candidates: kind
                .well_known_sockets()
                .iter()
                .map(PathBuf::from)
                .collect(),
            timeout,
            poll_interval: Duration::from_secs(1),
        }
    }

    /// Resolve the endpoint, polling the candidates if needed.
    pub async fn resolve(&self) -> Result<Endpoint> {
        if let Some(explicit) = self.explicit.as_deref().filter(|s| !s.is_empty()) {
            return explicit.parse();
        }
        if let Some(env) = self.env.as_deref().filter(|s| !s.is_empty()) {
            return env.parse();
        }
        let start = tokio::time::Instant::now();
        loop {
            if let Some(path) = self.candidates.iter().find(|p| is_socket(p)) {
                return Ok(Endpoint::Unix(path.clone()));
            }
            let waited = start.elapsed();
            if waited >= self.timeout {
                return Err(Error::NotDiscovered {
                    kind: self.kind,
                    env_var: self.kind.env_var(),
                    candidates: self
                        .candidates
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                    waited,
                });
            }
            tokio::time::sleep(self.poll_interval.min(self.timeout - waited)).await;
        }
    }
}

/// Discover the endpoint of `kind` from `explicit`, the environment and the well-known sockets.
pub async fn discover(
    kind: RuntimeKind,
    explicit: Option<&str>,
    timeout: Duration,
) -> Result<Endpoint> {
    Discovery::new(kind, explicit, timeout).resolve().await
}

fn is_socket(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

/// Default timeout for establishing a connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

fn tonic_endpoint(endpoint: &Endpoint) -> tonic::transport::Endpoint {
    let uri = match endpoint {
        // The authority is ignored by the unix connector; it only fills the :authority header.
        Endpoint::Unix(_) => Uri::from_static("http://localhost"),
        Endpoint::Tcp { host, port } => {
            let host = if host.contains(':') {
                format!("[{host}]")
            } else {
                host.clone()
            };
            match format!("http://{host}:{port}").parse() {
                Ok(uri) => uri,
                Err(_) => Uri::from_static("http://invalid.invalid"),
            }
        }
    };
    tonic::transport::Endpoint::from(uri).connect_timeout(DEFAULT_CONNECT_TIMEOUT)
}

fn unix_connector(
    path: PathBuf,
) -> impl tower::Service<
    Uri,
    Response = hyper_util::rt::TokioIo<tokio::net::UnixStream>,
    Error = std::io::Error,
    Future = impl Future<Output = std::io::Result<hyper_util::rt::TokioIo<tokio::net::UnixStream>>>
             + Send,
> + Clone
+ Send {
    tower::service_fn(move |_: Uri| {
        let path = path.clone();
        async move {
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                tokio::net::UnixStream::connect(path).await?,
            ))
        }
    })
}

/// Connect to an IRI endpoint (plaintext HTTP/2, as Go's insecure credentials) and return a
/// [`Channel`] for the generated clients. Fails if the endpoint is unreachable.
pub async fn connect(endpoint: &Endpoint) -> Result<Channel> {
    let res = match endpoint {
        Endpoint::Unix(path) => {
            tonic_endpoint(endpoint)
                .connect_with_connector(unix_connector(path.clone()))
                .await
        }
        Endpoint::Tcp { .. } => tonic_endpoint(endpoint).connect().await,
    };
    res.map_err(|source| Error::Connect {
        endpoint: endpoint.clone(),
        source,
    })
}

/// Like [`connect`], but the connection is made on first use and re-made after it breaks.
/// Long-running clients (poollets) use this so that a runtime restart is survived.
pub fn connect_lazy(endpoint: &Endpoint) -> Channel {
    match endpoint {
        Endpoint::Unix(path) => {
            tonic_endpoint(endpoint).connect_with_connector_lazy(unix_connector(path.clone()))
        }
        Endpoint::Tcp { .. } => tonic_endpoint(endpoint).connect_lazy(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case(
        "unix:///var/run/iri-machinebroker.sock",
        Endpoint::unix("/var/run/iri-machinebroker.sock")
    )]
    #[case("unix:relative/x.sock", Endpoint::unix("relative/x.sock"))]
    #[case("unix:/abs/x.sock", Endpoint::unix("/abs/x.sock"))]
    #[case("tcp://127.0.0.1:5000", Endpoint::Tcp { host: "127.0.0.1".into(), port: 5000 })]
    #[case("tcp://localhost:1/", Endpoint::Tcp { host: "localhost".into(), port: 1 })]
    #[case("tcp://[::1]:50051", Endpoint::Tcp { host: "::1".into(), port: 50051 })]
    fn parses(#[case] input: &str, #[case] want: Endpoint) {
        assert_eq!(input.parse::<Endpoint>().unwrap(), want);
    }

    #[rstest]
    #[case("/var/run/x.sock")]
    #[case("")]
    #[case("unix://")]
    #[case("unix://relative/x.sock")]
    #[case("unix:")]
    #[case("tcp://")]
    #[case("tcp://host")]
    #[case("tcp://host:notaport")]
    #[case("tcp://:80")]
    #[case("tcp://host:70000")]
    #[case("http://host:80")]
    #[case("tcp:host:80")]
    fn rejects(#[case] input: &str) {
        let err = input.parse::<Endpoint>().unwrap_err();
        assert!(!err.to_string().is_empty());
    }

    #[rstest]
    #[case("unix:///var/run/x.sock")]
    #[case("unix:rel/x.sock")]
    #[case("tcp://127.0.0.1:80")]
    #[case("tcp://[::1]:80")]
    fn display_round_trips(#[case] input: &str) {
        let parsed: Endpoint = input.parse().unwrap();
        assert_eq!(parsed.to_string(), input);
        assert_eq!(parsed.to_string().parse::<Endpoint>().unwrap(), parsed);
    }

    #[test]
    fn env_vars_and_well_known_paths() {
        assert_eq!(
            RuntimeKind::Machine.env_var(),
            "IRI_MACHINE_RUNTIME_ENDPOINT"
        );
        assert_eq!(RuntimeKind::Volume.env_var(), "IRI_VOLUME_RUNTIME_ENDPOINT");
        assert_eq!(RuntimeKind::Bucket.env_var(), "IRI_BUCKET_RUNTIME_ENDPOINT");
        assert_eq!(
            RuntimeKind::Machine.well_known_sockets(),
            [
                "/var/run/iri-machinebroker.sock",
                "/var/run/iri-machineprovider.sock"
            ]
        );
        assert_eq!(
            RuntimeKind::Volume.well_known_sockets(),
            [
                "/var/run/iri-volumebroker.sock",
                "/var/run/iri-volumeprovider.sock"
            ]
        );
        assert_eq!(
            RuntimeKind::Bucket.well_known_sockets(),
            [
                "/var/run/iri-bucketbroker.sock",
                "/var/run/iri-bucketprovider.sock"
            ]
        );
    }

    fn discovery(dir: &Path) -> Discovery {
        Discovery {
            kind: RuntimeKind::Machine,
            explicit: None,
            env: None,
            candidates: vec![dir.join("broker.sock"), dir.join("provider.sock")],
            timeout: Duration::from_secs(3),
            poll_interval: Duration::from_secs(1),
        }
    }

    #[tokio::test]
    async fn explicit_wins_over_env() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = discovery(dir.path());
        d.explicit = Some("unix:///a.sock".into());
        d.env = Some("unix:///b.sock".into());
        assert_eq!(d.resolve().await.unwrap(), Endpoint::unix("/a.sock"));
        d.explicit = Some(String::new());
        assert_eq!(d.resolve().await.unwrap(), Endpoint::unix("/b.sock"));
        d.env = Some("bogus".into());
        assert!(matches!(d.resolve().await, Err(Error::NoScheme(_))));
    }

    #[tokio::test]
    async fn first_existing_socket_wins_and_plain_files_do_not_count() {
        let dir = tempfile::tempdir().unwrap();
        let d = discovery(dir.path());
        std::fs::write(dir.path().join("broker.sock"), b"not a socket").unwrap();
        let _provider =
            std::os::unix::net::UnixListener::bind(dir.path().join("provider.sock")).unwrap();
        assert_eq!(
            d.resolve().await.unwrap(),
            Endpoint::Unix(dir.path().join("provider.sock"))
        );
        std::fs::remove_file(dir.path().join("broker.sock")).unwrap();
        let _broker =
            std::os::unix::net::UnixListener::bind(dir.path().join("broker.sock")).unwrap();
        assert_eq!(
            d.resolve().await.unwrap(),
            Endpoint::Unix(dir.path().join("broker.sock"))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn polls_until_a_socket_appears() {
        let dir = tempfile::tempdir().unwrap();
        let d = discovery(dir.path());
        let path = dir.path().join("provider.sock");
        let binder = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            std::os::unix::net::UnixListener::bind(path).unwrap()
        });
        assert_eq!(
            d.resolve().await.unwrap(),
            Endpoint::Unix(dir.path().join("provider.sock"))
        );
        drop(binder.await.unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn times_out_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let d = discovery(dir.path());
        let err = d.resolve().await.unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::NotDiscovered { .. }));
        assert!(msg.contains("IRI_MACHINE_RUNTIME_ENDPOINT"), "{msg}");
        assert!(msg.contains("broker.sock"), "{msg}");
    }

    #[tokio::test]
    async fn connect_fails_cleanly_on_a_missing_socket() {
        let dir = tempfile::tempdir().unwrap();
        let err = connect(&Endpoint::Unix(dir.path().join("absent.sock")))
            .await
            .unwrap_err();
        assert!(err.to_string().starts_with("connect to unix://"), "{err}");
    }
}
