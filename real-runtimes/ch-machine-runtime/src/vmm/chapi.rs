//! A small Cloud Hypervisor REST client over the VMM's unix API socket (reqwest `unix_socket`).
//!
//! Any 2xx is success; every other status is an [`Error::Api`] carrying CH's string array
//! (outermost first). A socket that is missing or refuses connections is [`Error::Gone`]: the
//! VMM has exited (guest power-off, crash, kill), which callers treat as "stopped".

use std::{path::Path, time::Duration};

use serde::de::DeserializeOwned;
use serde_json::Value;

/// Errors of a CH REST call.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// The API socket is gone or refuses connections: the VMM is not running.
    #[error("vmm api socket is gone")]
    Gone,
    /// The call did not complete in time.
    #[error("{endpoint} timed out")]
    Timeout {
        /// The endpoint called.
        endpoint: &'static str,
    },
    /// CH answered with a non-2xx status.
    #[error("{endpoint} failed with http {status}: {}", chain.join(": "))]
    Api {
        /// The endpoint called.
        endpoint: &'static str,
        /// The HTTP status code.
        status: u16,
        /// CH's error chain, outermost first.
        chain: Vec<String>,
    },
    /// Any other transport or decoding failure.
    #[error("{endpoint}: {message}")]
    Transport {
        /// The endpoint called.
        endpoint: &'static str,
        /// What went wrong.
        message: String,
    },
}

pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;

/// What a `PUT vm.<action>` does to the VM (`Create`, `AddDisk` and `AddNet` with a body).
#[derive(Debug, Clone, Copy)]
pub(crate) enum VmAction {
    Create,
    Boot,
    Shutdown,
    PowerButton,
    Delete,
    AddDisk,
    AddNet,
}

impl VmAction {
    /// The endpoint, and how long CH may take to answer it.
    fn endpoint(self) -> (&'static str, Duration) {
        match self {
            Self::Create => ("vm.create", Duration::from_secs(10)),
            Self::Boot => ("vm.boot", Duration::from_secs(30)),
            Self::Shutdown => ("vm.shutdown", Duration::from_secs(30)),
            Self::PowerButton => ("vm.power-button", Duration::from_secs(5)),
            Self::Delete => ("vm.delete", Duration::from_secs(30)),
            Self::AddDisk => ("vm.add-disk", Duration::from_secs(10)),
            Self::AddNet => ("vm.add-net", Duration::from_secs(10)),
        }
    }
}

/// A client for one VMM's API socket.
#[derive(Debug, Clone)]
pub(crate) struct Client {
    http: reqwest::Client,
}

const BASE: &str = "http://localhost/api/v1/";

impl Client {
    /// A client whose every connection goes to `socket`.
    pub(crate) fn new(socket: &Path) -> Result<Self> {
        let http = reqwest::Client::builder()
            .unix_socket(socket)
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| Error::Transport {
                endpoint: "client",
                message: format!("{e:#}"),
            })?;
        Ok(Self { http })
    }

    fn map_send_error(endpoint: &'static str, e: &reqwest::Error) -> Error {
        if e.is_timeout() {
            return Error::Timeout { endpoint };
        }
        if e.is_connect() {
            return Error::Gone;
        }
        // A VMM that exits while answering (vmm.shutdown, guest power-off) closes the stream.
        let text = format!("{e:?}");
        if text.contains("ConnectionReset")
            || text.contains("BrokenPipe")
            || text.contains("IncompleteMessage")
            || text.contains("ConnectionRefused")
        {
            return Error::Gone;
        }
        Error::Transport {
            endpoint,
            message: error_chain(e),
        }
    }

    async fn call(
        &self,
        endpoint: &'static str,
        get: bool,
        body: Option<&Value>,
        timeout: Duration,
    ) -> Result<Option<Value>> {
        let url = format!("{BASE}{endpoint}");
        let mut req = if get {
            self.http.get(url)
        } else {
            self.http.put(url)
        };
        req = req.timeout(timeout);
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| Self::map_send_error(endpoint, &e))?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| Self::map_send_error(endpoint, &e))?;
        if status.is_success() {
            if bytes.is_empty() {
                return Ok(None);
            }
            return serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| Error::Transport {
                    endpoint,
                    message: format!("decode response: {e}"),
                });
        }
        let chain = serde_json::from_slice::<Vec<String>>(&bytes)
            .unwrap_or_else(|_| vec![String::from_utf8_lossy(&bytes).into_owned()]);
        Err(Error::Api {
            endpoint,
            status: status.as_u16(),
            chain,
        })
    }

    async fn get<T: DeserializeOwned>(&self, endpoint: &'static str) -> Result<T> {
        let value = self
            .call(endpoint, true, None, Duration::from_secs(5))
            .await?
            .unwrap_or(Value::Null);
        serde_json::from_value(value).map_err(|e| Error::Transport {
            endpoint,
            message: format!("decode response: {e}"),
        })
    }

    async fn put(
        &self,
        endpoint: &'static str,
        body: Option<&Value>,
        timeout: Duration,
    ) -> Result<Option<Value>> {
        self.call(endpoint, false, body, timeout).await
    }

    /// `GET vmm.ping`.
    pub(crate) async fn ping(&self) -> Result<PingResponse> {
        self.get("vmm.ping").await
    }

    /// `GET vm.info`.
    pub(crate) async fn info(&self) -> Result<InfoResponse> {
        self.get("vm.info").await
    }

    /// `PUT vm.<action>` with `body` (the VM config, a disk or a net); what CH answers (the
    /// PCI info of a hot-plugged device) is not needed.
    pub(crate) async fn vm(&self, action: VmAction, body: Option<&Value>) -> Result<()> {
        let (endpoint, timeout) = action.endpoint();
        self.put(endpoint, body, timeout).await.map(drop)
    }

    /// `PUT vm.remove-device`.
    pub(crate) async fn remove_device(&self, id: &str) -> Result<()> {
        let body = serde_json::json!({ "id": id });
        self.put("vm.remove-device", Some(&body), Duration::from_secs(10))
            .await
            .map(drop)
    }

    /// `PUT vmm.shutdown` (CH answers 200, then exits 0 and removes its socket).
    pub(crate) async fn shutdown_vmm(&self) -> Result<()> {
        match self
            .put("vmm.shutdown", None, Duration::from_secs(10))
            .await
        {
            Ok(_) | Err(Error::Gone) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// `vmm.ping` response.
#[derive(Debug, Clone, serde::Deserialize)]
pub(crate) struct PingResponse {
    /// The VMM's pid (CH reports it; used to recognise adopted processes).
    #[serde(default)]
    pub(crate) pid: Option<i64>,
}

/// `vm.info` response (the parts we use).
#[derive(Debug, Clone, serde::Deserialize)]
pub(crate) struct InfoResponse {
    /// `Created | Running | Shutdown | Paused | BreakPoint`.
    pub(crate) state: String,
    /// The VM config as CH holds it.
    #[serde(default)]
    pub(crate) config: Value,
}
