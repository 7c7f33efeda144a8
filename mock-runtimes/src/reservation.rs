//! The mock `ReservationRuntime` (irikit's IRI extension `irikit.reservation.v1alpha1`, IronCore
//! IEP-11): reservations that hold capacity until they are deleted or consumed by a
//! `CreateMachine` that names them in the `reservation.irikit.dev/id` annotation.
//!
//! Capacity has four dimensions: the machine count of each class (its configured quantity),
//! the host's cpu and memory (by default the sum of `quantity × cpu/memory` over the classes,
//! see [`crate::MockRuntimeBuilder::host_resources`]) and the host's local storage
//! ([`crate::MockRuntimeBuilder::local_storage_bytes`]). Listed machines (running or
//! terminating) use their class, its cpu and memory, and their local disks' bytes; every
//! ACCEPTED reservation holds its class counts, `max(cpu_millis, what its classes imply)`,
//! likewise memory, and `local_storage_bytes_per_machine × machines`. A new reservation is
//! ACCEPTED when every dimension still fits, REJECTED otherwise (kept listed, holding nothing).
//!
//! A reservation of `n` machines is consumed one machine at a time: each `CreateMachine` that
//! names it takes one machine of its class out of the hold (and that machine's cpu, memory and
//! local storage), the reservation stays ACCEPTED while machines remain and turns BOUND with
//! the last one. A reservation that names no class is consumed whole by its first machine.
//! While any reservation holds capacity, a `CreateMachine` that names none must fit next to the
//! machines and the holds, else it is `ResourceExhausted` (with no hold, `CreateMachine` does
//! not check capacity, like IronCore's fake runtime).

use std::collections::HashMap;

use iri_spec::irikit::reservation::v1alpha1::{
    self as rsv, ReservationState,
    reservation_runtime_server::{ReservationRuntime, ReservationRuntimeServer},
};
use iri_spec::machine::v1alpha1 as machine;
use iri_spec::meta::v1alpha1 as meta;
use tonic::{Request, Response, Status};

use crate::{
    Method, Mutant,
    core::{Core, invalid, labels_match, not_found},
    lock,
};

/// The reservations of one mock, in creation order.
#[derive(Debug, Default)]
pub(crate) struct ReservationStore {
    items: Vec<rsv::Reservation>,
    /// Reservation id → machines created against it so far, per class (the hold shrinks by
    /// one machine each time).
    consumed: HashMap<String, HashMap<String, i64>>,
    /// Holds of deleted reservations that stay counted (only under
    /// [`Mutant::ReservationDeleteKeepsHold`]).
    released: Vec<Usage>,
}

impl ReservationStore {
    pub(crate) fn all(&self) -> Vec<rsv::Reservation> {
        self.items.clone()
    }
}

const ACCEPTED: i32 = ReservationState::ReservationAccepted as i32;
const REJECTED: i32 = ReservationState::ReservationRejected as i32;
const BOUND: i32 = ReservationState::ReservationBound as i32;

fn id_of(r: &rsv::Reservation) -> &str {
    r.metadata.as_ref().map_or("", |m| m.id.as_str())
}

fn state_of(r: &rsv::Reservation) -> i32 {
    r.status.as_ref().map_or(0, |s| s.state)
}

/// The local disk bytes of a machine's volumes.
fn local_disk_bytes(spec: &machine::MachineSpec) -> i64 {
    spec.volumes
        .iter()
        .filter_map(|v| v.local_disk.as_ref())
        .map(|d| d.size_bytes.max(0))
        .fold(0i64, i64::saturating_add)
}

/// Resource amounts over the four dimensions.
#[derive(Debug, Default, Clone)]
struct Usage {
    classes: HashMap<String, i64>,
    cpu_millis: i64,
    memory_bytes: i64,
    local_storage_bytes: i64,
}

impl Usage {
    fn add(&mut self, other: &Usage) {
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
}

impl Core {
    fn reservations_served(&self) -> Result<(), Status> {
        if self.config.reservations {
            Ok(())
        } else {
            Err(Status::unimplemented(
                "this iri-mock was built without reservations",
            ))
        }
    }

