//! What a case gets: gRPC clients, parameters, the run id, and the one set of helpers that touch
//! the API (create with run labels, get, list, poll, delete, status-code checks), written once
//! over [`RuntimeKind`] (`objects.rs`) with the per-kind names cases use.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, bail, ensure};
use iri_spec::{
    bucket::v1alpha1::{self as bucket, bucket_runtime_client::BucketRuntimeClient},
    machine::v1alpha1::{self as machine, machine_runtime_client::MachineRuntimeClient},
    meta::v1alpha1 as meta,
    volume::v1alpha1::{self as volume, volume_runtime_client::VolumeRuntimeClient},
};
use tonic::{Code, Status};

pub mod clients;
pub mod objects;

pub use self::{
    clients::Clients,
    objects::{Created, RuntimeKind, describe_machine},
};
use crate::{breaker::Guarded, case::verdict::Skip};

/// Label carrying the run id on every object a run creates.
pub const RUN_ID_LABEL: &str = "iri-conformance.irikit.dev/run-id";
/// Label carrying the (label-safe) id of the case that created the object.
pub const CASE_LABEL: &str = "iri-conformance.irikit.dev/case";

/// Case parameters (what a real runtime needs to be told: classes, image, sizes, time budgets).
#[derive(Debug, Clone)]
pub struct Params {
    /// Machine class for created machines; `None` = the first class `Status` reports.
    pub machine_class: Option<String>,
    /// Volume class; `None` = the first class volume `Status` reports.
    pub volume_class: Option<String>,
    /// Bucket class; `None` = the first class `ListBucketClasses` reports.
    pub bucket_class: Option<String>,
    /// Image for local disks that carry one.
    pub image: String,
    /// Size of created volumes and local disks, bytes.
    pub volume_size: i64,
    /// Size volumes are expanded to, bytes.
    pub expand_size: i64,
    /// Budget for a state transition (PENDING → RUNNING, deletion, attach, ...).
    pub state_timeout: Duration,
    /// Deadline of every single RPC.
    pub rpc_timeout: Duration,
    /// Calls of one RPC method that may run into the deadline before the method is not called
    /// again ([`crate::breaker`]; 0 = never).
    pub breaker_threshold: usize,
    /// Upper bound of the polling interval while waiting for a transition (starts at 1 ms).
    pub poll_interval: Duration,
    /// How many times idempotency cases repeat a call (csi-sanity: 10).
    pub idempotent_count: usize,
    /// How many objects concurrency cases create at once.
    pub parallel_creates: usize,
    /// Fail (instead of skip) the Exec console cases when Exec answers an empty URL.
    pub require_exec: bool,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            machine_class: None,
            volume_class: None,
            bucket_class: None,
            image: "ghcr.io/ironcore-dev/os-images/gardenlinux:latest".to_owned(),
            volume_size: 1 << 30,
            expand_size: 2 << 30,
            state_timeout: Duration::from_secs(60),
            rpc_timeout: Duration::from_secs(10),
            breaker_threshold: crate::breaker::DEFAULT_THRESHOLD,
            poll_interval: Duration::from_millis(20),
            idempotent_count: 10,
            parallel_creates: 8,
            require_exec: false,
        }
    }
}

/// Classes found at preflight (or why there are none).
#[derive(Debug, Clone)]
pub struct Resolved {
    /// Machine class or the reason there is none.
    pub machine_class: Result<String, String>,
    /// Volume class or the reason there is none.
    pub volume_class: Result<String, String>,
    /// Bucket class or the reason there is none.
    pub bucket_class: Result<String, String>,
}

/// The per-case context. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub(crate) clients: Clients,
    pub(crate) params: Arc<Params>,
    pub(crate) resolved: Arc<Resolved>,
    pub(crate) run_id: Arc<str>,
    pub(crate) case_id: Arc<str>,
    pub(crate) created: Arc<Created>,
    /// The lifecycle environment (lifecycle-level cases only).
    pub(crate) lifecycle: Option<Arc<crate::lifecycle::env::Env>>,
    /// How each service is dialled (the transport cases open raw HTTP/2 connections).
    pub(crate) upstreams: Arc<
        std::collections::BTreeMap<crate::case::verdict::Service, crate::lifecycle::gate::Upstream>,
    >,
}

/// A label value made of the case id (≤ 63 chars of `[A-Za-z0-9._-]`).
pub fn label_safe(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    while out.ends_with(['.', '-', '_']) {
        out.pop();
    }
    out
}

