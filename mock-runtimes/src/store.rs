//! The per-kind object store of the mock: objects of one IRI kind in creation order, kept
//! prost-encoded when idle and decoded while recently touched, with an id index, a timer queue
//! and an inverted label index. Generic over [`IriKind`]; it knows no kind.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use iri_spec::{kind::IriKind, meta::v1alpha1 as meta};
use prost::Message as _;
use tokio::time::Instant;

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

/// How many recently touched objects of one store stay decoded. An object is decoded when a call
/// touches it and re-encoded when it falls out of this window, so a create/advance/delete cycle
/// decodes and encodes nothing while 100k idle objects still take only their encoded size.
const HOT_OBJECTS: usize = 256;

/// One stored object: prost-encoded when idle (a poollet-shaped machine takes ~0.5 KiB encoded
/// against ~3 KiB as a decoded message with its dozens of small heap allocations), decoded while
/// it is among the [`HOT_OBJECTS`] most recently touched.
#[derive(Debug)]
struct Packed<T> {
    repr: Repr<T>,
    timers: Timers,
    /// The labels the [`LabelIndex`] holds for this object; kept beside the bytes of an encoded
    /// object so that a label-filtered list decodes only the matches. A decoded object is
    /// matched on its own labels (which a [`Slot`] may have changed since; see
    /// `Store::touched`).
    labels: HashMap<String, String>,
}

/// Sequence numbers of the objects with one label pair, ascending (creation order). Most pairs
/// (uid, name) name one object, so that case needs no allocation.
#[derive(Debug)]
enum Posting {
    One(u64),
    Many(Vec<u64>),
}

impl Posting {
    fn as_slice(&self) -> &[u64] {
        match self {
            Posting::One(seq) => std::slice::from_ref(seq),
            Posting::Many(seqs) => seqs,
        }
    }

    fn insert(&mut self, seq: u64) {
        match self {
            Posting::One(one) if *one == seq => {}
            Posting::One(one) => {
                let mut seqs = vec![*one, seq];
                seqs.sort_unstable();
                *self = Posting::Many(seqs);
            }
            Posting::Many(seqs) => {
                if let Err(at) = seqs.binary_search(&seq) {
                    seqs.insert(at, seq);
                }
            }
        }
    }

    /// Removes `seq`; returns whether the posting is empty now.
    fn remove(&mut self, seq: u64) -> bool {
        match self {
            Posting::One(one) => *one == seq,
            Posting::Many(seqs) => {
                if let Ok(at) = seqs.binary_search(&seq) {
                    seqs.remove(at);
                }
                seqs.is_empty()
            }
        }
    }
}

/// An inverted index from label pairs to objects, so that a label-filtered list (the poollets'
/// per-Machine lookup by uid/namespace/name) costs the matches, not a scan of every object.
/// Keyed by a hash of the pair rather than the strings (8 bytes a pair); a hash collision only
/// adds candidates, which are matched on their real labels anyway.
#[derive(Debug, Default)]
struct LabelIndex {
    postings: HashMap<u64, Posting>,
}

impl LabelIndex {
    fn pair_hash(key: &str, value: &str) -> u64 {
        use std::hash::{Hash, Hasher};
        // `DefaultHasher::new` has fixed keys: the same pair always hashes alike.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        value.hash(&mut h);
        h.finish()
    }

    fn add(&mut self, seq: u64, labels: &HashMap<String, String>) {
        for (k, v) in labels {
            self.postings
                .entry(Self::pair_hash(k, v))
                .and_modify(|p| p.insert(seq))
                .or_insert(Posting::One(seq));
        }
    }

    fn remove(&mut self, seq: u64, labels: &HashMap<String, String>) {
        for (k, v) in labels {
            let h = Self::pair_hash(k, v);
            if self.postings.get_mut(&h).is_some_and(|p| p.remove(seq)) {
                self.postings.remove(&h);
            }
        }
    }

    /// The candidates for a non-empty `selector`: the shortest posting among its pairs.
    fn candidates(&self, selector: &HashMap<String, String>) -> &[u64] {
        let mut best: Option<&[u64]> = None;
        for (k, v) in selector {
            let Some(posting) = self.postings.get(&Self::pair_hash(k, v)) else {
                return &[];
            };
            let seqs = posting.as_slice();
            if best.is_none_or(|b| seqs.len() < b.len()) {
                best = Some(seqs);
            }
        }
        best.unwrap_or(&[])
    }
}

impl<T: IriKind> Packed<T> {
    fn matches(&self, selector: &HashMap<String, String>) -> bool {
        let labels = match &self.repr {
            Repr::Decoded(obj) => obj.metadata().map(|m| &m.labels),
            Repr::Encoded(_) => Some(&self.labels),
        };
        labels.map_or(selector.is_empty(), |l| {
            iri_spec::selector::matches(selector, l)
        })
    }
}

