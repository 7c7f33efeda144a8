//! The ListEvents filter both real runtimes apply to the events they keep (included with
//! `#[path]` by ch-machine-runtime and file-volume-runtime, so neither depends on the other).

use std::collections::HashMap;

use iri_spec::{
    event::v1alpha1 as event, machine::v1alpha1 as machine, volume::v1alpha1 as volume,
};

/// A ListEvents filter (the machine and the volume service each have their own type).
pub(crate) trait Filter {
    /// The involved object's id (any when empty), the label selector, and the time window
    /// `from..=to` (which counts only when both bounds are > 0).
    fn parts(&self) -> (&str, &HashMap<String, String>, i64, i64);
}

macro_rules! event_filter {
    ($($filter:ty),+) => {$(
        impl Filter for $filter {
            fn parts(&self) -> (&str, &HashMap<String, String>, i64, i64) {
                (&self.id, &self.label_selector, self.events_from_time, self.events_to_time)
            }
        }
    )+};
}

event_filter!(machine::EventFilter, volume::EventFilter);

/// The `events` that pass `filter` (all without one), in their order.
pub(crate) fn select<'a>(
    events: impl IntoIterator<Item = &'a event::Event>,
    filter: Option<&impl Filter>,
) -> Vec<event::Event> {
    events
        .into_iter()
        .filter(|ev| filter.is_none_or(|f| matches(ev, f)))
        .cloned()
        .collect()
}

fn matches(ev: &event::Event, filter: &impl Filter) -> bool {
    let (id, labels, from, to) = filter.parts();
    let Some(spec) = &ev.spec else { return false };
    let meta = spec.involved_object_meta.clone().unwrap_or_default();
    (id.is_empty() || id == meta.id)
        && iri_spec::selector::matches(labels, &meta.labels)
        && (from <= 0 || to <= 0 || (spec.event_time >= from && spec.event_time <= to))
}
