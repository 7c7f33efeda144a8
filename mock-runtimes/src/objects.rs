//! What the mock does alike for every IRI object kind, written once over [`MockKind`]: due
//! transitions, List with its id and label filters, Delete with its deletion phase, events,
//! and the test-control reads and writes. The kinds (machine, volume, volume snapshot, bucket)
//! add only what is theirs: validation, state machines and output mutants.

use std::{
    collections::HashMap,
    sync::{Mutex, MutexGuard},
};

use iri_spec::{
    event::v1alpha1 as event,
    kind::{IriKind, Service},
    meta::v1alpha1 as meta,
};
use tokio::time::Instant;
use tonic::Status;

use crate::{
    Mutant,
    core::{Core, invalid, not_found},
    events::{EncodedEvent, EventParts, EventQuery},
    lock,
    store::{Store, Timers},
};

/// The mutants that bend one kind's shared rules (`None`: the kind has no such mutant).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct KindMutants {
    /// An empty id in Delete (and the kind's other by-id calls) is accepted.
    pub(crate) empty_id_accepted: Option<Mutant>,
    /// List ignores the id filter.
    pub(crate) id_filter_ignored: Option<Mutant>,
    /// List ignores the label selector.
    pub(crate) label_selector_ignored: Option<Mutant>,
    /// List by an unknown id answers NotFound instead of an empty list.
    pub(crate) unknown_id_list_errors: Option<Mutant>,
    /// Delete of an unknown id answers OK.
    pub(crate) delete_unknown_ok: Option<Mutant>,
    /// A second Delete while deleting answers NotFound.
    pub(crate) delete_twice_not_found: Option<Mutant>,
    /// Delete removes the object at once, with no deletion phase.
    pub(crate) delete_immediate: Option<Mutant>,
    /// A deleted object never goes away.
    pub(crate) never_gone: Option<Mutant>,
    /// Delete leaves `deleted_at` unset.
    pub(crate) deleted_at_unset: Option<Mutant>,
}

impl KindMutants {
    /// No mutant bends the shared rules.
    pub(crate) const NONE: KindMutants = KindMutants {
        empty_id_accepted: None,
        id_filter_ignored: None,
        label_selector_ignored: None,
        unknown_id_list_errors: None,
        delete_unknown_ok: None,
        delete_twice_not_found: None,
        delete_immediate: None,
        never_gone: None,
        deleted_at_unset: None,
    };
}

/// The transitions that are due for one object (its timers are cleared already).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Due {
    pub(crate) ready: bool,
    pub(crate) apply: bool,
    pub(crate) power: bool,
}

/// An IRI object kind as the mock keeps it.
pub(crate) trait MockKind: IriKind {
    /// The mutants of the kind's shared rules.
    const MUTANTS: KindMutants;
    /// The request field that names an object of the kind (`machine_id`).
    const ID_FIELD: &'static str;

    /// The kind's store in `core`.
    fn store(core: &Core) -> &Mutex<Store<Self>>;
    /// Sets the state (the status is created if missing).
    fn set_state(&mut self, state: i32);
    /// Applies the due transitions to `obj`; `timers` are its timers with the due ones cleared.
    /// Returns the message of a state-change event, if the state changed.
    fn transition(core: &Core, obj: &mut Self, timers: &Timers, due: Due) -> Option<String>;
    /// The object as a List answers it (the kind's output mutants applied).
    fn listed(_core: &Core, obj: Self) -> Self {
        obj
    }
    /// What Delete changes beyond `deleted_at` (machines turn TERMINATING).
    fn on_delete(_core: &Core, _obj: &mut Self) {}
}

impl Core {
    /// Builds an event about the object with metadata `meta`.
    pub(crate) fn event(
        &self,
        meta: &meta::ObjectMetadata,
        reason: &str,
        action: &str,
        message: &str,
    ) -> EncodedEvent {
        let event_time = if self.has(Mutant::EventTimeNanos) {
            self.clock.unix_nanos()
        } else {
            self.clock.unix_secs()
        };
        let action = if self.has(Mutant::EventActionMissing) {
            ""
        } else {
            action
        };
        let unlabelled;
        let meta = if self.has(Mutant::EventLabelsMissing) {
            unlabelled = meta::ObjectMetadata {
                labels: HashMap::new(),
                ..meta.clone()
            };
            &unlabelled
        } else {
            meta
        };
        EventParts {
            meta,
            reason,
            message,
            r#type: "Normal",
            event_time,
            action,
        }
        .encode()
    }

    /// Records an event about `meta` in the log of `K`'s service.
    pub(crate) fn record<K: MockKind>(
        &self,
        meta: &meta::ObjectMetadata,
        reason: &str,
        action: &str,
        message: &str,
    ) {
        let ev = self.event(meta, reason, action, message);
        lock(self.events.of(K::SERVICE)).push(ev);
    }

    /// Adds an event to `service`'s log as given (test control).
    pub(crate) fn inject_event(&self, service: Service, ev: event::Event) {
        lock(self.events.of(service)).push(ev);
    }