#[derive(Debug)]
enum Repr<T> {
    Encoded(Box<[u8]>),
    Decoded(Box<T>),
}

impl<T: prost::Message + Default + Clone> Repr<T> {
    fn copy(&self) -> T {
        match self {
            Repr::Encoded(bytes) => decode(bytes),
            Repr::Decoded(obj) => T::clone(obj),
        }
    }
}

/// A stored object opened for modification, with its pending transitions.
pub(crate) struct Slot<'a, T> {
    pub(crate) obj: &'a mut T,
    pub(crate) timers: &'a mut Timers,
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
    objects: BTreeMap<u64, Packed<T>>,
    index: HashMap<Box<str>, u64>,
    next_seq: u64,
    queue: BTreeSet<(Instant, u64)>,
    /// Sequence numbers of decoded objects, oldest first (may name removed objects).
    hot: VecDeque<u64>,
    labels: LabelIndex,
    /// The object last handed out through a [`Slot`]: its labels may have changed (test control
    /// can relabel), so the index re-reads them before it answers and before the next `Slot`
    /// (a `Slot` borrows the store, so at most one can be outstanding).
    touched: Option<u64>,
}

impl<T> Default for Store<T> {
    fn default() -> Self {
        Store {
            objects: BTreeMap::new(),
            index: HashMap::new(),
            next_seq: 0,
            queue: BTreeSet::new(),
            hot: VecDeque::new(),
            labels: LabelIndex::default(),
            touched: None,
        }
    }
}

impl<T: IriKind> Store<T> {
    /// Inserts under `id` with pending `timers`, replacing an object with the same id.
    pub(crate) fn insert(&mut self, id: &str, obj: T, timers: Timers) {
        if let Some(old) = self.index.remove(id)
            && let Some(packed) = self.objects.remove(&old)
        {
            self.labels.remove(old, &packed.labels);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.index.insert(id.into(), seq);
        let labels = obj.metadata().map(|m| m.labels.clone()).unwrap_or_default();
        self.labels.add(seq, &labels);
        self.objects.insert(
            seq,
            Packed {
                repr: Repr::Decoded(Box::new(obj)),
                timers,
                labels,
            },
        );
        self.mark_hot(seq);
        for at in [timers.ready, timers.apply, timers.power, timers.gone]
            .into_iter()
            .flatten()
        {
            self.queue.insert((at, seq));
        }
    }

    /// Records that `seq` is decoded now and encodes the objects that fall out of the window.
    fn mark_hot(&mut self, seq: u64) {
        self.hot.push_back(seq);
        while self.hot.len() > HOT_OBJECTS {
            let Some(cold) = self.hot.pop_front() else {
                break;
            };
            if let Some(packed) = self.objects.get_mut(&cold) {
                Self::reindex(&mut self.labels, cold, packed);
                if let Repr::Decoded(obj) = &packed.repr {
                    packed.repr = Repr::Encoded(obj.encode_to_vec().into_boxed_slice());
                }
            }
        }
    }

    /// Brings the index up to date with a decoded object's own labels.
    fn reindex(index: &mut LabelIndex, seq: u64, packed: &mut Packed<T>) {
        if let Repr::Decoded(obj) = &packed.repr {
            let now = obj.metadata().map(|m| &m.labels);
            if now.is_none_or(|now| *now != packed.labels) {
                index.remove(seq, &packed.labels);
                packed.labels = now.cloned().unwrap_or_default();
                index.add(seq, &packed.labels);
            }
        }
    }

    /// Re-reads the labels of the object last handed out through a [`Slot`].
    fn reindex_touched(&mut self) {
        if let Some(seq) = self.touched.take()
            && let Some(packed) = self.objects.get_mut(&seq)
        {
            Self::reindex(&mut self.labels, seq, packed);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.objects.len()
    }

    pub(crate) fn contains(&self, id: &str) -> bool {
        self.index.contains_key(id)
    }

    /// A copy of object `id`.
    pub(crate) fn get(&self, id: &str) -> Option<T> {
        let seq = self.index.get(id)?;
        self.objects.get(seq).map(|p| p.repr.copy())
    }

    /// Object `id` for modification (decoded in place).
    pub(crate) fn get_mut(&mut self, id: &str) -> Option<Slot<'_, T>> {
        let seq = *self.index.get(id)?;
        self.slot_by_seq_mut(seq)
    }

    pub(crate) fn slot_by_seq_mut(&mut self, seq: u64) -> Option<Slot<'_, T>> {
        // The previous Slot is gone by now: bring the index up to date with it.
        self.reindex_touched();
        let packed = self.objects.get_mut(&seq)?;
        if let Repr::Encoded(bytes) = &packed.repr {
            packed.repr = Repr::Decoded(Box::new(decode(bytes)));
            self.mark_hot(seq);
        }
        // The caller may change the labels: the index re-reads them before its next answer.
        self.touched = Some(seq);
        let packed = self.objects.get_mut(&seq)?;
        let Packed { repr, timers, .. } = packed;
        match repr {
            Repr::Decoded(obj) => Some(Slot { obj, timers }),
            // Unreachable: the object was decoded just above.
            Repr::Encoded(_) => None,
        }
    }

