//! Event objects written by the poollets.
//!
//! - [`record`]: the poollet's own Normal/Warning events about an object (one Event per object
//!   and reason; repeats bump `count`). Like client-go's event correlator, repeats of the same
//!   reason and message are written to the store at a falling rate ([`Correlator`]): a machine
//!   that waits on a missing Secret for a day costs a few dozen writes, not one every requeue.
//! - The runtime event mappers (reference §3.8, IronCore's `mem` and its volume twin): every
//!   period, [`run_windows`] hands a window `events_from_time = end of the last window` (the
//!   first window starts at process start) to `events_to_time = now`, in Unix seconds, to a
//!   `ListEvents` call; [`record_runtime_events`] records each IRI event whose involved object
//!   carries the uid/namespace/name labels of [`InvolvedLabels`] as an Event on that object:
//!   type (`Normal` when empty), reason, action (`Unknown` when empty) and message copied, the
//!   event time as first/last timestamp. Machines ([`InvolvedLabels::MACHINE`], source
//!   [`MACHINE_EVENT_SOURCE`]) and Volumes ([`InvolvedLabels::VOLUME`], source `volumepoollet`)
//!   share this code; only the `ListEvents` call differs.
//!
//! Dedupe (one scheme for both kinds): windows share their boundary second (runtimes filter with
//! `from <= t <= to`), a window is re-fetched after a failed call, and runtimes that ignore the
//! filter (the Go fakes) return everything every time. So each IRI event gets a deterministic
//! Event name, `<object>.<hash>`, where the hash is the first 16 hex characters of a SHA-256
//! over the object uid, the IRI object id, type, reason, action, message and event time; an
//! Event that already exists is not recorded again. Two identical events in the same second
//! therefore collapse into one. A restarted poollet starts its window at its own start (as
//! IronCore does), so events emitted while it was down are not recorded; the names keep a
//! re-delivered event from duplicating.

