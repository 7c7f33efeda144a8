//! The etcd v3 backend: objects as JSON under `/irikit/<plural>/<namespace>/<name>` (or
//! `/irikit/<plural>/<name>` for cluster-scoped kinds), the key's mod_revision as the
//! resourceVersion, Txn compares for preconditions, and etcd watches from a revision.
//! Every process talks to etcd directly; there is no server in between.
//!
//! [`LocalEtcd`] starts a throw-away `etcd` on free loopback ports in a temp dir; tests and
//! the scheduler benchmark use it.

use std::{
    future::Future,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType as EtcdEventType, GetOptions, KeyValue,
    Txn, TxnOp, WatchOptions,
};
use futures::StreamExt;

use super::{
    Error, EventType, KnownUpdate, ListOptions, Object, ObjectList, Outcome, Result, Store,
    WatchEvent, WatchStream, prepare_create, prepare_delete, prepare_update,
};
use crate::object::Kind;

/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "/irikit";
/// Timeout of every etcd call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Keys per list page.
const LIST_PAGE: i64 = 500;
/// How often an unconditional write is retried after losing a race.
const UNCONDITIONAL_RETRIES: usize = 16;
/// HTTP/2 keep-alive on the etcd connection: a ping every `KEEP_ALIVE_INTERVAL` while a call or
/// watch is open, and a connection whose ping goes unanswered for `KEEP_ALIVE_TIMEOUT` is
/// dropped, which ends every watch on it with an error (the controllers relist on a new one).
/// Without it a half-open connection (a peer that vanished without a FIN or RST) froze every
/// watch for good. etcd refuses pings more often than every 5 s (`--grpc-keepalive-min-time`)
/// and pings without an open stream, hence the interval and no idle pings.
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// See [`KEEP_ALIVE_INTERVAL`].
pub const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a (re)connect to an etcd endpoint may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The etcd [`Store`].
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    prefix: String,
}

fn backend(err: impl std::fmt::Display) -> Error {
    Error::Backend(err.to_string())
}

async fn timed<T>(fut: impl Future<Output = Result<T, etcd_client::Error>>) -> Result<T> {
    match tokio::time::timeout(CALL_TIMEOUT, fut).await {
        Ok(res) => res.map_err(backend),
        Err(_) => Err(Error::Backend(format!(
            "etcd call timed out after {CALL_TIMEOUT:?}"
        ))),
    }
}

fn i64_rev(revision: u64) -> i64 {
    i64::try_from(revision).unwrap_or(i64::MAX)
}

fn u64_rev(revision: i64) -> u64 {
    u64::try_from(revision).unwrap_or(0)
}

impl EtcdStore {
    /// Connects to etcd endpoints (`http://127.0.0.1:2379`) and uses keys under `prefix`.
    ///
    /// The connection pings etcd while a call or watch is open ([`KEEP_ALIVE_INTERVAL`]) and
    /// requires a leader: a member cut off from its cluster's leader cancels the watches on
    /// it instead of leaving them silent, so the watchers relist through another endpoint.
    pub async fn connect(endpoints: &[String], prefix: &str) -> Result<Self> {
        let options = ConnectOptions::new()
            .with_keep_alive(KEEP_ALIVE_INTERVAL, KEEP_ALIVE_TIMEOUT)
            .with_keep_alive_while_idle(false)
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_require_leader(true);
        let client = timed(Client::connect(endpoints, Some(options))).await?;
        Ok(Self {
            client,
            prefix: prefix.trim_end_matches('/').to_string(),
        })
    }

    /// The underlying client (for raw benchmarks).
    pub fn client(&self) -> &Client {
        &self.client
    }

    fn kind_prefix(&self, kind: Kind) -> String {
        format!("{}/{}/", self.prefix, kind.plural())
    }

    fn key(&self, kind: Kind, namespace: &str, name: &str) -> String {
        if kind.namespaced() {
            format!("{}{namespace}/{name}", self.kind_prefix(kind))
        } else {
            format!("{}{name}", self.kind_prefix(kind))
        }
    }

