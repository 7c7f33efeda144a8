//! Reservation capacity arithmetic, written once for every runtime that serves irikit's
//! reservation extension (iri-mock, ch-machine-runtime, machine-broker).
//!
//! Capacity has four dimensions ([`Usage`]): the machine count of each class, cpu (millicores),
//! memory (bytes) and local storage (bytes). A machine uses one of its class, the class's cpu and
//! memory ([`ClassSize`]) and its local disks' bytes ([`machine_usage`]). An ACCEPTED reservation
//! holds its class counts, `max(cpu_millis, what its classes imply)`, likewise memory, and
//! `local_storage_bytes_per_machine × machines` ([`held_by`]). It is consumed one machine at a
//! time: after `k` machines of its classes were created against it, it holds only the rest
//! ([`still_held`]); it is consumed in full when every class count is reached, or, naming no
//! class, with its first machine ([`fully_consumed`]). Something new fits when every dimension
//! it asks for still fits next to what the machines use and the reservations hold
//! ([`Usage::overflow`]).
//!
//! The runtime supplies the class sizes (a closure from class name to [`ClassSize`]) and the
//! consumed counts (however it keeps them: counted as machines are created, or
//! [`consumed_by`] from the listed machines' annotations).

use std::collections::HashMap;

use crate::{
    irikit::reservation::v1alpha1::{self as rsv, ReservationState},
    keys::RESERVATION_ID_ANNOTATION,
    machine::v1alpha1 as machine,
};

/// What one machine of a class takes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClassSize {
    /// Millicores.
    pub cpu_millis: i64,
    /// Bytes.
    pub memory_bytes: i64,
}

impl ClassSize {
    /// A class of `cpus` cores and `memory_bytes` bytes.
    pub fn new(cpus: i64, memory_bytes: i64) -> Self {
        ClassSize {
            cpu_millis: cpus.saturating_mul(1000),
            memory_bytes,
        }
    }
}

/// Amounts over the four dimensions: used, held, wanted or available.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Usage {
    /// Machines per class.
    pub classes: HashMap<String, i64>,
    /// Millicores.
    pub cpu_millis: i64,
    /// Bytes of memory.
    pub memory_bytes: i64,
    /// Bytes of local storage.
    pub local_storage_bytes: i64,
}

impl Usage {
    /// Adds `other` (saturating).
    pub fn add(&mut self, other: &Usage) {
        for (class, n) in &other.classes {
            let e = self.classes.entry(class.clone()).or_default();
            *e = e.saturating_add(*n);
        }
        self.cpu_millis = self.cpu_millis.saturating_add(other.cpu_millis);
        self.memory_bytes = self.memory_bytes.saturating_add(other.memory_bytes);
        self.local_storage_bytes = self
            .local_storage_bytes
            .saturating_add(other.local_storage_bytes);
    }

    /// Whether every amount is zero.
    pub fn is_empty(&self) -> bool {
        self.classes.values().all(|n| *n == 0)
            && self.cpu_millis == 0
            && self.memory_bytes == 0
            && self.local_storage_bytes == 0
    }

    /// The first dimension in which `want` does not fit next to `self` (what is used and held)
    /// within `cap`, described; `None` when it fits. A dimension `want` does not ask for never
    /// rejects it (unreserved machines may have overcommitted it). Classes are checked in name
    /// order, then cpu, memory and local storage; a class without capacity has none.
    pub fn overflow(&self, want: &Usage, cap: &Usage) -> Option<String> {
        let over = |used: i64, want: i64, cap: i64| want != 0 && used.saturating_add(want) > cap;
        let mut classes: Vec<_> = want.classes.iter().collect();
        classes.sort();
        for (class, n) in classes {
            let used = self.classes.get(class).copied().unwrap_or(0);
            let cap = cap.classes.get(class).copied().unwrap_or(0);
            if over(used, *n, cap) {
                return Some(format!(
                    "{n} machine(s) of class {class:?}: {used} of {cap} in use or held"
                ));
            }
        }
        for (what, used, want, cap) in [
            (
                "cpu millis",
                self.cpu_millis,
                want.cpu_millis,
                cap.cpu_millis,
            ),
            (
                "memory bytes",
                self.memory_bytes,
                want.memory_bytes,
                cap.memory_bytes,
            ),
            (
                "local storage bytes",
                self.local_storage_bytes,
                want.local_storage_bytes,
                cap.local_storage_bytes,
            ),
        ] {
            if over(used, want, cap) {
                return Some(format!("{want} {what}: {used} of {cap} in use or held"));
            }
        }
        None
    }