use std::{
    collections::HashMap,
    future::Future,
    sync::{Mutex, PoisonError},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use iri_spec::{event::v1alpha1 as event, keys};
use irikit_api::{
    Kind, Store, StoreExt,
    core::{Event, EventSource, ObjectReference},
    meta::ObjectMeta,
    store::{self, now_rfc3339},
};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::error::Result;

/// The component recorded as the source of mapped runtime machine events (IronCore's recorder
/// name).
pub const MACHINE_EVENT_SOURCE: &str = "machine-cluster-events";
/// IronCore's default period of the event mappers.
pub const DEFAULT_EVENT_RESYNC_PERIOD: Duration = Duration::from_secs(60);

/// The first gap between two writes of one repeating event ([`Correlator`]).
const REPEAT_FIRST_GAP: Duration = Duration::from_secs(10);
/// The longest gap between two writes of one repeating event.
const REPEAT_MAX_GAP: Duration = Duration::from_secs(5 * 60);
/// Entries the correlator keeps before it forgets the oldest half.
const CORRELATOR_ENTRIES: usize = 16_384;

/// What the correlator remembers of one (object, reason) pair.
#[derive(Debug)]
struct Repeat {
    message: String,
    written_at: Instant,
    gap: Duration,
    /// Occurrences not yet written (they are added to `count` by the next write).
    unwritten: u32,
}

/// Decides which [`record`] calls reach the store. The first occurrence of an (object,
/// reason) and any change of its message are written at once; identical repeats are written
/// at most once per gap, which doubles after each write from [`REPEAT_FIRST_GAP`] up to
/// [`REPEAT_MAX_GAP`], and carry the occurrences suppressed meanwhile in `count`. (client-go
/// does the same with a token bucket per object.)
#[derive(Debug, Default)]
pub(crate) struct Correlator {
    seen: Mutex<HashMap<(String, String), Repeat>>,
}

impl Correlator {
    /// `Some(occurrences to add to count)` when this occurrence is to be written now.
    fn admit(&self, uid: &str, reason: &str, message: &str, now: Instant) -> Option<u32> {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if seen.len() >= CORRELATOR_ENTRIES {
            let mut ages: Vec<Instant> = seen.values().map(|r| r.written_at).collect();
            ages.sort_unstable();
            let cut = ages[ages.len() / 2];
            seen.retain(|_, r| r.written_at > cut);
        }
        let key = (uid.to_string(), reason.to_string());
        match seen.get_mut(&key) {
            Some(r) if r.message == message && now.duration_since(r.written_at) < r.gap => {
                r.unwritten = r.unwritten.saturating_add(1);
                None
            }
            Some(r) => {
                let repeat = r.message == message;
                let occurrences = r.unwritten.saturating_add(1);
                r.gap = if repeat {
                    (r.gap * 2).min(REPEAT_MAX_GAP)
                } else {
                    REPEAT_FIRST_GAP
                };
                message.clone_into(&mut r.message);
                r.written_at = now;
                r.unwritten = 0;
                Some(occurrences)
            }
            None => {
                seen.insert(
                    key,
                    Repeat {
                        message: message.to_string(),
                        written_at: now,
                        gap: REPEAT_FIRST_GAP,
                        unwritten: 0,
                    },
                );
                Some(1)
            }
        }
    }
}

/// The process's correlator (one per poollet process, as client-go keeps one per recorder).
static CORRELATOR: std::sync::LazyLock<Correlator> = std::sync::LazyLock::new(Correlator::default);

/// Records a poollet Event about `involved` (in its namespace). Repeats of the same reason
/// update one Event (count, lastTimestamp, message) instead of creating new ones, and identical
/// repeats reach the store at a falling rate ([`Correlator`]); an Event of an earlier object
/// with the same name is replaced. Failures are logged only.
pub(crate) async fn record(
    store: &dyn Store,
    involved: ObjectReference,
    type_: &str,
    reason: &str,
    message: &str,
    component: &str,
) {
    let Some(occurrences) = CORRELATOR.admit(&involved.uid, reason, message, Instant::now()) else {
        return;
    };
    let name = format!("{}.{}", involved.name, reason.to_ascii_lowercase());
    let namespace = involved.namespace.clone();
    let now = now_rfc3339();
    let fresh = || Event {
        metadata: ObjectMeta::namespaced(namespace.clone(), name.clone()),
        involved_object: involved.clone(),
        reason: reason.to_string(),
        message: message.to_string(),
        type_: type_.to_string(),
        source: Some(EventSource {
            component: component.to_string(),
        }),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now.clone()),
        count: i32::try_from(occurrences).unwrap_or(i32::MAX),
        ..Event::default()
    };
    let res = match store.get_typed::<Event>(&namespace, &name).await {
        Ok(mut existing) if existing.involved_object.uid == involved.uid => {
            existing.count = existing
                .count
                .saturating_add(i32::try_from(occurrences).unwrap_or(i32::MAX));
            existing.last_timestamp = Some(now.clone());
            message.clone_into(&mut existing.message);
            store.update_typed(existing).await.map(drop)
        }
        Ok(stale) => {
            let _ = store
                .delete(Kind::Event, &namespace, &stale.metadata.name, None)
                .await;
            store.create_typed(fresh()).await.map(drop)
        }
        Err(store::Error::NotFound { .. }) => store.create_typed(fresh()).await.map(drop),
        Err(err) => Err(err),
    };
    if let Err(err) = res {
        debug!(error = %err, reason, "recording an event failed");
    }
}

/// The label keys that identify the involved object of a runtime event.
#[derive(Debug, Clone, Copy)]
pub struct InvolvedLabels {
    /// The ironcore kind of the involved object.
    pub kind: Kind,
    /// UID label key.
    pub uid: &'static str,
    /// Namespace label key.
    pub namespace: &'static str,
    /// Name label key.
    pub name: &'static str,
}

impl InvolvedLabels {
    /// The machinepoollet's machine labels.
    pub const MACHINE: Self = Self {
        kind: Kind::Machine,
        uid: keys::MACHINE_UID_LABEL,
        namespace: keys::MACHINE_NAMESPACE_LABEL,
        name: keys::MACHINE_NAME_LABEL,
    };
    /// The volumepoollet's volume labels.
    pub const VOLUME: Self = Self {
        kind: Kind::Volume,
        uid: keys::VOLUMEPOOLLET_VOLUME_UID_LABEL,
        namespace: keys::VOLUMEPOOLLET_VOLUME_NAMESPACE_LABEL,
        name: keys::VOLUMEPOOLLET_VOLUME_NAME_LABEL,
    };
}