/// Now in Unix nanoseconds.
pub fn unix_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// Now in Unix seconds.
pub fn unix_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// A random id in the idgen format (63 lowercase hex chars) that no runtime will have assigned.
pub fn unknown_id() -> String {
    use rand::Rng as _;
    let mut rng = rand::rng();
    let mut s = String::from("c0f0");
    while s.len() < 63 {
        s.push(char::from(b"0123456789abcdef"[rng.random_range(0..16)]));
    }
    s
}

/// Checks that `res` failed with `code`.
pub fn expect_code<T: std::fmt::Debug>(
    res: Result<T, Status>,
    code: Code,
    what: &str,
) -> anyhow::Result<()> {
    match res {
        Ok(v) => bail!("{what}: expected {code:?}, got OK ({v:?})"),
        Err(st) if st.code() == code => Ok(()),
        Err(st) => bail!(
            "{what}: expected {code:?}, got {:?}: {}",
            st.code(),
            st.message()
        ),
    }
}

/// Checks that `res` is an error, whatever its code (the must half of a case whose exact code
/// is a should); returns the code.
pub fn expect_error<T: std::fmt::Debug>(
    res: Result<T, Status>,
    what: &str,
) -> anyhow::Result<Code> {
    match res {
        Ok(v) => bail!("{what}: expected an error, got OK ({v:?})"),
        Err(st) => Ok(st.code()),
    }
}

/// Checks that `res` is OK.
pub fn expect_ok<T>(res: Result<T, Status>, what: &str) -> anyhow::Result<T> {
    res.map_err(|st| anyhow::anyhow!("{what}: expected OK, got {:?}: {}", st.code(), st.message()))
}

/// The metadata id of an object, or an error saying it is missing.
pub fn meta_id(md: Option<&meta::ObjectMetadata>, what: &str) -> anyhow::Result<String> {
    let md = md.with_context(|| format!("{what} has no metadata"))?;
    ensure!(!md.id.is_empty(), "{what} has an empty metadata.id");
    Ok(md.id.clone())
}

/// Whether a `created_at`/`deleted_at` value is a plausible Unix-ns time within `slack` of now.
pub fn plausible_ns(t: i64, slack: Duration) -> bool {
    let now = unix_nanos();
    let slack = i64::try_from(slack.as_nanos()).unwrap_or(i64::MAX);
    t > now.saturating_sub(slack) && t < now.saturating_add(slack)
}

impl Ctx {
    /// The run id.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// The case id.
    pub fn case_id(&self) -> &str {
        &self.case_id
    }

    /// The lifecycle environment, or an error for a case run outside the lifecycle level.
    pub fn lifecycle(&self) -> anyhow::Result<&crate::lifecycle::env::Env> {
        self.lifecycle.as_deref().context(
            "the lifecycle environment is not running (a lifecycle case was run on the RPC level)",
        )
    }

    /// The parameters.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// Runs one RPC under the per-call deadline.
    pub async fn rpc<T>(
        &self,
        fut: impl Future<Output = Result<tonic::Response<T>, Status>>,
    ) -> Result<T, Status> {
        objects::call(self.params.rpc_timeout, fut).await
    }

    /// The labels every created object carries (run id + case), plus `extra`.
    pub fn labels(&self, extra: &[(&str, &str)]) -> HashMap<String, String> {
        let mut labels: HashMap<String, String> = extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        labels.insert(RUN_ID_LABEL.to_owned(), self.run_id.to_string());
        labels.insert(CASE_LABEL.to_owned(), label_safe(&self.case_id));
        labels
    }

    /// A selector matching exactly the objects of this case.
    pub fn case_selector(&self) -> HashMap<String, String> {
        self.labels(&[])
    }

    /// Metadata with the run labels and `extra` labels.
    pub fn metadata(&self, extra: &[(&str, &str)]) -> meta::ObjectMetadata {
        meta::ObjectMetadata {
            labels: self.labels(extra),
            ..Default::default()
        }
    }

    // ---------------------------------------------------------------- any kind

    /// The create RPC of `T`, raw; records the id for cleanup.
    pub async fn try_create<T: RuntimeKind>(&self, obj: T) -> Result<T, Status> {
        let obj = T::create(&self.clients, self.params.rpc_timeout, Some(obj)).await?;
        self.created.add::<T>(obj.id());
        Ok(obj)
    }