    /// The events of `service`, filtered as providers do: id, labels, and the time window only
    /// when both bounds are > 0. Advance the service's kinds first.
    pub(crate) fn events(&self, service: Service, q: &EventQuery) -> Vec<event::Event> {
        if self.has(Mutant::NoEvents) {
            return Vec::new();
        }
        lock(self.events.of(service))
            .iter()
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
            .collect()
    }

    fn has_opt(&self, m: Option<Mutant>) -> bool {
        m.is_some_and(|m| self.has(m))
    }

    /// `InvalidArgument` for an empty id (unless the kind's mutant accepts it).
    pub(crate) fn check_id<K: MockKind>(&self, id: &str, what: &str) -> Result<(), Status> {
        if id.is_empty() && !self.has_opt(K::MUTANTS.empty_id_accepted) {
            return Err(invalid(format!("{what} is required")));
        }
        Ok(())
    }

    /// Applies every transition of `K` that is due.
    pub(crate) fn advance<K: MockKind>(&self, st: &mut Store<K>) {
        let now = Instant::now();
        let is_due = |t: Option<Instant>| t.is_some_and(|t| t <= now);
        for seq in st.due(now) {
            let Some(timers) = st.timers_by_seq(seq) else {
                continue;
            };
            if is_due(timers.gone) {
                if let Some(md) = st.remove_seq(seq) {
                    self.record::<K>(&md, "Deleted", "Delete", &format!("{} deleted", K::NAME));
                }
                continue;
            }
            let due = Due {
                ready: is_due(timers.ready),
                apply: is_due(timers.apply),
                power: is_due(timers.power),
            };
            if !(due.ready || due.apply || due.power) {
                continue;
            }
            let Some(slot) = st.slot_by_seq_mut(seq) else {
                continue;
            };
            if due.ready {
                slot.timers.ready = None;
            }
            if due.power {
                slot.timers.power = None;
            }
            if due.apply {
                slot.timers.apply = None;
            }
            let timers = *slot.timers;
            let message = K::transition(self, slot.obj, &timers, due);
            if let Some(message) = message
                && let Some(md) = slot.obj.metadata()
            {
                self.record::<K>(md, "StateChanged", "UpdateState", &message);
            }
        }
    }