    fn key_of(&self, obj: &Object) -> String {
        self.key(obj.kind(), &obj.metadata().namespace, &obj.metadata().name)
    }

    fn encode(obj: &Object) -> Vec<u8> {
        // The resourceVersion is the key's mod_revision, never stored (dropped from the JSON
        // rather than from a clone of the object).
        let mut value = obj.to_json();
        if let Some(meta) = value
            .get_mut("metadata")
            .and_then(serde_json::Value::as_object_mut)
        {
            meta.remove("resourceVersion");
        }
        serde_json::to_vec(&value).unwrap_or_default()
    }

    fn decode(kv: &KeyValue, revision: i64) -> Result<Object> {
        let mut obj = Object::from_json_slice(kv.value()).map_err(backend)?;
        obj.metadata_mut().resource_version = revision.to_string();
        Ok(obj)
    }

    /// Reads the current object. `serializable` reads skip the raft round trip; writes use
    /// them because their Txn compares the mod_revision anyway (a stale read only turns into a
    /// retry or a Conflict, never into a lost update).
    async fn read_opt(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        serializable: bool,
    ) -> Result<(Object, i64)> {
        let mut kv = self.client.kv_client();
        let opts = serializable.then(|| GetOptions::new().with_serializable());
        let resp = timed(kv.get(self.key(kind, namespace, name), opts)).await?;
        let Some(item) = resp.kvs().first() else {
            let key = if kind.namespaced() {
                format!("{namespace}/{name}")
            } else {
                name.to_string()
            };
            return Err(Error::NotFound { kind, key });
        };
        Ok((
            Self::decode(item, item.mod_revision())?,
            item.mod_revision(),
        ))
    }

    async fn read(&self, kind: Kind, namespace: &str, name: &str) -> Result<(Object, i64)> {
        self.read_opt(kind, namespace, name, true).await
    }

    /// Applies `outcome` if the key still has `mod_revision`; `Ok(None)` when the compare failed.
    async fn commit(
        &self,
        key: String,
        mod_revision: i64,
        outcome: Outcome,
    ) -> Result<Option<Object>> {
        let (op, mut obj, removed) = match outcome {
            Outcome::Write(obj) => (
                TxnOp::put(key.clone(), Self::encode(&obj), None),
                obj,
                false,
            ),
            Outcome::Remove(obj) => (TxnOp::delete(key.clone(), None), obj, true),
            Outcome::Unchanged(obj) => return Ok(Some(obj)),
        };
        let txn = Txn::new()
            .when([Compare::mod_revision(key, CompareOp::Equal, mod_revision)])
            .and_then([op]);
        let mut kv = self.client.kv_client();
        let resp = timed(kv.txn(txn)).await?;
        if !resp.succeeded() {
            return Ok(None);
        }
        let revision = resp.header().map_or(0, |h| h.revision());
        obj.metadata_mut().resource_version = revision.to_string();
        let _ = removed;
        Ok(Some(obj))
    }

    /// The resourceVersion of `obj` as an etcd revision (a multi-object write needs one).
    fn precondition(obj: &Object) -> Result<i64> {
        obj.metadata().resource_version.parse::<i64>().map_err(|_| {
            Error::BadRequest(format!(
                "update_many: {} {:?} has no resourceVersion precondition",
                obj.kind(),
                obj.key()
            ))
        })
    }