    pub(crate) fn timers(&self, id: &str) -> Option<Timers> {
        let seq = self.index.get(id)?;
        self.objects.get(seq).map(|p| p.timers)
    }

    /// Removes object `id` and returns its metadata.
    pub(crate) fn remove(&mut self, id: &str) -> Option<meta::ObjectMetadata> {
        let seq = self.index.remove(id)?;
        let packed = self.objects.remove(&seq)?;
        self.labels.remove(seq, &packed.labels);
        Some(Self::meta_of(packed.repr))
    }

    fn meta_of(repr: Repr<T>) -> meta::ObjectMetadata {
        match repr {
            Repr::Encoded(bytes) => decode_meta(&bytes),
            Repr::Decoded(mut obj) => obj.metadata_mut().take().unwrap_or_default(),
        }
    }

    /// Copies of the objects whose labels match `selector`, in creation order. Only the
    /// candidates of the label index are looked at and only the matches decoded (a
    /// label-filtered list of one machine among thousands costs that one machine).
    pub(crate) fn iter_labelled<'a>(
        &'a mut self,
        selector: &'a HashMap<String, String>,
    ) -> Box<dyn Iterator<Item = T> + 'a> {
        self.reindex_touched();
        if selector.is_empty() {
            return Box::new(self.iter());
        }
        let objects = &self.objects;
        Box::new(
            self.labels
                .candidates(selector)
                .iter()
                .filter_map(move |seq| objects.get(seq))
                .filter(move |p| p.matches(selector))
                .map(|p| p.repr.copy()),
        )
    }

    /// Copies of every object, in creation order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = T> + '_ {
        self.objects.values().map(|p| p.repr.copy())
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

    #[cfg(test)]
    pub(crate) fn seq_of(&self, id: &str) -> Option<u64> {
        self.index.get(id).copied()
    }

    pub(crate) fn timers_by_seq(&self, seq: u64) -> Option<Timers> {
        self.objects.get(&seq).map(|p| p.timers)
    }

    /// Removes the object with sequence number `seq` and returns its metadata.
    pub(crate) fn remove_seq(&mut self, seq: u64) -> Option<meta::ObjectMetadata> {
        let packed = self.objects.remove(&seq)?;
        self.labels.remove(seq, &packed.labels);
        let md = Self::meta_of(packed.repr);
        if self.index.get(md.id.as_str()) == Some(&seq) {
            self.index.remove(md.id.as_str());
        }
        Some(md)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::tests::labelled_meta;
    use iri_spec::machine::v1alpha1 as machine;

    fn stored_machine(id: &str) -> machine::Machine {
        machine::Machine {
            metadata: Some(labelled_meta(id)),
            spec: Some(machine::MachineSpec {
                class: "c".to_owned(),
                ..Default::default()
            }),
            status: None,
        }
    }

    /// Inserts machines `m{i}` for each `i` in `range`.
    fn fill(store: &mut Store<machine::Machine>, range: std::ops::Range<usize>) {
        for i in range {
            let id = format!("m{i}");
            store.insert(&id, stored_machine(&id), Timers::default());
        }
    }

    /// Changes a label through a [`Slot`], as test control does.
    fn set_label(store: &mut Store<machine::Machine>, id: &str, key: &str, value: &str) {
        let slot = store.get_mut(id).unwrap();
        let md = slot.obj.metadata.as_mut().unwrap();
        md.labels.insert(key.into(), value.into());
    }

    #[test]
    fn label_filtered_iteration_sees_hot_and_cold_objects() {
        let mut store = Store::<machine::Machine>::default();
        let n = HOT_OBJECTS * 2;
        for i in 0..n {
            let mut m = stored_machine(&format!("m{i}"));
            let parity = if i % 2 == 0 { "even" } else { "odd" };
            m.metadata
                .as_mut()
                .unwrap()
                .labels
                .insert("parity".into(), parity.into());
            store.insert(&format!("m{i}"), m, Timers::default());
        }
        let selector = HashMap::from([("parity".to_owned(), "even".to_owned())]);
        let ids: Vec<String> = store
            .iter_labelled(&selector)
            .map(|m| m.metadata.unwrap().id)
            .collect();
        assert_eq!(ids.len(), n / 2);
        assert_eq!((ids[0].as_str(), ids[n / 2 - 1].as_str()), ("m0", "m510"));
        // A label changed while decoded is seen, and survives being encoded again.
        set_label(&mut store, "m0", "parity", "odd");
        assert_eq!(store.iter_labelled(&selector).count(), n / 2 - 1);
        fill(&mut store, n..n + HOT_OBJECTS);
        let seq0 = store.seq_of("m0").unwrap();
        assert!(matches!(store.objects[&seq0].repr, Repr::Encoded(_)));
        assert_eq!(store.iter_labelled(&selector).count(), n / 2 - 1);
        let odd = HashMap::from([("parity".to_owned(), "odd".to_owned())]);
        assert_eq!(store.iter_labelled(&odd).count(), n / 2 + 1);
        assert_eq!(
            store.iter_labelled(&HashMap::new()).count(),
            n + HOT_OBJECTS
        );
    }

    #[test]
    fn label_index_follows_inserts_relabels_and_removals() {
        let mut store = Store::<machine::Machine>::default();
        let labelled = |id: &str, pairs: &[(&str, &str)]| {
            let mut m = stored_machine(id);
            m.metadata.as_mut().unwrap().labels = pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            m
        };
        let sel = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let ids = |store: &mut Store<machine::Machine>, s: &HashMap<String, String>| {
            store
                .iter_labelled(s)
                .map(|m| m.metadata.unwrap().id)
                .collect::<Vec<_>>()
        };
        store.insert(
            "a",
            labelled("a", &[("ns", "x"), ("name", "a")]),
            Timers::default(),
        );
        store.insert(
            "b",
            labelled("b", &[("ns", "x"), ("name", "b")]),
            Timers::default(),
        );
        store.insert(
            "c",
            labelled("c", &[("ns", "y"), ("name", "a")]),
            Timers::default(),
        );
        assert_eq!(ids(&mut store, &sel(&[("ns", "x")])), ["a", "b"]);
        assert_eq!(ids(&mut store, &sel(&[("ns", "x"), ("name", "a")])), ["a"]);
        assert_eq!(ids(&mut store, &sel(&[("name", "a")])), ["a", "c"]);
        assert!(ids(&mut store, &sel(&[("ns", "z")])).is_empty());
        assert!(ids(&mut store, &sel(&[("ns", "x"), ("name", "c")])).is_empty());
        // A relabel through a slot is seen by the next list, old pair and new.
        set_label(&mut store, "a", "ns", "y");
        assert_eq!(ids(&mut store, &sel(&[("ns", "x")])), ["b"]);
        assert_eq!(ids(&mut store, &sel(&[("ns", "y")])), ["a", "c"]);
        // Removal and replacement under the same id leave no stale candidates.
        store.remove("c").unwrap();
        store.insert("b", labelled("b", &[("ns", "z")]), Timers::default());
        assert_eq!(ids(&mut store, &sel(&[("ns", "y")])), ["a"]);
        assert!(ids(&mut store, &sel(&[("ns", "x")])).is_empty());
        assert_eq!(ids(&mut store, &sel(&[("ns", "z")])), ["b"]);
        assert!(
            store.labels.postings.len() <= 3,
            "{:?}",
            store.labels.postings
        );
    }

    #[test]
    fn store_keeps_objects_across_the_hot_window() {
        let mut store = Store::<machine::Machine>::default();
        let n = HOT_OBJECTS * 3;
        fill(&mut store, 0..n);
        let encoded = store
            .objects
            .values()
            .filter(|p| matches!(p.repr, Repr::Encoded(_)))
            .count();
        assert_eq!(encoded, n - HOT_OBJECTS, "only the window stays decoded");
        // Modify an encoded (cold) object, push it out of the window again, read it back.
        {
            let slot = store.get_mut("m0").unwrap();
            slot.obj.spec.as_mut().unwrap().class = "changed".to_owned();
            slot.timers.deleting = true;
        }
        fill(&mut store, n..n + HOT_OBJECTS);
        let seq0 = store.seq_of("m0").unwrap();
        assert!(matches!(store.objects[&seq0].repr, Repr::Encoded(_)));
        let m0 = store.get("m0").unwrap();
        assert_eq!(m0.spec.unwrap().class, "changed");
        assert!(store.timers("m0").unwrap().deleting);
        // Creation order and content survive, hot or cold.
        let ids: Vec<String> = store.iter().map(|m| m.metadata.unwrap().id).collect();
        assert_eq!(ids.len(), n + HOT_OBJECTS);
        assert_eq!(ids[1], "m1");
        // Removing returns the metadata for a cold and for a hot object.
        assert_eq!(store.remove("m1").unwrap(), labelled_meta("m1"));
        let last = format!("m{}", n + HOT_OBJECTS - 1);
        assert_eq!(store.remove(&last).unwrap(), labelled_meta(&last));
        assert!(!store.contains("m1") && !store.contains(&last));
    }
}