    /// `K`'s store, locked, with its due transitions applied.
    pub(crate) fn objects<K: MockKind>(&self) -> MutexGuard<'_, Store<K>> {
        let mut st = lock(K::store(self));
        self.advance(&mut st);
        st
    }

    /// Applies `K`'s due transitions (before answering from the service's event log).
    pub(crate) fn settle<K: MockKind>(&self) {
        drop(self.objects::<K>());
    }

    /// Stores a new object under its id with pending `timers` and records its Created event.
    pub(crate) fn insert_new<K: MockKind>(&self, obj: K, timers: Timers) -> K {
        let id = obj.id().to_owned();
        let mut st = self.objects::<K>();
        if let Some(md) = obj.metadata() {
            self.record::<K>(md, "Created", "Create", &format!("{} created", K::NAME));
        }
        st.insert(&id, obj.clone(), timers);
        drop(st);
        tracing::info!(kind = K::NAME, id = %id, "created");
        obj
    }

    /// List: the objects matching the id (if set) and the label selector, in creation order,
    /// as the kind shows them.
    pub(crate) fn list<K: MockKind>(
        &self,
        id: &str,
        selector: &HashMap<String, String>,
    ) -> Result<Vec<K>, Status> {
        let mutants = K::MUTANTS;
        let ignore_labels = self.has_opt(mutants.label_selector_ignored);
        let mut st = self.objects::<K>();
        if !id.is_empty() && !self.has_opt(mutants.id_filter_ignored) {
            let Some(obj) = st.get(id) else {
                if self.has_opt(mutants.unknown_id_list_errors) {
                    return Err(not_found(K::NAME, id));
                }
                return Ok(Vec::new());
            };
            let selected = ignore_labels
                || selector.is_empty()
                || obj
                    .metadata()
                    .is_some_and(|m| iri_spec::selector::matches(selector, &m.labels));
            return Ok(if selected {
                vec![K::listed(self, obj)]
            } else {
                Vec::new()
            });
        }
        if selector.is_empty() || ignore_labels {
            return Ok(st.iter().map(|obj| K::listed(self, obj)).collect());
        }
        Ok(st
            .iter_labelled(selector)
            .map(|obj| K::listed(self, obj))
            .collect())
    }

    /// Delete: marks the object deleting (`deleted_at`, the kind's own change) and keeps it
    /// listed for [`crate::Delays::terminate`]; a repeated Delete meanwhile is OK.
    pub(crate) fn delete<K: MockKind>(&self, id: &str) -> Result<(), Status> {
        let mutants = K::MUTANTS;
        self.check_id::<K>(id, K::ID_FIELD)?;
        let mut st = self.objects::<K>();
        let Some(timers) = st.timers(id) else {
            if self.has_opt(mutants.delete_unknown_ok) {
                return Ok(());
            }
            return Err(not_found(K::NAME, id));
        };
        if timers.deleting {
            if self.has_opt(mutants.delete_twice_not_found) {
                return Err(not_found(K::NAME, id));
            }
            return Ok(());
        }
        if self.has_opt(mutants.delete_immediate) {
            if let Some(md) = st.remove(id) {
                self.record::<K>(&md, "Deleted", "Delete", &format!("{} deleted", K::NAME));
            }
            tracing::info!(kind = K::NAME, id = %id, "deleted");
            return Ok(());
        }
        let gone_at = (!self.has_opt(mutants.never_gone))
            .then(|| Instant::now() + self.config.delays.terminate);
        {
            let Some(slot) = st.get_mut(id) else {
                return Err(not_found(K::NAME, id));
            };
            slot.timers.deleting = true;
            slot.timers.gone = gone_at;
            if !self.has_opt(mutants.deleted_at_unset) {
                slot.obj.metadata_mut().get_or_insert_default().deleted_at =
                    self.clock.unix_nanos();
            }
            K::on_delete(self, slot.obj);
            if let Some(md) = slot.obj.metadata() {
                let message = format!("{} is being deleted", K::NAME);
                self.record::<K>(md, "Deleting", "Delete", &message);
            }
        }
        if let Some(at) = gone_at {
            st.wake_at(id, at);
        }
        tracing::info!(kind = K::NAME, id = %id, "deleting");
        Ok(())
    }

    /// Stores an object as given (test seeding); fills in a missing id, created_at, spec and
    /// status.
    pub(crate) fn seed<K: MockKind>(&self, mut obj: K) -> String {
        let md = obj.metadata_mut().get_or_insert_default();
        if md.id.is_empty() {
            md.id = self.new_id();
        }
        if md.created_at == 0 {
            md.created_at = self.clock.unix_nanos();
        }
        let id = md.id.clone();
        obj.spec_mut().get_or_insert_default();
        obj.status_mut().get_or_insert_default();
        lock(K::store(self)).insert(&id, obj, Timers::default());
        id
    }

    /// The stored object `id` (as stored, without output mutants).
    pub(crate) fn get<K: MockKind>(&self, id: &str) -> Option<K> {
        self.objects::<K>().get(id)
    }

    /// Changes a stored object in place (test control). False if unknown.
    pub(crate) fn modify<K: MockKind>(&self, id: &str, f: impl FnOnce(&mut K)) -> bool {
        match self.objects::<K>().get_mut(id) {
            Some(slot) => {
                f(slot.obj);
                true
            }
            None => false,
        }
    }

    /// Forces an object's state (test control), cancelling its pending provisioning and power
    /// transitions, and records a state-change event. False if unknown.
    pub(crate) fn force_state<K: MockKind>(&self, id: &str, state: i32) -> bool {
        let mut st = self.objects::<K>();
        let Some(slot) = st.get_mut(id) else {
            return false;
        };
        slot.timers.ready = None;
        slot.timers.power = None;
        let old = slot.obj.state().unwrap_or_default();
        slot.obj.set_state(state);
        if old != state
            && let Some(md) = slot.obj.metadata()
        {
            let name = |s| K::state_name(s).unwrap_or("UNKNOWN");
            let message = format!("{} state {} -> {}", K::NAME, name(old), name(state));
            self.record::<K>(md, "StateChanged", "UpdateState", &message);
        }
        true
    }

    /// How many objects of `K` are stored (deleting ones included).
    pub(crate) fn count<K: MockKind>(&self) -> usize {
        self.objects::<K>().len()
    }
}

/// The object of a create request and its spec, taken out of it: `InvalidArgument` for a missing
/// object or spec unless `lax` (a mutant) accepts it, when the spec is `None`.
pub(crate) fn take_spec<K: IriKind>(
    obj: Option<K>,
    lax: bool,
) -> Result<(K, Option<K::Spec>), Status> {
    let mut obj = match obj {
        Some(obj) => obj,
        None if lax => K::default(),
        None => return Err(invalid(format!("{} is required", K::NAME))),
    };
    match obj.spec_mut().take() {
        None if !lax => Err(invalid(format!("{}.spec is required", K::NAME))),
        spec => Ok((obj, spec)),
    }
}

/// The parts of a [`MockKind`] impl that only say where the kind is kept: `store`, the [`Core`]
/// field `$field`, and `set_state` on the status' `state`.
macro_rules! kept_in {
    ($field:ident) => {
        fn store(core: &$crate::core::Core) -> &std::sync::Mutex<$crate::store::Store<Self>> {
            &core.$field
        }

        fn set_state(&mut self, state: i32) {
            self.status.get_or_insert_default().state = state;
        }
    };
}
pub(crate) use kept_in;

/// Resets the runtime-owned metadata of a new object: its id, generation 0, not deleted,
/// `created_at`.
pub(crate) fn fresh_meta(md: &mut meta::ObjectMetadata, id: &str, created_at: i64) {
    md.id = id.to_owned();
    md.generation = 0;
    md.deleted_at = 0;
    md.created_at = created_at;
}