    /// Whether `want` fits next to `self` within `cap` (see [`Usage::overflow`]).
    pub fn fits(&self, want: &Usage, cap: &Usage) -> bool {
        self.overflow(want, cap).is_none()
    }
}

/// The local disk bytes a machine's spec declares.
pub fn local_disk_bytes(spec: &machine::MachineSpec) -> i64 {
    spec.volumes
        .iter()
        .filter_map(|v| v.local_disk.as_ref())
        .map(|d| d.size_bytes.max(0))
        .fold(0i64, i64::saturating_add)
}

/// What one machine of `spec` uses: one of its class with the class's size (nothing of a class
/// `size` does not know) and its local disks.
pub fn machine_usage(
    spec: &machine::MachineSpec,
    size: impl Fn(&str) -> Option<ClassSize>,
) -> Usage {
    let mut u = Usage::default();
    if let Some(c) = size(&spec.class) {
        u.classes.insert(spec.class.clone(), 1);
        u.cpu_millis = c.cpu_millis;
        u.memory_bytes = c.memory_bytes;
    }
    u.local_storage_bytes = local_disk_bytes(spec);
    u
}

/// What a reservation of `spec` holds while ACCEPTED and unconsumed: its class counts,
/// `max(cpu_millis, what the classes imply)`, likewise memory, and
/// `local_storage_bytes_per_machine × machines` (at least one machine).
pub fn held_by(spec: &rsv::ReservationSpec, size: impl Fn(&str) -> Option<ClassSize>) -> Usage {
    let mut u = Usage::default();
    let (mut cpu, mut mem, mut machines) = (0i64, 0i64, 0i64);
    for (class, n) in &spec.machine_classes {
        if let Some(c) = size(class) {
            cpu = cpu.saturating_add(c.cpu_millis.saturating_mul(*n));
            mem = mem.saturating_add(c.memory_bytes.saturating_mul(*n));
        }
        machines = machines.saturating_add(*n);
        u.classes.insert(class.clone(), *n);
    }
    u.cpu_millis = cpu.max(spec.cpu_millis);
    u.memory_bytes = mem.max(spec.memory_bytes);
    u.local_storage_bytes = spec
        .local_storage_bytes_per_machine
        .saturating_mul(machines.max(1));
    u
}

/// The reservation's id, `""` without metadata.
pub fn id_of(r: &rsv::Reservation) -> &str {
    r.metadata.as_ref().map_or("", |m| m.id.as_str())
}

/// The reservation's raw state, PENDING (0) without a status.
pub fn state_of(r: &rsv::Reservation) -> i32 {
    r.status.as_ref().map_or(0, |s| s.state)
}

/// Whether the reservation is ACCEPTED (it holds capacity).
pub fn is_accepted(r: &rsv::Reservation) -> bool {
    state_of(r) == ReservationState::ReservationAccepted as i32
}

/// What reservation `r` still holds after `consumed` machines (per class) were created against
/// it: its spec less those machines (their class counts, cpu and memory; the local storage of
/// the machines left). Nothing unless it is ACCEPTED.
pub fn still_held(
    r: &rsv::Reservation,
    consumed: &HashMap<String, i64>,
    size: impl Fn(&str) -> Option<ClassSize>,
) -> Usage {
    let Some(spec) = r.spec.as_ref().filter(|_| is_accepted(r)) else {
        return Usage::default();
    };
    if consumed.is_empty() {
        return held_by(spec, size);
    }
    let mut rest = spec.clone();
    for (class, used) in consumed {
        if let Some(n) = rest.machine_classes.get_mut(class) {
            *n = (*n - used).max(0);
        }
        if let Some(c) = size(class) {
            rest.cpu_millis = rest
                .cpu_millis
                .saturating_sub(c.cpu_millis.saturating_mul(*used))
                .max(0);
            rest.memory_bytes = rest
                .memory_bytes
                .saturating_sub(c.memory_bytes.saturating_mul(*used))
                .max(0);
        }
    }
    rest.machine_classes.retain(|_, n| *n > 0);
    let mut held = held_by(&rest, size);
    if rest.machine_classes.is_empty() {
        held.local_storage_bytes = 0;
    }
    held
}

