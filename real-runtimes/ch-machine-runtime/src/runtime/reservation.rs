//! irikit's reservation extension (`irikit.reservation.v1alpha1.ReservationRuntime`, IronCore
//! IEP-11, issue 15) against this host's real capacity.
//!
//! Capacity has four dimensions:
//! - the machine count of each class: its `Status` quantity (host CPUs × `--cpu-overcommit`
//!   and `MemTotal`, see [`crate::config::HostResources::quantity`]);
//! - CPU: host CPUs × `--cpu-overcommit`, in millicores;
//! - memory: the host's `MemTotal`;
//! - local storage: the free space of the state directory's filesystem (`statvfs`
//!   `f_bavail × f_frsize`) plus what the runtime's own local disks already occupy there (they
//!   are sparse files and count with their full declared size instead).
//!
//! Every machine the runtime lists (running, stopped or terminating) uses one of its class,
//! the class's CPUs and memory, and its local disks' declared sizes. Every ACCEPTED
//! reservation holds its class counts, `max(cpu_millis, what its classes imply)`, likewise
//! memory, and `local_storage_bytes_per_machine × machines`. `CreateReservation` decides at
//! once: ACCEPTED when every dimension still fits next to the machines and the other holds,
//! REJECTED otherwise (listed, holding nothing, until deleted).
//!
//! A `CreateMachine` annotated `reservation.irikit.dev/id=<id>` consumes one machine of that
//! ACCEPTED reservation, as iri-mock does: the hold shrinks by that machine (its class count,
//! CPUs, memory and local storage; the machine uses the capacity instead), the reservation
//! stays ACCEPTED while machines remain and turns BOUND with the last one (a reservation that
//! names no class, with its first). What was consumed is counted from the listed machines that
//! name the reservation, so it survives a restart with them; a consuming machine deleted while
//! the reservation is still ACCEPTED gives its machine back to the hold. A
//! `CreateMachine` without one may not eat into held capacity: while any reservation holds
//! capacity, a machine that does not fit next to the machines and the holds is refused with
//! `ResourceExhausted`. (Without holds, `CreateMachine` stays best-effort, as before.)
//!
//! Reservations are persisted like machines (one file each under `<state-dir>/reservations`,
//! written atomically with fsync) and come back after a restart; a machine that names an
//! ACCEPTED reservation (a crash between the two writes) binds it at start. Decisions and
//! machine admissions are serialised by one lock, so two racing requests cannot both take the
//! last capacity.

use std::{collections::HashMap, os::unix::fs::MetadataExt as _};

use iri_spec::{
    irikit::reservation::v1alpha1::{self as rsv, ReservationState},
    keys::RESERVATION_ID_ANNOTATION,
    machine::v1alpha1 as machine,
    meta::v1alpha1 as meta,
    reservation::ledger::{self, ClassSize, Usage, id_of, is_accepted},
};
use tracing::{info, warn};

use super::{Error, Result, Runtime, new_id, now_ns};
use crate::store::{self, MachineRecord, Store};

const ACCEPTED: i32 = ReservationState::ReservationAccepted as i32;
const REJECTED: i32 = ReservationState::ReservationRejected as i32;
const BOUND: i32 = ReservationState::ReservationBound as i32;

/// The reservations of the runtime, in creation order, and their store.
pub(crate) struct Reservations {
    pub(crate) items: std::sync::Mutex<Vec<rsv::Reservation>>,
    pub(crate) store: Store,
    /// Serialises capacity decisions (CreateReservation, CreateMachine admission) with the
    /// state change they lead to.
    pub(crate) admission: tokio::sync::Mutex<()>,
}

