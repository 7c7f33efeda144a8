//! The state shared by the three services of one mock: configuration, stores, call log, faults.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    fmt,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use iri_spec::{event::v1alpha1 as event, meta::v1alpha1 as meta};
use prost::Message as _;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request, Response, Status};

use crate::{
    Method, Mutant,
    calls::{Call, CallLog, Recorded, RequestMessage},
    classes::{BucketClassConfig, MachineClassConfig, VolumeClassConfig},
    clock::{Clock, IdGen},
    conn::ConnHandle,
    fault::{Effect, FaultPlan},
    lock,
    mutant::MutantSet,
};

/// How long the state machine takes for each kind of transition. All zero by default.
///
/// A transition with delay `d`, caused by a call at time `t`, becomes visible to the first call
/// that *starts* at or after `t + d` — never in the response of the call that caused it. With
/// zero delays a create therefore returns PENDING and the next call sees RUNNING/AVAILABLE/READY,
/// and a delete returns OK and the next call no longer sees the object. Delays use tokio's clock,
/// so tests can `tokio::time::pause()` and `advance()` through them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delays {
    /// PENDING → RUNNING (machines), → AVAILABLE (volumes, buckets), → READY (snapshots).
    pub provision: Duration,
    /// A spec change being applied: volume/NIC status ATTACHED, `observed_generation` caught up,
    /// volume expansion reflected in status.
    pub apply: Duration,
    /// A power change reaching the machine state.
    pub power: Duration,
    /// A deleted object staying listed (deleted_at set, TERMINATING) before it is gone.
    pub terminate: Duration,
}

impl Delays {
    /// The same delay for every transition.
    pub fn uniform(d: Duration) -> Self {
        Delays {
            provision: d,
            apply: d,
            power: d,
            terminate: d,
        }
    }
}

/// Static configuration of one mock instance.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) machine_classes: Vec<MachineClassConfig>,
    pub(crate) volume_classes: Vec<VolumeClassConfig>,
    pub(crate) bucket_classes: Vec<BucketClassConfig>,
    pub(crate) delays: Delays,
    pub(crate) runtime_name: String,
    pub(crate) runtime_version: String,
    pub(crate) power_off_stopped: bool,
    pub(crate) exec_url_prefix: Option<String>,
    pub(crate) event_capacity: usize,
}

/// Pending transitions of one object.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Timers {
    pub(crate) ready: Option<Instant>,
    pub(crate) apply: Option<Instant>,
    pub(crate) power: Option<Instant>,
    pub(crate) gone: Option<Instant>,
    /// Delete was called (kept separately because mutants may hide `deleted_at`).
    pub(crate) deleting: bool,
}

/// One stored object, kept prost-encoded: a poollet-shaped machine takes ~0.5 KiB encoded
/// against ~3 KiB as a decoded message with its dozens of small heap allocations.
#[derive(Debug)]
struct Packed {
    bytes: Box<[u8]>,
    timers: Timers,
    /// The object's labels, kept beside the bytes so label-filtered lists decode only matches.
    labels: HashMap<String, String>,
}

/// A decoded object with its timers; written back to the store when dropped.
pub(crate) struct Slot<'a, T: prost::Message + Default> {
    pub(crate) obj: T,
    pub(crate) timers: Timers,
    packed: &'a mut Packed,
}

impl<T: prost::Message + Default> Drop for Slot<'_, T> {
    fn drop(&mut self) {
        self.packed.bytes = self.obj.encode_to_vec().into_boxed_slice();
        self.packed.timers = self.timers;
        self.packed.labels = decode_meta(&self.packed.bytes).labels;
    }
}

/// Every stored IRI object has its metadata at field 1; decoding only that skips the rest.
#[derive(Clone, PartialEq, prost::Message)]
struct MetaOnly {
    #[prost(message, optional, tag = "1")]
    metadata: Option<meta::ObjectMetadata>,
}

fn decode_meta(bytes: &[u8]) -> meta::ObjectMetadata {
    MetaOnly::decode(bytes)
        .ok()
        .and_then(|m| m.metadata)
        .unwrap_or_default()
}

fn decode<T: prost::Message + Default>(bytes: &[u8]) -> T {
    // The bytes were produced by `encode_to_vec` of the same type, so decoding cannot fail;
    // fall back to a default object rather than panic.
    T::decode(bytes).unwrap_or_default()
}

/// Objects of one kind in creation order, with an id index and a timer queue.
#[derive(Debug)]
pub(crate) struct Store<T> {
    objects: BTreeMap<u64, Packed>,
    index: HashMap<Box<str>, u64>,
    next_seq: u64,
    queue: BTreeSet<(Instant, u64)>,
    _kind: std::marker::PhantomData<fn() -> T>,
}