    /// One Txn: every key still at its `current` mod_revision → write every `desired`. No
    /// read: `current` is trusted to be the stored object at that revision (a revision names
    /// exactly one value of a key), so the compare alone makes the write safe.
    async fn commit_many(&self, updates: Vec<KnownUpdate>) -> Result<Vec<Object>> {
        let mut compares = Vec::with_capacity(updates.len());
        let mut ops = Vec::with_capacity(updates.len());
        let mut results = Vec::with_capacity(updates.len());
        for KnownUpdate {
            current,
            desired,
            status_only,
        } in updates
        {
            let mod_revision = Self::precondition(&current)?;
            if current.kind() != desired.kind() || current.key() != desired.key() {
                return Err(Error::BadRequest(format!(
                    "update_many: {} {:?} is updated from {} {:?}",
                    desired.kind(),
                    desired.key(),
                    current.kind(),
                    current.key()
                )));
            }
            let key = self.key_of(&current);
            compares.push(Compare::mod_revision(
                key.clone(),
                CompareOp::Equal,
                mod_revision,
            ));
            let desired = KnownUpdate::new(current, desired);
            match prepare_update(&desired.current, desired.desired, status_only)? {
                Outcome::Write(obj) | Outcome::Unchanged(obj) => {
                    ops.push(TxnOp::put(key, Self::encode(&obj), None));
                    results.push(obj);
                }
                Outcome::Remove(obj) => {
                    ops.push(TxnOp::delete(key, None));
                    results.push(obj);
                }
            }
        }
        let mut kv = self.client.kv_client();
        let resp = timed(kv.txn(Txn::new().when(compares).and_then(ops))).await?;
        if !resp.succeeded() {
            let first = results.first().map(|o| (o.kind(), o.key()));
            let (kind, key) = first.unwrap_or((Kind::Machine, String::new()));
            return Err(Error::Conflict { kind, key });
        }
        let revision = resp.header().map_or(0, |h| h.revision()).to_string();
        for obj in &mut results {
            obj.metadata_mut().resource_version.clone_from(&revision);
        }
        Ok(results)
    }

    async fn write_one(&self, obj: Object, status_only: bool) -> Result<Object> {
        let conditional = !obj.metadata().resource_version.is_empty();
        for _ in 0..UNCONDITIONAL_RETRIES {
            let meta = obj.metadata();
            let (old, mod_revision) = self.read(obj.kind(), &meta.namespace, &meta.name).await?;
            let outcome = prepare_update(&old, obj.clone(), status_only)?;
            if let Some(done) = self
                .commit(self.key_of(&old), mod_revision, outcome)
                .await?
            {
                return Ok(done);
            }
            if conditional {
                return Err(Error::Conflict {
                    kind: old.kind(),
                    key: old.key(),
                });
            }
        }
        Err(Error::Conflict {
            kind: obj.kind(),
            key: obj.key(),
        })
    }
}

#[async_trait::async_trait]
impl Store for EtcdStore {
    async fn get(&self, kind: Kind, namespace: &str, name: &str) -> Result<Object> {
        Ok(self.read_opt(kind, namespace, name, false).await?.0)
    }

    async fn list(&self, kind: Kind, options: &ListOptions) -> Result<ObjectList> {
        options.check(kind)?;
        let mut prefix = self.kind_prefix(kind);
        if kind.namespaced()
            && let Some(ns) = options.namespace.as_deref().filter(|ns| !ns.is_empty())
        {
            prefix.push_str(ns);
            prefix.push('/');
        }
        // Page through the prefix at one revision (a single response is capped at 4 MiB by
        // gRPC; Kubernetes pages the same way with limit/continue).
        let mut kv = self.client.kv_client();
        let range_end = prefix_end(prefix.as_bytes());
        let mut start = prefix.into_bytes();
        let mut revision = 0i64;
        let mut items = Vec::new();
        loop {
            let mut opts = GetOptions::new()
                .with_range(range_end.clone())
                .with_limit(LIST_PAGE);
            if revision > 0 {
                opts = opts.with_revision(revision);
            }
            let resp = timed(kv.get(start.clone(), Some(opts))).await?;
            if revision == 0 {
                revision = resp.header().map_or(0, |h| h.revision());
            }
            for item in resp.kvs() {
                let obj = Self::decode(item, item.mod_revision())?;
                if options.matches(&obj) {
                    items.push(obj);
                }
            }
            match resp.kvs().last() {
                Some(last) if resp.more() => {
                    start = last.key().to_vec();
                    start.push(0);
                }
                _ => break,
            }
        }
        let revision = u64_rev(revision);
        Ok(ObjectList { items, revision })
    }