impl Reservations {
    /// Opens `<state_dir>/reservations` and loads what is stored there.
    pub(crate) fn open(dir: std::path::PathBuf) -> store::Result<Self> {
        let store = Store::open(dir)?;
        let items = store.load_reservations()?;
        Ok(Self {
            items: std::sync::Mutex::new(items),
            store,
            admission: tokio::sync::Mutex::new(()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<rsv::Reservation>> {
        self.items
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Bytes a file occupies on disk (0 when it is missing).
fn allocated(path: &std::path::Path) -> i64 {
    std::fs::metadata(path).map_or(0, |m| {
        i64::try_from(m.blocks().saturating_mul(512)).unwrap_or(i64::MAX)
    })
}

impl Runtime {
    fn class_of(&self, name: &str) -> Option<&crate::config::MachineClass> {
        self.inner.cfg.classes.iter().find(|c| c.name == name)
    }

    /// What one machine of class `name` takes.
    fn class_size(&self, name: &str) -> Option<ClassSize> {
        self.class_of(name).map(|c| {
            ClassSize::new(
                i64::from(c.cpu),
                i64::try_from(c.memory_bytes).unwrap_or(i64::MAX),
            )
        })
    }

    /// What one machine of `spec` uses.
    fn machine_usage(&self, spec: &machine::MachineSpec) -> Usage {
        ledger::machine_usage(spec, |c| self.class_size(c))
    }

    /// Machines of each class created against reservation `id`, among `records`.
    fn consumed_by(records: &[MachineRecord], id: &str) -> HashMap<String, i64> {
        ledger::consumed_by(
            records
                .iter()
                .map(|r| (&r.annotations, r.spec.class.as_str())),
            id,
        )
    }

    /// What reservation `r` still holds: its spec less the machines created against it
    /// (nothing unless it is ACCEPTED).
    fn still_held(&self, records: &[MachineRecord], r: &rsv::Reservation) -> Usage {
        ledger::still_held(r, &Self::consumed_by(records, id_of(r)), |c| {
            self.class_size(c)
        })
    }

    /// Whether the machines in `records` consumed all of reservation `r`.
    fn fully_consumed(records: &[MachineRecord], r: &rsv::Reservation) -> bool {
        ledger::fully_consumed(r.spec.as_ref(), &Self::consumed_by(records, id_of(r)))
    }

    fn records(&self) -> Vec<MachineRecord> {
        let entries: Vec<_> = self.lock_machines().values().cloned().collect();
        entries.iter().map(|e| e.snapshot()).collect()
    }

    /// What the machines in `records` use, and the bytes their owned disks occupy now.
    fn used_by_machines(&self, records: &[MachineRecord]) -> (Usage, i64) {
        let mut used = Usage::default();
        let mut occupied = 0i64;
        for record in records {
            used.add(&self.machine_usage(&record.spec));
            for disk in record.disks.iter().filter(|d| d.owned) {
                occupied = occupied.saturating_add(allocated(&disk.disk.path));
            }
        }
        (used, occupied)
    }

    /// The host's capacity; `occupied`: bytes the runtime's own disks take on the state
    /// directory's filesystem (they count in the machines' declared sizes instead).
    fn capacity(&self, occupied: i64) -> Usage {
        let host = &self.inner.host;
        let overcommit = u64::from(self.inner.cfg.cpu_overcommit.max(1));
        let mut u = Usage::default();
        for c in &self.inner.cfg.classes {
            u.classes.insert(
                c.name.clone(),
                host.quantity(c, self.inner.cfg.cpu_overcommit),
            );
        }
        u.cpu_millis = i64::try_from(host.cpus.saturating_mul(overcommit).saturating_mul(1000))
            .unwrap_or(i64::MAX);
        u.memory_bytes = i64::try_from(host.memory_bytes).unwrap_or(i64::MAX);
        let free = rustix::fs::statvfs(&self.inner.cfg.state_dir).map_or(0, |s| {
            i64::try_from(s.f_bavail.saturating_mul(s.f_frsize)).unwrap_or(i64::MAX)
        });
        u.local_storage_bytes = free.saturating_add(occupied);
        u
    }

    /// Machines plus the holds of the ACCEPTED reservations in `items`, and the capacity.
    fn used_and_capacity(&self, items: &[rsv::Reservation]) -> (Usage, Usage, bool) {
        let records = self.records();
        let (mut used, occupied) = self.used_by_machines(&records);
        let mut holds = false;
        for r in items.iter().filter(|r| is_accepted(r)) {
            let held = self.still_held(&records, r);
            holds |= !held.is_empty();
            used.add(&held);
        }
        (used, self.capacity(occupied), holds)
    }

    fn validate_reservation_spec(&self, spec: &rsv::ReservationSpec) -> Result<()> {
        ledger::validate_spec(spec, |c| self.class_of(c).is_some()).map_err(|e| {
            Error::InvalidArgument(match e {
                ledger::SpecError::UnknownClass(class) => {
                    format!("machine class {class:?} is not supported")
                }
                e => e.to_string(),
            })
        })
    }

    fn persist_reservation(&self, r: &rsv::Reservation) -> Result<()> {
        let id = id_of(r);
        self.inner
            .reservations
            .store
            .write(id, &Store::encode_reservation(r))?;
        Ok(())
    }

    /// `CreateReservation`: decide at once, persist, return the reservation.
    pub async fn create_reservation(
        &self,
        request: Option<rsv::Reservation>,
    ) -> Result<rsv::Reservation> {
        let mut r =
            request.ok_or_else(|| Error::InvalidArgument("reservation is required".into()))?;
        let spec = r
            .spec
            .clone()
            .ok_or_else(|| Error::InvalidArgument("reservation.spec is required".into()))?;
        self.validate_reservation_spec(&spec)?;
        let mut md = r.metadata.take().unwrap_or_default();
        md.id = new_id();
        md.generation = 0;
        md.deleted_at = 0;
        md.created_at = now_ns();
        r.metadata = Some(md);
        let want = ledger::held_by(&spec, |c| self.class_size(c));
        let rsvs = &self.inner.reservations;
        let _admission = rsvs.admission.lock().await;
        let items = rsvs.lock().clone();
        let (used, cap, _) = self.used_and_capacity(&items);
        let overflow = used.overflow(&want, &cap);
        r.status = Some(rsv::ReservationStatus {
            state: if overflow.is_none() {
                ACCEPTED
            } else {
                REJECTED
            },
        });
        let persist = r.clone();
        tokio::task::spawn_blocking({
            let this = self.clone();
            move || this.persist_reservation(&persist)
        })
        .await
        .map_err(|e| {
            Error::Store(store::Error::Io {
                what: "persist task",
                path: std::path::PathBuf::new(),
                source: std::io::Error::other(e.to_string()),
            })
        })??;
        rsvs.lock().push(r.clone());
        match overflow {
            None => info!(reservation.id = %id_of(&r), "reservation accepted"),
            Some(why) => info!(reservation.id = %id_of(&r), %why, "reservation rejected"),
        }
        Ok(r)
    }

    /// `ListReservations`.
    pub fn list_reservations(
        &self,
        filter: Option<&rsv::ReservationFilter>,
    ) -> Vec<rsv::Reservation> {
        self.inner
            .reservations
            .lock()
            .iter()
            .filter(|r| {
                filter.is_none_or(|f| {
                    (f.id.is_empty() || id_of(r) == f.id)
                        && (f.label_selector.is_empty()
                            || r.metadata.as_ref().is_some_and(|m| {
                                iri_spec::selector::matches(&f.label_selector, &m.labels)
                            }))
                })
            })
            .cloned()
            .collect()
    }

    /// `DeleteReservation`: forget it (its hold ends).
    pub async fn delete_reservation(&self, id: &str) -> Result<()> {
        if id.is_empty() {
            return Err(Error::InvalidArgument("reservation_id is required".into()));
        }
        let rsvs = &self.inner.reservations;
        let _admission = rsvs.admission.lock().await;
        if !rsvs.lock().iter().any(|r| id_of(r) == id) {
            return Err(Error::ReservationNotFound(id.to_owned()));
        }
        let store = rsvs.store.clone();
        let owned = id.to_owned();
        tokio::task::spawn_blocking(move || store.remove(&owned))
            .await
            .map_err(|e| {
                Error::Store(store::Error::Io {
                    what: "remove task",
                    path: std::path::PathBuf::new(),
                    source: std::io::Error::other(e.to_string()),
                })
            })??;
        rsvs.lock().retain(|r| id_of(r) != id);
        info!(reservation.id = %id, "reservation deleted");
        Ok(())
    }

    /// Admission of a new machine (call holding [`Reservations::admission`] until the machine
    /// is in the map): the id of the ACCEPTED reservation it consumes, or `None` when it names
    /// none and fits next to the machines and the holds (or nothing is held).
    pub(super) fn admit(
        &self,
        md: &meta::ObjectMetadata,
        spec: &machine::MachineSpec,
    ) -> Result<Option<String>> {
        let items = self.inner.reservations.lock().clone();
        if let Some(id) = md.annotations.get(RESERVATION_ID_ANNOTATION) {
            let Some(r) = items.iter().find(|r| id_of(r) == id.as_str()) else {
                return Err(Error::Reservation(format!("reservation {id:?} not found")));
            };
            ledger::check_consume(r, &spec.class, &Self::consumed_by(&self.records(), id))
                .map_err(|e| Error::Reservation(e.to_string()))?;
            return Ok(Some(id.clone()));
        }
        if !items.iter().any(is_accepted) {
            // Nothing is held: best-effort, without counting the machines.
            return Ok(None);
        }
        let (used, cap, holds) = self.used_and_capacity(&items);
        if holds && let Some(why) = used.overflow(&self.machine_usage(spec), &cap) {
            return Err(Error::ResourceExhausted(format!(
                "capacity is held by reservations: {why} (create the machine against a \
                 reservation with the {RESERVATION_ID_ANNOTATION} annotation)"
            )));
        }
        Ok(None)
    }

    /// After machine `machine_id` was created against reservation `id`: marks it BOUND when
    /// that was its last machine (its hold ends) and persists it; a failed write is logged
    /// (the restart check binds it again from the machines' annotations).
    pub(super) async fn bind(&self, id: &str, machine_id: &str) {
        let records = self.records();
        let bound = {
            let mut items = self.inner.reservations.lock();
            items
                .iter_mut()
                .find(|r| id_of(r) == id && Self::fully_consumed(&records, r))
                .map(|r| {
                    r.status = Some(rsv::ReservationStatus { state: BOUND });
                    r.clone()
                })
        };
        if bound.is_none() {
            info!(reservation.id = %id, machine.id = %machine_id, "reservation consumed in part");
        }
        if let Some(r) = bound {
            let this = self.clone();
            let res = tokio::task::spawn_blocking(move || this.persist_reservation(&r)).await;
            if !matches!(res, Ok(Ok(()))) {
                warn!(reservation.id = %id, "persist bound reservation failed");
            }
            info!(reservation.id = %id, machine.id = %machine_id, "reservation bound");
        }
    }

    /// At start: every ACCEPTED reservation the stored machines consumed in full turns BOUND
    /// (a crash came between the last machine's write and the reservation's).
    pub(super) fn bind_named_at_start(&self, records: &[MachineRecord]) {
        let live: Vec<MachineRecord> = records
            .iter()
            .filter(|r| r.deleted_at == 0)
            .cloned()
            .collect();
        let mut items = self.inner.reservations.lock();
        for r in items
            .iter_mut()
            .filter(|r| is_accepted(r) && Self::fully_consumed(&live, r))
        {
            r.status = Some(rsv::ReservationStatus { state: BOUND });
            if let Err(e) = self.persist_reservation(r) {
                warn!(reservation.id = %id_of(r), error = %e, "persist bound reservation");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(class: &str, n: i64, cpu: i64, mem: i64, local: i64) -> Usage {
        Usage {
            classes: HashMap::from([(class.to_owned(), n)]),
            cpu_millis: cpu,
            memory_bytes: mem,
            local_storage_bytes: local,
        }
    }

    #[test]
    fn overflow_names_the_first_dimension_that_does_not_fit() {
        let cap = usage("c", 4, 4000, 4 << 30, 1 << 30);
        let used = usage("c", 3, 3000, 3 << 30, 0);
        assert_eq!(
            used.overflow(&usage("c", 1, 1000, 1 << 30, 1 << 30), &cap),
            None
        );
        let why = used
            .overflow(&usage("c", 2, 0, 0, 0), &cap)
            .unwrap_or_default();
        assert!(why.contains("class \"c\""), "{why}");
        let why = used
            .overflow(&usage("c", 1, 1001, 0, 0), &cap)
            .unwrap_or_default();
        assert!(why.contains("cpu millis"), "{why}");
        let why = used
            .overflow(&usage("c", 0, 0, (1 << 30) + 1, 0), &cap)
            .unwrap_or_default();
        assert!(why.contains("memory"), "{why}");
        let why = used
            .overflow(&usage("c", 0, 0, 0, (1 << 30) + 1), &cap)
            .unwrap_or_default();
        assert!(why.contains("local storage"), "{why}");
        // An unknown class has no capacity.
        assert!(used.overflow(&usage("x", 1, 0, 0, 0), &cap).is_some());
    }
}