    /// The create RPC of `T` without the object, raw (not recorded).
    pub async fn try_create_none<T: RuntimeKind>(&self) -> Result<T, Status> {
        T::create(&self.clients, self.params.rpc_timeout, None).await
    }

    /// The create RPC of `T`, which must succeed and return an id.
    pub async fn create<T: RuntimeKind>(&self, obj: T) -> anyhow::Result<(String, T)> {
        let obj = expect_ok(self.try_create(obj).await, T::CREATE)?;
        let what = format!("{} response {}", T::CREATE, T::NAME);
        let id = meta_id(obj.metadata(), &what)?;
        Ok((id, obj))
    }

    /// The list RPC of `T`, raw.
    pub async fn list<T: RuntimeKind>(&self, filter: Option<T::Filter>) -> Result<Vec<T>, Status> {
        T::list(&self.clients, self.params.rpc_timeout, filter).await
    }

    /// The list RPC of `T` by label selector, which must succeed.
    pub async fn list_by_labels<T: RuntimeKind>(
        &self,
        selector: HashMap<String, String>,
    ) -> anyhow::Result<Vec<T>> {
        let res = self.list::<T>(Some(T::filter("", selector))).await;
        expect_ok(res, &format!("{} by label", T::LIST))
    }

    /// The `T` with `id` as the list RPC by id reports it (`None` = not listed).
    pub async fn get<T: RuntimeKind>(&self, id: &str) -> anyhow::Result<Option<T>> {
        let by_id = self.list::<T>(Some(T::filter(id, HashMap::new()))).await;
        let list = match by_id {
            Err(st) if T::LIST_BY_LABEL_FALLBACK && st.code() != Code::DeadlineExceeded => {
                expect_ok(
                    self.list::<T>(Some(T::filter("", self.case_selector())))
                        .await,
                    &format!("{0} by label (after {0} by id failed)", T::LIST),
                )?
            }
            res => expect_ok(res, &format!("{} by id", T::LIST))?,
        };
        Ok(list.into_iter().find(|obj: &T| obj.id() == id))
    }

    /// Polls the list RPC of `T` by id until `pred` holds for the listed object (or `None`).
    pub async fn wait<T: RuntimeKind>(
        &self,
        id: &str,
        what: &str,
        pred: impl Fn(Option<&T>) -> bool,
    ) -> anyhow::Result<Option<T>> {
        self.wait_until(&format!("{} {id} {what}", T::NAME), || async {
            let obj = self.get::<T>(id).await?;
            if pred(obj.as_ref()) {
                Ok(Ok(obj))
            } else {
                Ok(Err(T::describe(obj.as_ref())))
            }
        })
        .await
    }

    /// The delete RPC of `T`, raw.
    pub async fn delete<T: RuntimeKind>(&self, id: &str) -> Result<(), Status> {
        T::delete(&self.clients, self.params.rpc_timeout, id.to_owned()).await
    }

    // ---------------------------------------------------------------- machine

    /// CreateMachine, raw (records the id).
    pub async fn try_create_machine(
        &self,
        m: machine::Machine,
    ) -> Result<machine::Machine, Status> {
        self.try_create(m).await
    }

    /// CreateMachine that must succeed and return an id.
    pub async fn create_machine(
        &self,
        m: machine::Machine,
    ) -> anyhow::Result<(String, machine::Machine)> {
        self.create(m).await
    }

    /// ListMachines with a filter, raw.
    pub async fn list_machines(
        &self,
        filter: Option<machine::MachineFilter>,
    ) -> Result<Vec<machine::Machine>, Status> {
        self.list(filter).await
    }

    /// ListMachines by label selector.
    pub async fn list_machines_by_labels(
        &self,
        selector: HashMap<String, String>,
    ) -> anyhow::Result<Vec<machine::Machine>> {
        self.list_by_labels(selector).await
    }

    /// The machine with `id` as ListMachines by id reports it (`None` = not listed).
    pub async fn get_machine(&self, id: &str) -> anyhow::Result<Option<machine::Machine>> {
        self.get(id).await
    }

    /// The machine with `id`, which must be listed.
    pub async fn must_machine(&self, id: &str) -> anyhow::Result<machine::Machine> {
        self.get_machine(id)
            .await?
            .with_context(|| format!("machine {id} is not listed by ListMachines by id"))
    }