/// Whether `consumed` machines (per class) consume all of a reservation of `spec`: every class
/// count is reached, or, for a reservation that names no class, any machine was created.
pub fn fully_consumed(
    spec: Option<&rsv::ReservationSpec>,
    consumed: &HashMap<String, i64>,
) -> bool {
    match spec.map(|s| &s.machine_classes) {
        Some(classes) if !classes.is_empty() => classes
            .iter()
            .all(|(c, n)| consumed.get(c).copied().unwrap_or(0) >= *n),
        _ => consumed.values().any(|n| *n > 0),
    }
}

/// The machines per class created against reservation `id`, counted from machines given as
/// (annotations, class): those whose `reservation.irikit.dev/id` annotation names it.
pub fn consumed_by<'a>(
    machines: impl IntoIterator<Item = (&'a HashMap<String, String>, &'a str)>,
    id: &str,
) -> HashMap<String, i64> {
    let mut consumed = HashMap::new();
    for (_, class) in machines.into_iter().filter(|(annotations, _)| {
        annotations
            .get(RESERVATION_ID_ANNOTATION)
            .is_some_and(|n| n == id)
    }) {
        *consumed.entry(class.to_owned()).or_insert(0) += 1;
    }
    consumed
}

/// Why a machine may not consume a reservation (`FailedPrecondition` on the wire).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsumeError {
    /// The reservation is not ACCEPTED (pending, rejected or bound).
    #[error("reservation {id:?} is {state}, not RESERVATION_ACCEPTED")]
    NotAccepted {
        /// The reservation.
        id: String,
        /// Its state's proto name.
        state: &'static str,
    },
    /// Every machine of the class was created already, or it holds none of the class.
    #[error("reservation {id:?} holds no (more) machine of class {class:?}")]
    NoneLeft {
        /// The reservation.
        id: String,
        /// The machine's class.
        class: String,
    },
}

/// Whether one more machine of `class` may consume reservation `r`, of which `consumed`
/// machines were created: it must be ACCEPTED and, if it names classes, have a machine of
/// `class` left. (A reservation naming no class is consumed whole by any machine.)
pub fn check_consume(
    r: &rsv::Reservation,
    class: &str,
    consumed: &HashMap<String, i64>,
) -> Result<(), ConsumeError> {
    if !is_accepted(r) {
        return Err(ConsumeError::NotAccepted {
            id: id_of(r).to_owned(),
            state: ReservationState::try_from(state_of(r)).map_or("UNKNOWN", |s| s.as_str_name()),
        });
    }
    let classes = r.spec.as_ref().map(|s| &s.machine_classes);
    if let Some(classes) = classes.filter(|c| !c.is_empty()) {
        let used = consumed.get(class).copied().unwrap_or(0);
        if used >= classes.get(class).copied().unwrap_or(0) {
            return Err(ConsumeError::NoneLeft {
                id: id_of(r).to_owned(),
                class: class.to_owned(),
            });
        }
    }
    Ok(())
}

/// What is wrong with a reservation spec (`InvalidArgument` on the wire).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// A class the runtime does not offer.
    #[error("unknown machine class {0:?}")]
    UnknownClass(String),
    /// A class count below 1.
    #[error("machine class {class:?}: count {n} is not at least 1")]
    Count {
        /// The class.
        class: String,
        /// Its count.
        n: i64,
    },
    /// A negative amount.
    #[error("{what} is negative ({value})")]
    Negative {
        /// The field.
        what: &'static str,
        /// Its value.
        value: i64,
    },
    /// No class and no amount.
    #[error("reservation.spec reserves nothing")]
    Empty,
}