impl<T> Default for Store<T> {
    fn default() -> Self {
        Store {
            objects: BTreeMap::new(),
            index: HashMap::new(),
            next_seq: 0,
            queue: BTreeSet::new(),
            _kind: std::marker::PhantomData,
        }
    }
}

impl<T: prost::Message + Default> Store<T> {
    /// Inserts under `id` with pending `timers`, replacing an object with the same id.
    pub(crate) fn insert(&mut self, id: &str, obj: &T, timers: Timers) {
        if let Some(old) = self.index.remove(id) {
            self.objects.remove(&old);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.index.insert(id.into(), seq);
        self.objects.insert(seq, {
            let bytes = obj.encode_to_vec().into_boxed_slice();
            Packed {
                labels: decode_meta(&bytes).labels,
                bytes,
                timers,
            }
        });
        for at in [timers.ready, timers.apply, timers.power, timers.gone]
            .into_iter()
            .flatten()
        {
            self.queue.insert((at, seq));
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.objects.len()
    }

    pub(crate) fn contains(&self, id: &str) -> bool {
        self.index.contains_key(id)
    }

    /// A decoded copy of object `id`.
    pub(crate) fn get(&self, id: &str) -> Option<T> {
        let seq = self.index.get(id)?;
        self.objects.get(seq).map(|p| decode(&p.bytes))
    }

    /// Object `id` for modification (re-encoded when the returned slot drops).
    pub(crate) fn get_mut(&mut self, id: &str) -> Option<Slot<'_, T>> {
        let seq = *self.index.get(id)?;
        self.slot_by_seq_mut(seq)
    }

    pub(crate) fn slot_by_seq_mut(&mut self, seq: u64) -> Option<Slot<'_, T>> {
        let packed = self.objects.get_mut(&seq)?;
        Some(Slot {
            obj: decode(&packed.bytes),
            timers: packed.timers,
            packed,
        })
    }

    pub(crate) fn timers(&self, id: &str) -> Option<Timers> {
        let seq = self.index.get(id)?;
        self.objects.get(seq).map(|p| p.timers)
    }

    /// Removes object `id` and returns its metadata.
    pub(crate) fn remove(&mut self, id: &str) -> Option<meta::ObjectMetadata> {
        let seq = self.index.remove(id)?;
        self.objects.remove(&seq).map(|p| decode_meta(&p.bytes))
    }

    /// Decoded copies of the objects whose labels match `selector`, in creation order. Only
    /// the matches are decoded (a label-filtered list of one machine among thousands stays
    /// cheap).
    pub(crate) fn iter_labelled<'a>(
        &'a self,
        selector: &'a HashMap<String, String>,
    ) -> impl Iterator<Item = T> + 'a {
        self.objects
            .values()
            .filter(move |p| iri_spec::selector::matches(selector, &p.labels))
            .map(|p| decode(&p.bytes))
    }

    /// Decoded copies of every object, in creation order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = T> + '_ {
        self.objects.values().map(|p| decode(&p.bytes))
    }

    /// Queues a wake-up for `id` at `at`.
    pub(crate) fn wake_at(&mut self, id: &str, at: Instant) {
        if let Some(seq) = self.index.get(id) {
            self.queue.insert((at, *seq));
        }
    }

    /// Pops the objects with a wake-up at or before `now` (deduplicated, in order).
    pub(crate) fn due(&mut self, now: Instant) -> Vec<u64> {
        let mut due = Vec::new();
        while let Some(first) = self.queue.first().copied() {
            if first.0 > now {
                break;
            }
            self.queue.pop_first();
            if !due.contains(&first.1) {
                due.push(first.1);
            }
        }
        due
    }

    pub(crate) fn seq_of(&self, id: &str) -> Option<u64> {
        self.index.get(id).copied()
    }

    pub(crate) fn timers_by_seq(&self, seq: u64) -> Option<Timers> {
        self.objects.get(&seq).map(|p| p.timers)
    }

    /// Removes the object with sequence number `seq` and returns its metadata.
    pub(crate) fn remove_seq(&mut self, seq: u64) -> Option<meta::ObjectMetadata> {
        let packed = self.objects.remove(&seq)?;
        let md = decode_meta(&packed.bytes);
        if self.index.get(md.id.as_str()) == Some(&seq) {
            self.index.remove(md.id.as_str());
        }
        Some(md)
    }
}

/// A bounded ring of events.
#[derive(Debug)]
pub(crate) struct EventLog {
    events: VecDeque<event::Event>,
    capacity: usize,
}