    /// Polls ListMachines by id until `pred` holds for the listed machine (or `None`).
    pub async fn wait_machine(
        &self,
        id: &str,
        what: &str,
        pred: impl Fn(Option<&machine::Machine>) -> bool,
    ) -> anyhow::Result<Option<machine::Machine>> {
        self.wait(id, what, pred).await
    }

    /// Polls until the machine's status satisfies `pred`.
    pub async fn wait_machine_status(
        &self,
        id: &str,
        what: &str,
        pred: impl Fn(&machine::MachineStatus) -> bool,
    ) -> anyhow::Result<machine::Machine> {
        let m = self
            .wait_machine(id, what, |m| {
                m.and_then(|m| m.status.as_ref()).is_some_and(&pred)
            })
            .await?;
        m.context("machine vanished")
    }

    /// Polls until the machine is no longer listed.
    pub async fn wait_machine_gone(&self, id: &str) -> anyhow::Result<()> {
        self.wait_machine(id, "to be gone after DeleteMachine", |m| m.is_none())
            .await?;
        Ok(())
    }

    /// DeleteMachine, raw.
    pub async fn delete_machine(&self, id: &str) -> Result<(), Status> {
        self.delete::<machine::Machine>(id).await
    }

    // ---------------------------------------------------------------- volume

    /// CreateVolume, raw (records the id).
    pub async fn try_create_volume(&self, v: volume::Volume) -> Result<volume::Volume, Status> {
        self.try_create(v).await
    }

    /// CreateVolume that must succeed.
    pub async fn create_volume(
        &self,
        v: volume::Volume,
    ) -> anyhow::Result<(String, volume::Volume)> {
        self.create(v).await
    }

    /// ListVolumes, raw.
    pub async fn list_volumes(
        &self,
        filter: Option<volume::VolumeFilter>,
    ) -> Result<Vec<volume::Volume>, Status> {
        self.list(filter).await
    }

    /// The volume with `id` as ListVolumes by id reports it.
    pub async fn get_volume(&self, id: &str) -> anyhow::Result<Option<volume::Volume>> {
        self.get(id).await
    }

    /// Polls ListVolumes by id until `pred` holds.
    pub async fn wait_volume(
        &self,
        id: &str,
        what: &str,
        pred: impl Fn(Option<&volume::Volume>) -> bool,
    ) -> anyhow::Result<Option<volume::Volume>> {
        self.wait(id, what, pred).await
    }

    /// DeleteVolume, raw.
    pub async fn delete_volume(&self, id: &str) -> Result<(), Status> {
        self.delete::<volume::Volume>(id).await
    }

    /// ListVolumeSnapshots, raw.
    pub async fn list_snapshots(
        &self,
        filter: Option<volume::VolumeSnapshotFilter>,
    ) -> Result<Vec<volume::VolumeSnapshot>, Status> {
        self.list(filter).await
    }

    /// The snapshot with `id` as ListVolumeSnapshots by id reports it.
    pub async fn get_snapshot(&self, id: &str) -> anyhow::Result<Option<volume::VolumeSnapshot>> {
        self.get(id).await
    }

    /// Polls ListVolumeSnapshots by id until `pred` holds.
    pub async fn wait_snapshot(
        &self,
        id: &str,
        what: &str,
        pred: impl Fn(Option<&volume::VolumeSnapshot>) -> bool,
    ) -> anyhow::Result<Option<volume::VolumeSnapshot>> {
        self.wait(id, what, pred).await
    }

    /// DeleteVolumeSnapshot, raw.
    pub async fn delete_snapshot(&self, id: &str) -> Result<(), Status> {
        self.delete::<volume::VolumeSnapshot>(id).await
    }

    // ---------------------------------------------------------------- bucket

    /// CreateBucket, raw (records the id).
    pub async fn try_create_bucket(&self, b: bucket::Bucket) -> Result<bucket::Bucket, Status> {
        self.try_create(b).await
    }

    /// CreateBucket that must succeed.
    pub async fn create_bucket(
        &self,
        b: bucket::Bucket,
    ) -> anyhow::Result<(String, bucket::Bucket)> {
        self.create(b).await
    }

    /// ListBuckets, raw.
    pub async fn list_buckets(
        &self,
        filter: Option<bucket::BucketFilter>,
    ) -> Result<Vec<bucket::Bucket>, Status> {
        self.list(filter).await
    }

    /// The bucket with `id` as ListBuckets by id reports it.
    pub async fn get_bucket(&self, id: &str) -> anyhow::Result<Option<bucket::Bucket>> {
        self.get(id).await
    }