    async fn create(&self, obj: Object) -> Result<Object> {
        let mut obj = prepare_create(obj)?;
        let key = self.key_of(&obj);
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, Self::encode(&obj), None)]);
        let mut kv = self.client.kv_client();
        let resp = timed(kv.txn(txn)).await?;
        if !resp.succeeded() {
            return Err(Error::AlreadyExists {
                kind: obj.kind(),
                key: obj.key(),
            });
        }
        obj.metadata_mut().resource_version = resp.header().map_or(0, |h| h.revision()).to_string();
        Ok(obj)
    }

    async fn update(&self, obj: Object) -> Result<Object> {
        self.write_one(obj, false).await
    }

    async fn update_status(&self, obj: Object) -> Result<Object> {
        self.write_one(obj, true).await
    }

    async fn update_many(&self, objs: Vec<Object>) -> Result<Vec<Object>> {
        let mut updates = Vec::with_capacity(objs.len());
        for obj in objs {
            let precondition = Self::precondition(&obj)?;
            let meta = obj.metadata();
            let (old, mod_revision) = self.read(obj.kind(), &meta.namespace, &meta.name).await?;
            if mod_revision != precondition {
                return Err(Error::Conflict {
                    kind: old.kind(),
                    key: old.key(),
                });
            }
            updates.push(KnownUpdate::new(old, obj));
        }
        self.commit_many(updates).await
    }

    async fn update_many_from(&self, updates: Vec<KnownUpdate>) -> Result<Vec<Object>> {
        self.commit_many(updates).await
    }

    async fn delete(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        resource_version: Option<&str>,
    ) -> Result<Option<Object>> {
        let conditional = resource_version.is_some_and(|rv| !rv.is_empty());
        for _ in 0..UNCONDITIONAL_RETRIES {
            let (old, mod_revision) = self.read(kind, namespace, name).await?;
            let outcome = prepare_delete(&old, resource_version)?;
            let keep = !matches!(outcome, Outcome::Remove(_));
            if let Some(obj) = self
                .commit(self.key_of(&old), mod_revision, outcome)
                .await?
            {
                return Ok(keep.then_some(obj));
            }
            if conditional {
                return Err(Error::Conflict {
                    kind,
                    key: old.key(),
                });
            }
        }
        Err(Error::Conflict {
            kind,
            key: format!("{namespace}/{name}"),
        })
    }

    async fn watch(&self, kind: Option<Kind>, revision: u64) -> Result<WatchStream> {
        let prefix = match kind {
            Some(kind) => self.kind_prefix(kind),
            None => format!("{}/", self.prefix),
        };
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(i64_rev(revision + 1))
            .with_progress_notify();
        // etcd reports a compacted start revision only after the "created" response; a read at
        // that revision fails at once, so check first (a compaction racing with the watch still
        // ends the stream with `Expired`).
        if revision > 0 {
            let mut kv = self.client.kv_client();
            let opts = GetOptions::new()
                .with_revision(i64_rev(revision + 1))
                .with_count_only();
            match timed(kv.get(format!("{}/", self.prefix), Some(opts))).await {
                Err(Error::Backend(msg)) if msg.contains("compacted") => {
                    return Err(Error::Expired {
                        requested: revision,
                        oldest: 0,
                    });
                }
                Err(Error::Backend(msg)) if msg.contains("future revision") => {}
                Err(err) => return Err(err),
                Ok(_) => {}
            }
        }
        let mut watch = self.client.watch_client();
        let mut stream = timed(watch.watch(prefix, Some(options))).await?;
        // The first response confirms the watch or reports a compacted start revision.
        let first = timed(stream.message()).await?;
        let first = first.ok_or_else(|| Error::Backend("etcd closed the watch".into()))?;
        if first.compact_revision() > 0 || first.canceled() {
            return Err(Error::Expired {
                requested: revision,
                oldest: u64_rev(first.compact_revision()),
            });
        }
        let client = self.client.clone();
        let initial = decode_events(&client, &first, revision).await;
        let rest = futures::stream::unfold(Some(stream), move |stream| {
            let client = client.clone();
            async move {
                let mut stream = stream?;
                match stream.message().await {
                    Ok(Some(resp)) => {
                        if resp.compact_revision() > 0 || resp.canceled() {
                            let err = Error::Expired {
                                requested: revision,
                                oldest: u64_rev(resp.compact_revision()),
                            };
                            return Some((vec![Err(err)], None));
                        }
                        let mut events = decode_events(&client, &resp, revision).await;
                        // An expired event ends the stream (the caller relists).
                        match events
                            .iter()
                            .position(|e| matches!(e, Err(Error::Expired { .. })))
                        {
                            Some(at) => {
                                events.truncate(at + 1);
                                Some((events, None))
                            }
                            None => Some((events, Some(stream))),
                        }
                    }
                    Ok(None) => None,
                    Err(err) => Some((vec![Err(backend(err))], None)),
                }
            }
        })
        .flat_map(futures::stream::iter);
        Ok(futures::stream::iter(initial).chain(rest).boxed())
    }

    async fn compact(&self, revision: u64) -> Result<()> {
        let current = self.revision().await?;
        let mut kv = self.client.kv_client();
        match timed(kv.compact(i64_rev(revision.min(current)), None)).await {
            Ok(_) => Ok(()),
            Err(Error::Backend(msg)) if msg.contains("compacted") => Ok(()),
            Err(err) => Err(err),
        }
    }

    async fn revision(&self) -> Result<u64> {
        let mut kv = self.client.kv_client();
        let resp = timed(kv.get(
            format!("{}/", self.prefix),
            Some(GetOptions::new().with_prefix().with_count_only()),
        ))
        .await?;
        Ok(u64_rev(resp.header().map_or(0, |h| h.revision())))
    }
}