impl EventLog {
    pub(crate) fn new(capacity: usize) -> Self {
        EventLog {
            events: VecDeque::new(),
            capacity,
        }
    }

    pub(crate) fn push(&mut self, ev: event::Event) {
        if self.capacity == 0 {
            return;
        }
        if self.events.len() >= self.capacity {
            self.events.pop_front();
        }
        self.events.push_back(ev);
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &event::Event> {
        self.events.iter()
    }
}

/// The filter fields common to the three `EventFilter` messages.
#[derive(Debug, Default, Clone)]
pub(crate) struct EventQuery {
    pub(crate) id: String,
    pub(crate) labels: HashMap<String, String>,
    pub(crate) from: i64,
    pub(crate) to: i64,
}

impl Core {
    /// Builds an event about the object with metadata `meta`.
    pub(crate) fn event(
        &self,
        meta: &meta::ObjectMetadata,
        kind: &str,
        reason: &str,
        action: &str,
        message: String,
    ) -> event::Event {
        let mut involved = meta.clone();
        if self.has(Mutant::EventLabelsMissing) {
            involved.labels.clear();
        }
        let event_time = if self.has(Mutant::EventTimeNanos) {
            self.clock.unix_nanos()
        } else {
            self.clock.unix_secs()
        };
        let _ = kind;
        event::Event {
            spec: Some(event::EventSpec {
                involved_object_meta: Some(involved),
                reason: reason.to_owned(),
                message,
                r#type: "Normal".to_owned(),
                event_time,
                action: if self.has(Mutant::EventActionMissing) {
                    String::new()
                } else {
                    action.to_owned()
                },
            }),
        }
    }

    /// Filters `log` as providers do: id, labels, and the time window only when both bounds > 0.
    pub(crate) fn filter_events(&self, log: &EventLog, q: &EventQuery) -> Vec<event::Event> {
        if self.has(Mutant::NoEvents) {
            return Vec::new();
        }
        log.iter()
            .filter(|ev| {
                let Some(spec) = ev.spec.as_ref() else {
                    return false;
                };
                let meta = spec.involved_object_meta.as_ref();
                let id_ok = q.id.is_empty()
                    || self.has(Mutant::EventIdFilterIgnored)
                    || meta.is_some_and(|m| m.id == q.id);
                let labels_ok = self.has(Mutant::EventLabelFilterIgnored)
                    || meta.map_or(q.labels.is_empty(), |m| {
                        iri_spec::selector::matches(&q.labels, &m.labels)
                    });
                let time_ok = self.has(Mutant::EventFilterIgnored)
                    || !(q.from > 0 && q.to > 0)
                    || (spec.event_time >= q.from && spec.event_time <= q.to);
                id_ok && labels_ok && time_ok
            })
            .cloned()
            .collect()
    }
}

/// Everything one mock instance shares between its services and handles.
pub(crate) struct Core {
    pub(crate) config: Config,
    pub(crate) clock: Clock,
    pub(crate) started: Instant,
    pub(crate) mutants: MutantSet,
    pub(crate) calls: Mutex<CallLog>,
    pub(crate) faults: Mutex<FaultPlan>,
    pub(crate) faults_on: AtomicBool,
    pub(crate) ids: Mutex<IdGen>,
    pub(crate) machines: Mutex<crate::machine::MachineStore>,
    pub(crate) volumes: Mutex<crate::volume::VolumeStore>,
    pub(crate) buckets: Mutex<crate::bucket::BucketStore>,
    pub(crate) shutdown: CancellationToken,
}

impl fmt::Debug for Core {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Core")
            .field("config", &self.config)
            .field("mutants", &self.mutants.active())
            .finish_non_exhaustive()
    }
}

/// An RPC in flight: records its outcome when finished, or `Cancelled` when dropped unfinished.
pub(crate) struct CallGuard<'a> {
    core: &'a Core,
    seq: u64,
    method: Method,
    recorded: Arc<Recorded>,
    fault: Option<Effect>,
    done: bool,
}

impl CallGuard<'_> {
    fn finish_with(&mut self, code: Code, message: &str) {
        if self.done {
            return;
        }
        self.done = true;
        lock(&self.core.calls).finish(
            self.seq,
            self.method,
            &self.recorded,
            code,
            message,
            self.fault.clone(),
        );
    }

    /// Records the outcome and turns it into the RPC's return value.
    pub(crate) fn finish<T>(mut self, res: Result<T, Status>) -> Result<Response<T>, Status> {
        match &res {
            Ok(_) => self.finish_with(Code::Ok, ""),
            Err(status) => {
                tracing::debug!(rpc = self.method.rpc(), code = ?status.code(), message = status.message(), "rpc failed");
                self.finish_with(status.code(), status.message());
            }
        }
        res.map(Response::new)
    }
}

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        self.finish_with(Code::Cancelled, "call cancelled before it finished");
    }
}