    /// Polls ListBuckets by id until `pred` holds.
    pub async fn wait_bucket(
        &self,
        id: &str,
        what: &str,
        pred: impl Fn(Option<&bucket::Bucket>) -> bool,
    ) -> anyhow::Result<Option<bucket::Bucket>> {
        self.wait(id, what, pred).await
    }

    /// DeleteBucket, raw.
    pub async fn delete_bucket(&self, id: &str) -> Result<(), Status> {
        self.delete::<bucket::Bucket>(id).await
    }

    // ---------------------------------------------------------------- specs

    /// The machine client, or a skip when the runtime has no machine endpoint.
    pub fn mc(&self) -> anyhow::Result<MachineRuntimeClient<Guarded>> {
        self.clients
            .machine
            .clone()
            .ok_or_else(|| Skip("no machine runtime endpoint".to_owned()).into())
    }

    /// The machine class to use, or a skip with the reason.
    pub fn machine_class(&self) -> anyhow::Result<String> {
        self.resolved
            .machine_class
            .clone()
            .map_err(|reason| Skip(reason).into())
    }

    /// A valid machine (class, power on) with the run labels and `extra` labels.
    pub fn machine_spec(&self, extra: &[(&str, &str)]) -> anyhow::Result<machine::Machine> {
        Ok(machine::Machine {
            metadata: Some(self.metadata(extra)),
            spec: Some(machine::MachineSpec {
                power: machine::Power::On as i32,
                class: self.machine_class()?,
                ..Default::default()
            }),
            status: None,
        })
    }

    /// A local-disk volume for AttachVolume.
    pub fn local_disk(&self, name: &str) -> machine::Volume {
        machine::Volume {
            name: name.to_owned(),
            device: "odb".to_owned(),
            local_disk: Some(machine::LocalDisk {
                size_bytes: self.params.volume_size,
                image: None,
            }),
            connection: None,
        }
    }

    /// A remote (connection) volume for AttachVolume.
    pub fn connection_volume(&self, name: &str, handle: &str) -> machine::Volume {
        machine::Volume {
            name: name.to_owned(),
            device: "odc".to_owned(),
            local_disk: None,
            connection: Some(machine::VolumeConnection {
                driver: "ceph".to_owned(),
                handle: handle.to_owned(),
                attributes: [("monitors".to_owned(), "10.0.0.1:6789".to_owned())]
                    .into_iter()
                    .collect(),
                secret_data: HashMap::new(),
                encryption_data: HashMap::new(),
                effective_storage_bytes: self.params.volume_size,
            }),
        }
    }

    /// A NIC for AttachNetworkInterface.
    pub fn nic(&self, name: &str) -> machine::NetworkInterface {
        machine::NetworkInterface {
            name: name.to_owned(),
            network_id: "conformance-net".to_owned(),
            ips: vec!["10.11.12.13".to_owned()],
            attributes: [("mac".to_owned(), "02:00:00:00:00:01".to_owned())]
                .into_iter()
                .collect(),
        }
    }

    /// Creates a default machine (class, power on, run labels) and returns its id.
    pub async fn new_machine(&self) -> anyhow::Result<String> {
        let spec = self.machine_spec(&[])?;
        Ok(self.create_machine(spec).await?.0)
    }

    /// Creates a default machine and waits until it is RUNNING.
    pub async fn running_machine(&self) -> anyhow::Result<String> {
        let id = self.new_machine().await?;
        self.wait_machine(&id, "to be RUNNING", |m| {
            m.and_then(|m| m.status.as_ref())
                .is_some_and(|s| s.state == machine::MachineState::MachineRunning as i32)
        })
        .await?;
        Ok(id)
    }

    /// The volume client, or a skip.
    pub fn vc(&self) -> anyhow::Result<VolumeRuntimeClient<Guarded>> {
        self.clients
            .volume
            .clone()
            .ok_or_else(|| Skip("no volume runtime endpoint".to_owned()).into())
    }

    /// The volume class, or a skip.
    pub fn volume_class(&self) -> anyhow::Result<String> {
        self.resolved
            .volume_class
            .clone()
            .map_err(|reason| Skip(reason).into())
    }