/// Decodes one watch response. The watch runs without etcd's `prev_kv`: etcd 3.4 serves
/// `prev_kv` with one backend range read per event, and every bind produces two Modified events
/// that need no previous value. A Delete event carries only the key, so its last state (which
/// [`WatchEvent`] promises) is read at the revision before the delete; deletes are rare.
async fn decode_events(
    client: &Client,
    resp: &etcd_client::WatchResponse,
    after: u64,
) -> Vec<Result<WatchEvent>> {
    let mut out = Vec::with_capacity(resp.events().len());
    for event in resp.events() {
        let Some(kv) = event.kv() else { continue };
        let revision = kv.mod_revision();
        if u64_rev(revision) <= after {
            continue;
        }
        let decoded = match event.event_type() {
            EtcdEventType::Put => {
                let type_ = if kv.create_revision() == kv.mod_revision() {
                    EventType::Added
                } else {
                    EventType::Modified
                };
                EtcdStore::decode(kv, revision).map(|object| WatchEvent {
                    type_,
                    object,
                    revision: u64_rev(revision),
                })
            }
            EtcdEventType::Delete => {
                last_state(client, kv.key(), revision, after)
                    .await
                    .map(|object| WatchEvent {
                        type_: EventType::Deleted,
                        object,
                        revision: u64_rev(revision),
                    })
            }
        };
        out.push(decoded);
    }
    out
}

/// The value `key` had just before its deletion at `revision`, with resourceVersion
/// `revision`. A compaction that already discarded it expires the watch (the caller relists).
async fn last_state(client: &Client, key: &[u8], revision: i64, after: u64) -> Result<Object> {
    let mut kv = client.kv_client();
    let opts = GetOptions::new().with_revision(revision - 1);
    match timed(kv.get(key, Some(opts))).await {
        Ok(resp) => match resp.kvs().first() {
            Some(prev) => EtcdStore::decode(prev, revision),
            None => Err(Error::Backend(format!(
                "etcd delete at revision {revision} of a key absent before it"
            ))),
        },
        Err(Error::Backend(msg)) if msg.contains("compacted") => Err(Error::Expired {
            requested: after,
            oldest: u64_rev(revision),
        }),
        Err(err) => Err(err),
    }
}