    /// What reservation `r` still holds: its spec less the machines created against it so far
    /// (nothing unless it is ACCEPTED).
    fn still_held(&self, st: &ReservationStore, r: &rsv::Reservation) -> Usage {
        let Some(spec) = r.spec.as_ref().filter(|_| state_of(r) == ACCEPTED) else {
            return Usage::default();
        };
        let Some(consumed) = st.consumed.get(id_of(r)) else {
            return self.held_by(spec);
        };
        let mut rest = spec.clone();
        for (class, used) in consumed {
            if let Some(n) = rest.machine_classes.get_mut(class) {
                *n = (*n - used).max(0);
            }
            if let Some(c) = self.machine_class(class) {
                rest.cpu_millis = rest
                    .cpu_millis
                    .saturating_sub(c.cpu.saturating_mul(1000).saturating_mul(*used))
                    .max(0);
                rest.memory_bytes = rest
                    .memory_bytes
                    .saturating_sub(c.memory_bytes.saturating_mul(*used))
                    .max(0);
            }
        }
        rest.machine_classes.retain(|_, n| *n > 0);
        let mut held = self.held_by(&rest);
        if rest.machine_classes.is_empty() {
            held.local_storage_bytes = 0;
        }
        held
    }

    /// What `spec` holds while ACCEPTED (classes must be known; checked at create).
    fn held_by(&self, spec: &rsv::ReservationSpec) -> Usage {
        let mut u = Usage::default();
        let (mut cpu, mut mem, mut machines) = (0i64, 0i64, 0i64);
        for (class, n) in &spec.machine_classes {
            if let Some(c) = self.machine_class(class) {
                cpu = cpu.saturating_add(c.cpu.saturating_mul(1000).saturating_mul(*n));
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

    /// What the listed machines use.
    fn used_by_machines(&self) -> Usage {
        let mut st = lock(&self.machines);
        self.advance_machines(&mut st);
        let mut u = Usage::default();
        for m in st.store.iter() {
            let Some(spec) = m.spec.as_ref() else {
                continue;
            };
            let mut one = Usage::default();
            if let Some(c) = self.machine_class(&spec.class) {
                one.classes.insert(c.name.clone(), 1);
                one.cpu_millis = c.cpu.saturating_mul(1000);
                one.memory_bytes = c.memory_bytes;
            }
            one.local_storage_bytes = local_disk_bytes(spec);
            u.add(&one);
        }
        u
    }

    fn capacity(&self) -> Usage {
        let mut u = Usage::default();
        let (mut cpu, mut mem) = (0i64, 0i64);
        for c in &self.config.machine_classes {
            u.classes.insert(c.name.clone(), c.quantity);
            cpu = cpu.saturating_add(c.cpu.saturating_mul(1000).saturating_mul(c.quantity));
            mem = mem.saturating_add(c.memory_bytes.saturating_mul(c.quantity));
        }
        let (host_cpu, host_mem) = self.config.host_resources.unwrap_or((cpu, mem));
        u.cpu_millis = host_cpu;
        u.memory_bytes = host_mem;
        u.local_storage_bytes = self.config.local_storage_bytes;
        u
    }

    fn validate_reservation_spec(&self, spec: &rsv::ReservationSpec) -> Result<(), Status> {
        for (class, n) in &spec.machine_classes {
            if self.machine_class(class).is_none() {
                return Err(invalid(format!("unknown machine class {class:?}")));
            }
            if *n < 1 {
                return Err(invalid(format!(
                    "machine class {class:?}: count {n} is not at least 1"
                )));
            }
        }
        for (what, v) in [
            ("cpu_millis", spec.cpu_millis),
            ("memory_bytes", spec.memory_bytes),
            (
                "local_storage_bytes_per_machine",
                spec.local_storage_bytes_per_machine,
            ),
        ] {
            if v < 0 {
                return Err(invalid(format!("{what} is negative ({v})")));
            }
        }
        if spec.machine_classes.is_empty()
            && spec.cpu_millis == 0
            && spec.memory_bytes == 0
            && spec.local_storage_bytes_per_machine == 0
        {
            return Err(invalid("reservation.spec reserves nothing"));
        }
        Ok(())
    }

    /// Whether `want` fits next to the machines and the other reservations' holds.
    fn fits(&self, st: &ReservationStore, want: &Usage) -> bool {
        if self.has(Mutant::ReservationCapacityUnchecked) {
            return true;
        }
        let mut used = self.used_by_machines();
        if !self.has(Mutant::ReservationHoldsIgnored) {
            for r in &st.items {
                used.add(&self.still_held(st, r));
            }
        }
        for held in &st.released {
            used.add(held);
        }
        let cap = self.capacity();
        // A dimension the request does not use never rejects it (unreserved machines may
        // have overcommitted it: CreateMachine checks capacity only while something is held).
        let fits = |used: i64, want: i64, cap: i64| want == 0 || used.saturating_add(want) <= cap;
        want.classes.iter().all(|(class, n)| {
            fits(
                used.classes.get(class).copied().unwrap_or(0),
                *n,
                cap.classes.get(class).copied().unwrap_or(0),
            )
        }) && fits(used.cpu_millis, want.cpu_millis, cap.cpu_millis)
            && fits(used.memory_bytes, want.memory_bytes, cap.memory_bytes)
            && fits(
                used.local_storage_bytes,
                want.local_storage_bytes,
                cap.local_storage_bytes,
            )
    }

    fn create_reservation(
        &self,
        req: rsv::CreateReservationRequest,
    ) -> Result<rsv::CreateReservationResponse, Status> {
        self.reservations_served()?;
        let mut r = req
            .reservation
            .ok_or_else(|| invalid("reservation is required"))?;
        let spec = r
            .spec
            .clone()
            .ok_or_else(|| invalid("reservation.spec is required"))?;
        self.validate_reservation_spec(&spec)?;
        let mut md = r.metadata.take().unwrap_or_default();
        md.id = self.new_id();
        md.generation = 0;
        md.deleted_at = 0;
        md.created_at = self.created_at(false, false);
        r.metadata = Some(md);
        let want = self.held_by(&spec);
        let mut st = lock(&self.reservations);
        let accepted = !self.has(Mutant::ReservationAlwaysRejected) && self.fits(&st, &want);
        r.status = Some(rsv::ReservationStatus {
            state: if accepted { ACCEPTED } else { REJECTED },
        });
        st.items.push(r.clone());
        Ok(rsv::CreateReservationResponse {
            reservation: Some(r),
        })
    }

    fn list_reservations(
        &self,
        req: rsv::ListReservationsRequest,
    ) -> Result<rsv::ListReservationsResponse, Status> {
        self.reservations_served()?;
        let filter = req.filter.unwrap_or_default();
        let st = lock(&self.reservations);
        let reservations = st
            .items
            .iter()
            .filter(|r| filter.id.is_empty() || id_of(r) == filter.id)
            .filter(|r| labels_match(&filter.label_selector, r.metadata.as_ref()))
            .cloned()
            .collect();
        Ok(rsv::ListReservationsResponse { reservations })
    }

    fn delete_reservation(&self, id: &str) -> Result<(), Status> {
        self.reservations_served()?;
        if id.is_empty() {
            return Err(invalid("reservation_id is required"));
        }
        let mut st = lock(&self.reservations);
        let Some(pos) = st.items.iter().position(|r| id_of(r) == id) else {
            return Err(not_found("reservation", id));
        };
        let r = st.items.remove(pos);
        if self.has(Mutant::ReservationDeleteKeepsHold) {
            let held = self.still_held(&st, &r);
            st.released.push(held);
        }
        st.consumed.remove(id);
        Ok(())
    }

    /// Called by `CreateMachine` before it stores the machine: a machine annotated with
    /// `reservation.irikit.dev/id` consumes one machine of that ACCEPTED reservation (the hold
    /// shrinks by it, the machine uses the capacity instead; with the last machine the
    /// reservation turns BOUND). An unknown id, a reservation that is not ACCEPTED, or one
    /// without (more) machines of the class is `FailedPrecondition`. A machine that names no
    /// reservation must fit next to the machines and every hold while any reservation holds
    /// capacity (`ResourceExhausted`).
    pub(crate) fn consume_reservation(
        &self,
        md: Option<&meta::ObjectMetadata>,
        spec: &machine::MachineSpec,
    ) -> Result<(), Status> {
        if !self.config.reservations {
            return Ok(());
        }
        let Some(id) = md.and_then(|md| {
            md.annotations
                .get(iri_spec::keys::RESERVATION_ID_ANNOTATION)
        }) else {
            return self.check_unreserved(spec);
        };
        if self.has(Mutant::ReservationNotConsumed) {
            return Ok(());
        }
        let class = spec.class.as_str();
        let mut guard = lock(&self.reservations);
        let st = &mut *guard;
        let Some(r) = st.items.iter_mut().find(|r| id_of(r) == id.as_str()) else {
            return Err(Status::failed_precondition(format!(
                "reservation {id:?} not found"
            )));
        };
        let state = state_of(r);
        if state != ACCEPTED {
            let name = ReservationState::try_from(state)
                .map_or("UNKNOWN", |s| s.as_str_name())
                .to_owned();
            return Err(Status::failed_precondition(format!(
                "reservation {id:?} is {name}, not RESERVATION_ACCEPTED"
            )));
        }
        let classes = r
            .spec
            .as_ref()
            .map(|s| s.machine_classes.clone())
            .unwrap_or_default();
        if classes.is_empty() || self.has(Mutant::ReservationConsumedWhole) {
            r.status = Some(rsv::ReservationStatus { state: BOUND });
            return Ok(());
        }
        let consumed = st.consumed.entry(id.clone()).or_default();
        let used = consumed.get(class).copied().unwrap_or(0);
        if used >= classes.get(class).copied().unwrap_or(0) {
            return Err(Status::failed_precondition(format!(
                "reservation {id:?} holds no (more) machine of class {class:?}"
            )));
        }
        consumed.insert(class.to_owned(), used + 1);
        let all = classes
            .iter()
            .all(|(c, n)| consumed.get(c).copied().unwrap_or(0) >= *n);
        if all {
            r.status = Some(rsv::ReservationStatus { state: BOUND });
        }
        Ok(())
    }

    /// A create that names no reservation, while reservations hold capacity: it must fit next
    /// to the machines and the holds.
    fn check_unreserved(&self, spec: &machine::MachineSpec) -> Result<(), Status> {
        if self.has(Mutant::ReservationUnreservedTakesHold) {
            return Ok(());
        }
        let st = lock(&self.reservations);
        if !self.config.enforce_capacity
            && !st.items.iter().any(|r| state_of(r) == ACCEPTED)
            && st.released.is_empty()
        {
            return Ok(());
        }
        let mut want = Usage::default();
        if let Some(c) = self.machine_class(&spec.class) {
            want.classes.insert(c.name.clone(), 1);
            want.cpu_millis = c.cpu.saturating_mul(1000);
            want.memory_bytes = c.memory_bytes;
        }
        want.local_storage_bytes = local_disk_bytes(spec);
        if self.fits(&st, &want) {
            Ok(())
        } else {
            Err(Status::resource_exhausted(format!(
                "no capacity for a {:?} machine: what is free is held by reservations (name one with the {} annotation)",
                spec.class,
                iri_spec::keys::RESERVATION_ID_ANNOTATION
            )))
        }
    }
}

/// The mock's `ReservationRuntime` service (served on the machine runtime's socket).
#[derive(Debug, Clone)]
pub struct ReservationService {
    pub(crate) core: std::sync::Arc<Core>,
}

impl ReservationService {
    /// The tonic server for this service.
    pub fn into_server(self) -> ReservationRuntimeServer<Self> {
        ReservationRuntimeServer::new(self)
    }
}

type R<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl ReservationRuntime for ReservationService {
    async fn create_reservation(
        &self,
        request: Request<rsv::CreateReservationRequest>,
    ) -> R<rsv::CreateReservationResponse> {
        let (call, req) = self.core.begin(Method::CreateReservation, request).await?;
        let res = self.core.create_reservation(req);
        call.finish(res)
    }

    async fn list_reservations(
        &self,
        request: Request<rsv::ListReservationsRequest>,
    ) -> R<rsv::ListReservationsResponse> {
        let (call, req) = self.core.begin(Method::ListReservations, request).await?;
        let res = self.core.list_reservations(req);
        call.finish(res)
    }

    async fn delete_reservation(
        &self,
        request: Request<rsv::DeleteReservationRequest>,
    ) -> R<rsv::DeleteReservationResponse> {
        let (call, req) = self.core.begin(Method::DeleteReservation, request).await?;
        let res = self.core.delete_reservation(&req.reservation_id);
        call.finish(res.map(|()| rsv::DeleteReservationResponse {}))
    }
}
