//! Event objects written by the poollets: the poollet's own Normal/Warning events about an
//! object (one Event per object and reason; repeats bump `count`), and the runtime's events
//! from `ListEvents` (reference §3.8), one Event each, named by a hash of the event so that a
//! runtime that ignores the time filter (the Go fakes do) does not produce duplicates.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use iri_spec::event::v1alpha1 as event;
use irikit_api::{
    Kind, Store, StoreExt,
    core::{Event, EventSource, ObjectReference},
    meta::ObjectMeta,
    store::{self, now_rfc3339},
};
use sha2::{Digest, Sha256};
use tracing::debug;

/// Records a poollet Event about `involved` (in its namespace). Repeats of the same reason
/// update one Event (count, lastTimestamp, message) instead of creating new ones; an Event of an
/// earlier object with the same name is replaced. Failures are logged only.
pub(crate) async fn record(
    store: &dyn Store,
    involved: ObjectReference,
    type_: &str,
    reason: &str,
    message: &str,
    component: &str,
) {
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
        count: 1,
        ..Event::default()
    };
    let res = match store.get_typed::<Event>(&namespace, &name).await {
        Ok(mut existing) if existing.involved_object.uid == involved.uid => {
            existing.count = existing.count.saturating_add(1);
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
pub(crate) struct InvolvedLabels {
    /// The ironcore kind of the involved object.
    pub kind: Kind,
    /// UID label key.
    pub uid: &'static str,
    /// Namespace label key.
    pub namespace: &'static str,
    /// Name label key.
    pub name: &'static str,
}

/// Unix seconds now.
pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn rfc3339_of(unix_seconds: i64) -> String {
    let secs = u64::try_from(unix_seconds.max(0)).unwrap_or(0);
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

/// Writes one Event object per runtime event whose involved object carries the uid, namespace
/// and name labels (others are skipped, as in IronCore). Returns how many were new.
pub(crate) async fn record_runtime_events(
    store: &dyn Store,
    events: &[event::Event],
    labels: InvolvedLabels,
    component: &str,
) -> usize {
    let mut created = 0;
    for ev in events {
        let Some(spec) = &ev.spec else { continue };
        let Some(md) = &spec.involved_object_meta else {
            continue;
        };
        let get = |key: &str| md.labels.get(key).filter(|v| !v.is_empty());
        let (Some(uid), Some(namespace), Some(name)) =
            (get(labels.uid), get(labels.namespace), get(labels.name))
        else {
            continue;
        };
        let mut hasher = Sha256::new();
        for part in [
            uid.as_str(),
            &md.id,
            &spec.reason,
            &spec.message,
            &spec.r#type,
            &spec.action,
        ] {
            hasher.update(part.as_bytes());
            hasher.update([0]);
        }
        hasher.update(spec.event_time.to_le_bytes());
        let digest = hex(&hasher.finalize());
        let at = rfc3339_of(spec.event_time);
        let obj = Event {
            metadata: ObjectMeta::namespaced(
                namespace.clone(),
                format!("{name}.{}", &digest[..16]),
            ),
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
            type_: if spec.r#type.is_empty() {
                "Normal".into()
            } else {
                spec.r#type.clone()
            },
            source: Some(EventSource {
                component: component.to_string(),
            }),
            first_timestamp: Some(at.clone()),
            last_timestamp: Some(at),
            count: 1,
            action: if spec.action.is_empty() {
                "Unknown".into()
            } else {
                spec.action.clone()
            },
            ..Event::default()
        };
        match store.create_typed(obj).await {
            Ok(_) => created += 1,
            Err(store::Error::AlreadyExists { .. }) => {}
            Err(err) => debug!(error = %err, "recording a runtime event failed"),
        }
    }
    created
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
    use super::*;

    #[test]
    fn sha256_name_is_the_first_63_hex_chars() {
        // sha256("abc") = ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad
        assert_eq!(
            sha256_name("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015a"
        );
    }
}
