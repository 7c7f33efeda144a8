//! The machine event mapper (reference §3.8, IronCore's `mem`): every period it calls
//! `ListEvents` with the window `events_from_time = end of the last window` (the first window
//! starts at process start) to `events_to_time = now`, in Unix seconds, and records each IRI
//! event whose involved object carries the machine-uid/namespace/name labels as an Event on
//! that Machine: type, reason, action (`Unknown` when empty) and message copied, the event time
//! as first/last timestamp, source `machine-cluster-events`.
//!
//! Dedupe: windows share their boundary second (runtimes filter with `from <= t <= to`), a
//! window can be re-fetched after a failed call, and runtimes that ignore the filter (the Go
//! fakes) return everything every time. So each IRI event gets a deterministic Event name,
//! `<machine>.<hash>` with a hash over the machine uid, the IRI object id, type, reason,
//! action, message and event time; an Event that already exists is not recorded again. Two
//! identical events in the same second therefore collapse into one. A restarted poollet starts
//! its window at its own start (as IronCore does), so events emitted while it was down are not
//! recorded; the names keep a re-delivered event from duplicating.

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use iri_spec::{
    event::v1alpha1 as event,
    keys,
    machine::v1alpha1::{self as machine, machine_runtime_client::MachineRuntimeClient},
};
use irikit_api::{
    Kind, Store, StoreExt, compute,
    core::{Event, EventSource, ObjectReference},
    meta::ObjectMeta,
    store,
};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tracing::{debug, warn};

use crate::error::{Result, rpc};

/// The component recorded as the source of mapped runtime events (IronCore's recorder name).
pub const EVENT_SOURCE: &str = "machine-cluster-events";
/// IronCore's default period of the event mapper.
pub const DEFAULT_EVENT_RESYNC_PERIOD: Duration = Duration::from_secs(60);

/// Now in Unix seconds.
fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn rfc3339(unix_seconds: i64) -> String {
    let at = UNIX_EPOCH + Duration::from_secs(u64::try_from(unix_seconds).unwrap_or(0));
    humantime::format_rfc3339_seconds(at).to_string()
}

/// 64-bit FNV-1a over the parts, each followed by a 0 byte. Unlike `DefaultHasher` it is
/// stable across Rust releases, so a new poollet build names an event as the old one did.
fn fnv1a(parts: &[&str]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in parts
        .iter()
        .flat_map(|part| part.bytes().chain(std::iter::once(0)))
    {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// The Event for an IRI event, or `None` when it is not about a machine of this poollet (no
/// machine labels).
pub fn map_event(ev: &event::Event) -> Option<Event> {
    let spec = ev.spec.as_ref()?;
    let involved = spec.involved_object_meta.as_ref()?;
    let label = |key: &str| involved.labels.get(key).filter(|v| !v.is_empty());
    let uid = label(keys::MACHINE_UID_LABEL)?;
    let namespace = label(keys::MACHINE_NAMESPACE_LABEL)?;
    let name = label(keys::MACHINE_NAME_LABEL)?;
    let action = if spec.action.is_empty() {
        "Unknown"
    } else {
        spec.action.as_str()
    };
    let time = spec.event_time.to_string();
    let hash = fnv1a(&[
        uid,
        &involved.id,
        &spec.r#type,
        &spec.reason,
        action,
        &spec.message,
        &time,
    ]);
    let at = rfc3339(spec.event_time);
    Some(Event {
        metadata: ObjectMeta::namespaced(namespace.clone(), format!("{name}.{hash:016x}")),
        involved_object: ObjectReference {
            api_version: compute::API_VERSION.to_string(),
            kind: Kind::Machine.as_str().to_string(),
            namespace: namespace.clone(),
            name: name.clone(),
            uid: uid.clone(),
            resource_version: String::new(),
        },
        reason: spec.reason.clone(),
        message: spec.message.clone(),
        type_: spec.r#type.clone(),
        source: Some(EventSource {
            component: EVENT_SOURCE.to_string(),
        }),
        first_timestamp: Some(at.clone()),
        last_timestamp: Some(at),
        count: 1,
        action: action.to_string(),
        ..Event::default()
    })
}

/// Lists the runtime's events in `[from, to]` and records the new ones; returns how many
/// Events were created.
pub async fn map_window(
    store: &Arc<dyn Store>,
    client: &mut MachineRuntimeClient<Channel>,
    timeout: Duration,
    from: i64,
    to: i64,
) -> Result<usize> {
    let request = machine::ListEventsRequest {
        filter: Some(machine::EventFilter {
            events_from_time: from,
            events_to_time: to,
            ..machine::EventFilter::default()
        }),
    };
    let events = rpc("ListEvents", timeout, client.list_events(request))
        .await?
        .events;
    let mut created = 0;
    for ev in &events {
        let Some(mapped) = map_event(ev) else {
            continue;
        };
        match store.create_typed(mapped).await {
            Ok(_) => created += 1,
            Err(store::Error::AlreadyExists { .. }) => {}
            Err(err) => return Err(err.into()),
        }
    }
    debug!(
        from,
        to,
        listed = events.len(),
        created,
        "runtime events mapped"
    );
    Ok(created)
}

/// Maps runtime events every `period` until `token` is cancelled. The first window starts at
/// the call; a failed window is retried (from the same start) at the next tick.
pub async fn run(
    store: Arc<dyn Store>,
    mut client: MachineRuntimeClient<Channel>,
    period: Duration,
    timeout: Duration,
    token: CancellationToken,
) {
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
            res = map_window(&store, &mut client, timeout, from, to) => res,
        };
        match res {
            Ok(_) => from = to,
            Err(err) => warn!(error = %err, "mapping runtime events failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use iri_spec::meta::v1alpha1 as meta;

    use super::*;

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
        let ev = map_event(&iri_event(LABELS, "")).unwrap();
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
            map_event(&iri_event(LABELS, "Boot")).unwrap().action,
            "Boot"
        );
    }

    #[test]
    fn names_are_stable_per_event_and_differ_between_events() {
        let a = map_event(&iri_event(LABELS, "Boot")).unwrap();
        let again = map_event(&iri_event(LABELS, "Boot")).unwrap();
        let other = map_event(&iri_event(LABELS, "Reboot")).unwrap();
        assert_eq!(a.metadata.name, again.metadata.name);
        assert_ne!(a.metadata.name, other.metadata.name);
    }

    #[test]
    fn events_without_machine_labels_are_skipped() {
        assert!(map_event(&iri_event(&[], "")).is_none());
        assert!(map_event(&iri_event(&LABELS[..2], "")).is_none());
        assert!(map_event(&event::Event { spec: None }).is_none());
    }
}