/// A throw-away single-member etcd on free loopback ports, with its data in a temp dir.
/// Dropping it kills the process (also during a panic). [`LocalEtcd::stop`] and
/// [`LocalEtcd::restart`] take it down and bring it back on the same data dir and ports, for
/// tests of what survives a store outage.
pub struct LocalEtcd {
    child: Option<Child>,
    binary: PathBuf,
    client_url: String,
    peer_url: String,
    dir: tempfile::TempDir,
}

impl LocalEtcd {
    /// The `etcd` binary on PATH, if any.
    pub fn binary() -> Option<PathBuf> {
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path)
            .map(|dir| dir.join("etcd"))
            .find(|p| p.is_file())
    }

    /// Starts etcd with its data dir under `base` (e.g. `/dev/shm` for speed) or the system
    /// temp dir, and waits until it serves.
    pub async fn start(base: Option<&Path>) -> Result<Self> {
        let binary =
            Self::binary().ok_or_else(|| Error::Backend("`etcd` is not on PATH".into()))?;
        let dir = match base {
            Some(base) => tempfile::Builder::new()
                .prefix("irikit-etcd")
                .tempdir_in(base),
            None => tempfile::Builder::new().prefix("irikit-etcd").tempdir(),
        }
        .map_err(backend)?;
        let mut etcd = Self {
            child: None,
            binary,
            client_url: format!("http://127.0.0.1:{}", free_port()?),
            peer_url: format!("http://127.0.0.1:{}", free_port()?),
            dir,
        };
        etcd.spawn().await?;
        Ok(etcd)
    }

    /// Starts the process on the data dir and ports of `self` and waits until it serves.
    async fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("etcd.log"))
            .map_err(backend)?;
        let log_err = log.try_clone().map_err(backend)?;
        // The --initial-cluster flags are ignored when the data dir already holds a member.
        let child = Command::new(&self.binary)
            .arg("--name")
            .arg("irikit")
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .args([
                "--listen-client-urls",
                &self.client_url,
                "--advertise-client-urls",
                &self.client_url,
            ])
            .args([
                "--listen-peer-urls",
                &self.peer_url,
                "--initial-advertise-peer-urls",
                &self.peer_url,
            ])
            .arg("--initial-cluster")
            .arg(format!("irikit={}", self.peer_url))
            .args([
                "--initial-cluster-state",
                "new",
                "--logger",
                "zap",
                "--log-level",
                "warn",
            ])
            .args(["--quota-backend-bytes", "8589934592"])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(backend)?;
        let child = self.child.insert(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(Error::Backend(format!(
                    "etcd exited during start-up: {status}"
                )));
            }
            let probe = async {
                let mut client = Client::connect([self.client_url.as_str()], None).await?;
                client.get("/irikit-probe", None).await
            };
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(1), probe).await {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(Error::Backend(
                    "etcd did not become ready within 20 s".into(),
                ));
            }
            // Polling a child process for readiness; there is no event to wait on.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills the process (SIGKILL, as a crash or a pulled plug would); the data dir stays.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts etcd again on the same data dir and ports (after [`LocalEtcd::stop`]) and waits
    /// until it serves.
    pub async fn restart(&mut self) -> Result<()> {
        self.stop();
        self.spawn().await
    }

    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// The client URL (`http://127.0.0.1:<port>`).
    pub fn endpoint(&self) -> &str {
        &self.client_url
    }

    /// Connects an [`EtcdStore`] with `prefix`.
    pub async fn store(&self, prefix: &str) -> Result<EtcdStore> {
        EtcdStore::connect(std::slice::from_ref(&self.client_url), prefix).await
    }
}

impl Drop for LocalEtcd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The end of the key range of `prefix` (the prefix with its last byte incremented).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(backend)?;
    Ok(listener.local_addr().map_err(backend)?.port())
}