impl Core {
    pub(crate) fn has(&self, m: Mutant) -> bool {
        self.mutants.has(m)
    }

    pub(crate) fn new_id(&self) -> String {
        lock(&self.ids).next_id()
    }

    /// Starts an RPC: records it, applies an injected fault, and hands back the message.
    pub(crate) async fn begin<T>(
        &self,
        method: Method,
        req: Request<T>,
    ) -> Result<(CallGuard<'_>, T), Status>
    where
        T: RequestMessage + prost::Message + Default,
    {
        let conn = req.extensions().get::<ConnHandle>().cloned();
        let msg = req.into_inner();
        let recorded = Recorded::new(&msg);
        let fault = if self.faults_on.load(Ordering::Relaxed) {
            lock(&self.faults).decide(method)
        } else {
            None
        };
        let seq = lock(&self.calls).push(Call {
            seq: 0,
            method,
            recorded: recorded.clone(),
            code: None,
            message: String::new(),
            fault: fault.clone(),
            at: self.clock.wall(),
            elapsed: Instant::now().saturating_duration_since(self.started),
        });
        let mut guard = CallGuard {
            core: self,
            seq,
            method,
            recorded,
            fault: fault.clone(),
            done: false,
        };
        match fault {
            None => {}
            Some(Effect::Delay(d)) => {
                tracing::debug!(rpc = method.rpc(), delay = ?d, "fault: delay");
                tokio::select! {
                    () = tokio::time::sleep(d) => {}
                    () = self.shutdown.cancelled() => {
                        guard.finish_with(Code::Unavailable, "mock runtime shutting down");
                        return Err(Status::unavailable("mock runtime shutting down"));
                    }
                }
            }
            Some(Effect::Error { code, message }) => {
                tracing::debug!(rpc = method.rpc(), ?code, "fault: error");
                guard.finish_with(code, &message);
                return Err(Status::new(code, message));
            }
            Some(Effect::Hang) => {
                tracing::debug!(rpc = method.rpc(), "fault: hang");
                self.shutdown.cancelled().await;
                guard.finish_with(Code::Unavailable, "mock runtime shutting down");
                return Err(Status::unavailable("mock runtime shutting down"));
            }
            Some(Effect::DropConnection) => {
                tracing::debug!(rpc = method.rpc(), "fault: drop connection");
                if let Some(conn) = conn {
                    conn.kill();
                }
                let message = "connection dropped by fault injection";
                guard.finish_with(Code::Unavailable, message);
                return Err(Status::unavailable(message));
            }
        }
        Ok((guard, msg))
    }

    pub(crate) fn machine_class(&self, name: &str) -> Option<&MachineClassConfig> {
        self.config.machine_classes.iter().find(|c| c.name == name)
    }

    pub(crate) fn volume_class(&self, name: &str) -> Option<&VolumeClassConfig> {
        self.config.volume_classes.iter().find(|c| c.name == name)
    }

    pub(crate) fn bucket_class(&self, name: &str) -> Option<&BucketClassConfig> {
        self.config.bucket_classes.iter().find(|c| c.name == name)
    }

    pub(crate) fn version(&self) -> (String, String) {
        if self.has(Mutant::VersionEmpty) {
            (String::new(), String::new())
        } else {
            (
                self.config.runtime_name.clone(),
                self.config.runtime_version.clone(),
            )
        }
    }

    /// `created_at` for a new object, honouring the timestamp mutants.
    pub(crate) fn created_at(&self, zero: bool, seconds: bool) -> i64 {
        if zero {
            0
        } else if seconds {
            self.clock.unix_secs()
        } else {
            self.clock.unix_nanos()
        }
    }
}

/// An `InvalidArgument` status.
pub(crate) fn invalid(msg: impl Into<String>) -> Status {
    Status::invalid_argument(msg.into())
}

/// A `NotFound` status.
pub(crate) fn not_found(kind: &str, id: &str) -> Status {
    Status::not_found(format!("{kind} {id:?} not found"))
}

pub(crate) fn labels_match(
    selector: &HashMap<String, String>,
    m: Option<&meta::ObjectMetadata>,
) -> bool {
    selector.is_empty() || m.is_some_and(|m| iri_spec::selector::matches(selector, &m.labels))
}