/// Checks a reservation spec: known classes (`known`) with counts of at least 1 (in name
/// order), no negative amount, and something reserved.
pub fn validate_spec(
    spec: &rsv::ReservationSpec,
    known: impl Fn(&str) -> bool,
) -> Result<(), SpecError> {
    let mut classes: Vec<_> = spec.machine_classes.iter().collect();
    classes.sort();
    for (class, n) in classes {
        if !known(class) {
            return Err(SpecError::UnknownClass(class.clone()));
        }
        if *n < 1 {
            return Err(SpecError::Count {
                class: class.clone(),
                n: *n,
            });
        }
    }
    for (what, value) in [
        ("cpu_millis", spec.cpu_millis),
        ("memory_bytes", spec.memory_bytes),
        (
            "local_storage_bytes_per_machine",
            spec.local_storage_bytes_per_machine,
        ),
    ] {
        if value < 0 {
            return Err(SpecError::Negative { what, value });
        }
    }
    if spec.machine_classes.is_empty()
        && spec.cpu_millis == 0
        && spec.memory_bytes == 0
        && spec.local_storage_bytes_per_machine == 0
    {
        return Err(SpecError::Empty);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::v1alpha1 as meta;

    fn usage(class: &str, n: i64, cpu: i64, mem: i64, local: i64) -> Usage {
        Usage {
            classes: HashMap::from([(class.to_owned(), n)]),
            cpu_millis: cpu,
            memory_bytes: mem,
            local_storage_bytes: local,
        }
    }

    /// Class `c`: 2 cores, 1 GiB; class `d`: 1 core, 2 GiB.
    fn size(class: &str) -> Option<ClassSize> {
        match class {
            "c" => Some(ClassSize::new(2, 1 << 30)),
            "d" => Some(ClassSize::new(1, 2 << 30)),
            _ => None,
        }
    }

    fn reservation(classes: &[(&str, i64)], state: ReservationState) -> rsv::Reservation {
        rsv::Reservation {
            metadata: Some(meta::ObjectMetadata {
                id: "r1".into(),
                ..Default::default()
            }),
            spec: Some(rsv::ReservationSpec {
                machine_classes: classes.iter().map(|(c, n)| ((*c).into(), *n)).collect(),
                local_storage_bytes_per_machine: 10,
                ..Default::default()
            }),
            status: Some(rsv::ReservationStatus {
                state: state as i32,
            }),
        }
    }

    fn counts(pairs: &[(&str, i64)]) -> HashMap<String, i64> {
        pairs.iter().map(|(c, n)| ((*c).into(), *n)).collect()
    }

    #[test]
    fn overflow_names_the_first_dimension_that_does_not_fit() {
        let cap = usage("c", 4, 4000, 4 << 30, 1 << 30);
        let used = usage("c", 3, 3000, 3 << 30, 0);
        assert_eq!(
            used.overflow(&usage("c", 1, 1000, 1 << 30, 1 << 30), &cap),
            None
        );
        for (want, dimension) in [
            (usage("c", 2, 0, 0, 0), "class \"c\""),
            (usage("c", 1, 1001, 0, 0), "cpu millis"),
            (usage("c", 0, 0, (1 << 30) + 1, 0), "memory"),
            (usage("c", 0, 0, 0, (1 << 30) + 1), "local storage"),
        ] {
            let why = used.overflow(&want, &cap).unwrap_or_default();
            assert!(why.contains(dimension), "{why}");
        }
        // An unknown class has no capacity.
        assert!(!used.fits(&usage("x", 1, 0, 0, 0), &cap));
        // A dimension the request does not use never rejects it, even overcommitted.
        let over = usage("c", 5, 9000, 0, 0);
        assert!(over.fits(&usage("c", 0, 0, 1, 0), &cap));
        assert!(!over.fits(&usage("c", 0, 1, 0, 0), &cap));
    }

    #[test]
    fn a_reservation_holds_its_classes_or_its_amounts_whichever_is_more() {
        let mut spec = rsv::ReservationSpec {
            machine_classes: counts(&[("c", 2), ("d", 1)]),
            cpu_millis: 1000,
            memory_bytes: 8 << 30,
            local_storage_bytes_per_machine: 10,
        };
        let held = held_by(&spec, size);
        assert_eq!(held.classes, counts(&[("c", 2), ("d", 1)]));
        assert_eq!(held.cpu_millis, 5000);
        assert_eq!(held.memory_bytes, 8 << 30);
        assert_eq!(held.local_storage_bytes, 30);
        spec.machine_classes.clear();
        assert_eq!(held_by(&spec, size).local_storage_bytes, 10);
    }

    #[test]
    fn consumed_machines_leave_the_hold() {
        let r = reservation(&[("c", 2), ("d", 1)], ReservationState::ReservationAccepted);
        let all = still_held(&r, &HashMap::new(), size);
        assert_eq!(all, held_by(r.spec.as_ref().unwrap(), size));
        let one = still_held(&r, &counts(&[("c", 1)]), size);
        assert_eq!(one.classes, counts(&[("c", 1), ("d", 1)]));
        assert_eq!((one.cpu_millis, one.memory_bytes), (3000, 3 << 30));
        assert_eq!(one.local_storage_bytes, 20);
        let done = counts(&[("c", 2), ("d", 1)]);
        assert!(still_held(&r, &done, size).is_empty());
        assert!(fully_consumed(r.spec.as_ref(), &done));
        assert!(!fully_consumed(r.spec.as_ref(), &counts(&[("c", 2)])));
        // Only an ACCEPTED reservation holds anything.
        let rejected = reservation(&[("c", 1)], ReservationState::ReservationRejected);
        assert!(still_held(&rejected, &HashMap::new(), size).is_empty());
        // One naming no class is consumed whole by its first machine.
        let amounts = reservation(&[], ReservationState::ReservationAccepted);
        assert!(!fully_consumed(amounts.spec.as_ref(), &HashMap::new()));
        assert!(fully_consumed(amounts.spec.as_ref(), &counts(&[("d", 1)])));
    }

    #[test]
    fn consuming_needs_an_accepted_reservation_with_a_machine_left() {
        let r = reservation(&[("c", 1)], ReservationState::ReservationAccepted);
        assert_eq!(check_consume(&r, "c", &HashMap::new()), Ok(()));
        let err = check_consume(&r, "c", &counts(&[("c", 1)])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "reservation \"r1\" holds no (more) machine of class \"c\""
        );
        assert!(check_consume(&r, "d", &HashMap::new()).is_err());
        let bound = reservation(&[("c", 1)], ReservationState::ReservationBound);
        assert_eq!(
            check_consume(&bound, "c", &HashMap::new())
                .unwrap_err()
                .to_string(),
            "reservation \"r1\" is RESERVATION_BOUND, not RESERVATION_ACCEPTED"
        );
        let amounts = reservation(&[], ReservationState::ReservationAccepted);
        assert_eq!(check_consume(&amounts, "d", &HashMap::new()), Ok(()));
    }

    #[test]
    fn consumed_by_counts_the_machines_that_name_the_reservation() {
        let named = HashMap::from([(RESERVATION_ID_ANNOTATION.to_owned(), "r1".to_owned())]);
        let other = HashMap::from([(RESERVATION_ID_ANNOTATION.to_owned(), "r2".to_owned())]);
        let none = HashMap::new();
        let machines = [
            (&named, "c"),
            (&named, "c"),
            (&other, "c"),
            (&none, "d"),
            (&named, "d"),
        ];
        assert_eq!(consumed_by(machines, "r1"), counts(&[("c", 2), ("d", 1)]));
        assert_eq!(
            machine_usage(
                &machine::MachineSpec {
                    class: "c".into(),
                    volumes: vec![machine::Volume {
                        name: "root".into(),
                        local_disk: Some(machine::LocalDisk {
                            size_bytes: 7,
                            ..Default::default()
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
                size
            ),
            Usage {
                classes: counts(&[("c", 1)]),
                cpu_millis: 2000,
                memory_bytes: 1 << 30,
                local_storage_bytes: 7,
            }
        );
    }

    #[test]
    fn specs_are_validated_in_class_order() {
        let known = |c: &str| c != "x";
        let spec = |classes: &[(&str, i64)], cpu| rsv::ReservationSpec {
            machine_classes: counts(classes),
            cpu_millis: cpu,
            ..Default::default()
        };
        assert_eq!(validate_spec(&spec(&[("c", 1)], 0), known), Ok(()));
        assert_eq!(validate_spec(&spec(&[], 5), known), Ok(()));
        for (s, message) in [
            (
                spec(&[("x", 1), ("a", 0)], 0),
                "machine class \"a\": count 0 is not at least 1",
            ),
            (spec(&[("x", 1)], 0), "unknown machine class \"x\""),
            (spec(&[], -1), "cpu_millis is negative (-1)"),
            (spec(&[], 0), "reservation.spec reserves nothing"),
        ] {
            assert_eq!(validate_spec(&s, known).unwrap_err().to_string(), message);
        }
    }
}