/// Now in Unix seconds.
pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn rfc3339_of(unix_seconds: i64) -> String {
    let secs = u64::try_from(unix_seconds.max(0)).unwrap_or(0);
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

fn or_default<'a>(value: &'a str, default: &'a str) -> &'a str {
    if value.is_empty() { default } else { value }
}

/// The Event for an IRI event, or `None` when its involved object does not carry all three
/// `labels` (not an object of this poollet; skipped, as in IronCore).
pub fn map_event(ev: &event::Event, labels: InvolvedLabels, component: &str) -> Option<Event> {
    let spec = ev.spec.as_ref()?;
    let md = spec.involved_object_meta.as_ref()?;
    let get = |key: &str| md.labels.get(key).filter(|v| !v.is_empty());
    let uid = get(labels.uid)?;
    let namespace = get(labels.namespace)?;
    let name = get(labels.name)?;
    let type_ = or_default(&spec.r#type, "Normal");
    let action = or_default(&spec.action, "Unknown");
    let mut hasher = Sha256::new();
    for part in [
        uid.as_str(),
        &md.id,
        type_,
        &spec.reason,
        action,
        &spec.message,
    ] {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    hasher.update(spec.event_time.to_le_bytes());
    let digest = hex(&hasher.finalize());
    let at = rfc3339_of(spec.event_time);
    Some(Event {
        metadata: ObjectMeta::namespaced(namespace.clone(), format!("{name}.{}", &digest[..16])),
        involved_object: ObjectReference {
            api_version: labels.kind.api_version().to_string(),
            kind: labels.kind.as_str().to_string(),
            namespace: namespace.clone(),
            name: name.clone(),
            uid: uid.clone(),
            resource_version: String::new(),
        },
        reason: spec.reason.clone(),
        message: spec.message.clone(),
        type_: type_.to_string(),
        source: Some(EventSource {
            component: component.to_string(),
        }),
        first_timestamp: Some(at.clone()),
        last_timestamp: Some(at),
        count: 1,
        action: action.to_string(),
        ..Event::default()
    })
}

/// Writes one Event object per runtime event that [`map_event`] maps; an Event that already
/// exists is skipped. Returns how many were new; a store failure fails the call, so the
/// window is fetched again at the next tick.
pub async fn record_runtime_events(
    store: &dyn Store,
    events: &[event::Event],
    labels: InvolvedLabels,
    component: &str,
) -> Result<usize> {
    let mut created = 0;
    for mapped in events
        .iter()
        .filter_map(|ev| map_event(ev, labels, component))
    {
        match store.create_typed(mapped).await {
            Ok(_) => created += 1,
            Err(store::Error::AlreadyExists { .. }) => {}
            Err(err) => return Err(err.into()),
        }
    }
    debug!(
        kind = labels.kind.as_str(),
        listed = events.len(),
        created,
        "runtime events mapped"
    );
    Ok(created)
}

/// Calls `window(from, to)` every `period` until `token` is cancelled. The first window starts
/// at the call; the next starts where the last successful one ended (a failed window is
/// retried from the same start at the next tick).
pub async fn run_windows<F, Fut>(period: Duration, token: CancellationToken, mut window: F)
where
    F: FnMut(i64, i64) -> Fut,
    Fut: Future<Output = Result<usize>>,
{
    let mut from = unix_now();
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = token.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let to = unix_now();
        let res = tokio::select! {
            () = token.cancelled() => return,
            res = window(from, to) => res,
        };
        match res {
            Ok(_) => from = to,
            Err(err) => warn!(error = %err, from, to, "mapping runtime events failed"),
        }
    }
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// The first 63 hex characters of sha256(`text`) (IronCore's name for derived objects).
pub(crate) fn sha256_name(text: &str) -> String {
    let mut name = hex(&Sha256::digest(text.as_bytes()));
    name.truncate(63);
    name
}

#[cfg(test)]
mod tests {
    use iri_spec::meta::v1alpha1 as meta;

    use super::*;

    #[test]
    fn repeats_are_written_at_a_falling_rate_and_a_new_message_at_once() {
        let c = Correlator::default();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(
            c.admit("u", "Waiting", "no secret", at(0)),
            Some(1),
            "first"
        );
        // Requeues every 2 s: suppressed until the first gap (10 s) has passed.
        for s in [2, 4, 6, 8] {
            assert_eq!(
                c.admit("u", "Waiting", "no secret", at(s)),
                None,
                "at {s} s"
            );
        }
        assert_eq!(
            c.admit("u", "Waiting", "no secret", at(10)),
            Some(5),
            "written with the 4 suppressed occurrences"
        );
        // The gap doubled to 20 s.
        assert_eq!(c.admit("u", "Waiting", "no secret", at(28)), None);
        assert_eq!(c.admit("u", "Waiting", "no secret", at(30)), Some(2));
        // A changed message is news: written at once, and the gap starts over.
        assert_eq!(c.admit("u", "Waiting", "no class", at(31)), Some(1));
        assert_eq!(c.admit("u", "Waiting", "no class", at(40)), None);
        assert_eq!(c.admit("u", "Waiting", "no class", at(41)), Some(2));
        // Other objects and other reasons are counted apart.
        assert_eq!(c.admit("v", "Waiting", "no class", at(41)), Some(1));
        assert_eq!(c.admit("u", "Created", "ok", at(41)), Some(1));
    }

    #[test]
    fn a_day_of_requeues_every_two_seconds_costs_few_writes() {
        let c = Correlator::default();
        let t0 = Instant::now();
        let mut writes = 0;
        let mut occurrences = 0;
        for i in 0..(24 * 3600 / 2) {
            if let Some(n) = c.admit("u", "Waiting", "no secret", t0 + Duration::from_secs(i * 2)) {
                writes += 1;
                occurrences += n;
            }
        }
        // 10 + 20 + ... + 160 s, then one write every 5 min: about 300 writes, not 43,200.
        assert!(writes < 300, "{writes} writes");
        assert!(
            occurrences > 43_000,
            "counts stay close to the truth: {occurrences}"
        );
    }

    #[test]
    fn sha256_name_is_the_first_63_hex_chars() {
        // sha256("abc") = ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad
        assert_eq!(
            sha256_name("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015a"
        );
    }

    fn iri_event(labels: &[(&str, &str)], action: &str) -> event::Event {
        event::Event {
            spec: Some(event::EventSpec {
                involved_object_meta: Some(meta::ObjectMetadata {
                    id: "m-1".into(),
                    labels: labels
                        .iter()
                        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                        .collect(),
                    ..meta::ObjectMetadata::default()
                }),
                reason: "Started".into(),
                message: "vm started".into(),
                r#type: "Warning".into(),
                event_time: 1_700_000_000,
                action: action.into(),
            }),
        }
    }

    const LABELS: &[(&str, &str)] = &[
        (keys::MACHINE_UID_LABEL, "uid-1"),
        (keys::MACHINE_NAMESPACE_LABEL, "ns"),
        (keys::MACHINE_NAME_LABEL, "vm"),
    ];

    #[test]
    fn fields_are_copied_and_an_empty_action_is_unknown() {
        let ev = machine_event(&iri_event(LABELS, "")).unwrap();
        assert_eq!(ev.metadata.namespace, "ns");
        assert!(ev.metadata.name.starts_with("vm."), "{}", ev.metadata.name);
        assert_eq!(
            (
                ev.involved_object.kind.as_str(),
                ev.involved_object.name.as_str()
            ),
            ("Machine", "vm")
        );
        assert_eq!(ev.involved_object.uid, "uid-1");
        assert_eq!(
            (ev.type_.as_str(), ev.reason.as_str(), ev.message.as_str()),
            ("Warning", "Started", "vm started")
        );
        assert_eq!(ev.action, "Unknown");
        assert_eq!(ev.first_timestamp.as_deref(), Some("2023-11-14T22:13:20Z"));
        assert_eq!(
            machine_event(&iri_event(LABELS, "Boot")).unwrap().action,
            "Boot"
        );
    }

    #[test]
    fn names_are_stable_per_event_and_differ_between_events() {
        let a = machine_event(&iri_event(LABELS, "Boot")).unwrap();
        let again = machine_event(&iri_event(LABELS, "Boot")).unwrap();
        let other = machine_event(&iri_event(LABELS, "Reboot")).unwrap();
        assert_eq!(a.metadata.name, again.metadata.name);
        assert_ne!(a.metadata.name, other.metadata.name);
    }

    #[test]
    fn events_without_machine_labels_are_skipped() {
        assert!(machine_event(&iri_event(&[], "")).is_none());
        assert!(machine_event(&iri_event(&LABELS[..2], "")).is_none());
        assert!(machine_event(&event::Event { spec: None }).is_none());
    }

    fn machine_event(ev: &event::Event) -> Option<Event> {
        map_event(ev, InvolvedLabels::MACHINE, MACHINE_EVENT_SOURCE)
    }

    #[test]
    fn volume_events_name_the_volume_and_need_volume_labels() {
        let labels = [
            (keys::VOLUMEPOOLLET_VOLUME_UID_LABEL, "uid-v"),
            (keys::VOLUMEPOOLLET_VOLUME_NAMESPACE_LABEL, "ns"),
            (keys::VOLUMEPOOLLET_VOLUME_NAME_LABEL, "vol"),
        ];
        let ev = map_event(
            &iri_event(&labels, ""),
            InvolvedLabels::VOLUME,
            "volumepoollet",
        )
        .unwrap();
        assert_eq!(ev.involved_object.kind, "Volume");
        assert!(ev.metadata.name.starts_with("vol."), "{}", ev.metadata.name);
        assert!(
            map_event(
                &iri_event(LABELS, ""),
                InvolvedLabels::VOLUME,
                "volumepoollet"
            )
            .is_none()
        );
        assert!(machine_event(&iri_event(&labels, "")).is_none());
    }
}