    /// A valid volume with run labels.
    pub fn volume_spec(&self, extra: &[(&str, &str)]) -> anyhow::Result<volume::Volume> {
        Ok(volume::Volume {
            metadata: Some(self.metadata(extra)),
            spec: Some(volume::VolumeSpec {
                class: self.volume_class()?,
                resources: Some(volume::VolumeResources {
                    storage_bytes: self.params.volume_size,
                }),
                ..Default::default()
            }),
            status: None,
        })
    }

    /// Creates a default volume and returns its id.
    pub async fn new_volume(&self) -> anyhow::Result<String> {
        let spec = self.volume_spec(&[])?;
        Ok(self.create_volume(spec).await?.0)
    }

    /// Creates a default volume and waits until it is AVAILABLE.
    pub async fn available_volume(&self) -> anyhow::Result<String> {
        let id = self.new_volume().await?;
        self.wait_volume(&id, "to be AVAILABLE", |v| {
            v.and_then(|v| v.status.as_ref())
                .is_some_and(|s| s.state == volume::VolumeState::VolumeAvailable as i32)
        })
        .await?;
        Ok(id)
    }

    /// ExpandVolume, raw.
    pub async fn expand_volume(&self, id: &str, size: i64) -> Result<(), Status> {
        let mut c = self.vc().map_err(|e| Status::unavailable(e.to_string()))?;
        self.rpc(c.expand_volume(volume::ExpandVolumeRequest {
            volume_id: id.to_owned(),
            resources: Some(volume::VolumeResources {
                storage_bytes: size,
            }),
        }))
        .await
        .map(|_| ())
    }

    /// CreateVolumeSnapshot of `volume_id`, raw (records the id).
    pub async fn try_create_snapshot(
        &self,
        volume_id: &str,
    ) -> Result<volume::VolumeSnapshot, Status> {
        self.try_create(volume::VolumeSnapshot {
            metadata: Some(self.metadata(&[])),
            spec: Some(volume::VolumeSnapshotSpec {
                volume_id: volume_id.to_owned(),
            }),
            status: None,
        })
        .await
    }

    /// The bucket client, or a skip.
    pub fn bc(&self) -> anyhow::Result<BucketRuntimeClient<Guarded>> {
        self.clients
            .bucket
            .clone()
            .ok_or_else(|| Skip("no bucket runtime endpoint".to_owned()).into())
    }

    /// The bucket class, or a skip.
    pub fn bucket_class(&self) -> anyhow::Result<String> {
        self.resolved
            .bucket_class
            .clone()
            .map_err(|reason| Skip(reason).into())
    }

    /// A valid bucket with run labels.
    pub fn bucket_spec(&self, extra: &[(&str, &str)]) -> anyhow::Result<bucket::Bucket> {
        Ok(bucket::Bucket {
            metadata: Some(self.metadata(extra)),
            spec: Some(bucket::BucketSpec {
                class: self.bucket_class()?,
            }),
            status: None,
        })
    }

    /// The reservation client, or a skip when the runtime has no reservations.
    pub async fn reservation_client(
        &self,
    ) -> anyhow::Result<iri_spec::reservation::ReservationClient> {
        let Some(mut c) = self.clients.reservation.clone() else {
            return Err(Skip("no machine runtime endpoint".to_owned()).into());
        };
        let supported = self
            .rpc(async { c.supported().await.map(tonic::Response::new) })
            .await
            .context("ListReservations")?;
        if !supported {
            return Err(Skip(
                "the runtime answers Unimplemented for irikit.reservation.v1alpha1.ReservationRuntime (no reservations)"
                    .to_owned(),
            )
            .into());
        }
        Ok(c)
    }

    // ---------------------------------------------------------------- polling

    /// Polls `probe` until it returns `Ok(Ok(v))`, within the state-transition budget.
    /// `Ok(Err(last))` describes the last observation for the timeout message. The interval
    /// starts at 1 ms and doubles up to [`Params::poll_interval`].
    pub async fn wait_until<T, F, Fut>(&self, what: &str, mut probe: F) -> anyhow::Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = anyhow::Result<Result<T, String>>>,
    {
        let start = tokio::time::Instant::now();
        let mut interval = Duration::from_millis(1);
        loop {
            let last = match probe().await? {
                Ok(v) => return Ok(v),
                Err(last) => last,
            };
            if start.elapsed() >= self.params.state_timeout {
                bail!(
                    "timed out after {:?} waiting for {what}; last seen: {last}",
                    self.params.state_timeout
                );
            }
            tokio::time::sleep(interval).await;
            interval = (interval * 2).min(self.params.poll_interval);
        }
    }
}
