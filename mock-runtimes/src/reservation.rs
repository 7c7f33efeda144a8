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
use iri_spec::reservation::ledger::{self, ClassSize, Usage};
use tonic::Status;

use crate::{
    Mutant,
    core::{Core, Reservations, invalid, not_found, rpc_service},
    lock,
    objects::fresh_meta,
};

const ACCEPTED: i32 = ReservationState::ReservationAccepted as i32;
const REJECTED: i32 = ReservationState::ReservationRejected as i32;
const BOUND: i32 = ReservationState::ReservationBound as i32;

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

    /// One machine of class `name`, as the ledger sizes it.
    fn class_size(&self, name: &str) -> Option<ClassSize> {
        self.machine_class(name)
            .map(|c| ClassSize::new(c.cpu, c.memory_bytes))
    }

    /// What reservation `r` still holds (nothing unless it is ACCEPTED).
    fn still_held(&self, st: &Reservations, r: &rsv::Reservation) -> Usage {
        let consumed = st.consumed.get(ledger::id_of(r));
        ledger::still_held(r, consumed.unwrap_or(&HashMap::new()), |c| {
            self.class_size(c)
        })
    }

    /// What the listed machines use.
    fn used_by_machines(&self) -> Usage {
        let mut used = Usage::default();
        for m in self.objects::<machine::Machine>().iter() {
            if let Some(spec) = m.spec.as_ref() {
                used.add(&ledger::machine_usage(spec, |c| self.class_size(c)));
            }
        }
        used
    }

    /// The host: each class's quantity, and cpu and memory as configured (by default what
    /// the quantities of the classes add up to).
    fn capacity(&self) -> Usage {
        let mut u = Usage::default();
        let (mut cpu, mut mem) = (0i64, 0i64);
        for c in &self.config.machine_classes {
            u.classes.insert(c.name.clone(), c.quantity);
            let size = ClassSize::new(c.cpu, c.memory_bytes);
            cpu = cpu.saturating_add(size.cpu_millis.saturating_mul(c.quantity));
            mem = mem.saturating_add(size.memory_bytes.saturating_mul(c.quantity));
        }
        let (host_cpu, host_mem) = self.config.host_resources.unwrap_or((cpu, mem));
        u.cpu_millis = host_cpu;
        u.memory_bytes = host_mem;
        u.local_storage_bytes = self.config.local_storage_bytes;
        u
    }

    /// Whether `want` fits next to the machines and the other reservations' holds.
    fn fits(&self, st: &Reservations, want: &Usage) -> bool {
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
        used.fits(want, &self.capacity())
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
        ledger::validate_spec(&spec, |c| self.machine_class(c).is_some())
            .map_err(|e| invalid(e.to_string()))?;
        let mut md = r.metadata.take().unwrap_or_default();
        fresh_meta(&mut md, &self.new_id(), self.clock.unix_nanos());
        r.metadata = Some(md);
        let want = ledger::held_by(&spec, |c| self.class_size(c));
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
            .filter(|r| filter.id.is_empty() || ledger::id_of(r) == filter.id)
            .filter(|r| {
                filter.label_selector.is_empty()
                    || r.metadata.as_ref().is_some_and(|m| {
                        iri_spec::selector::matches(&filter.label_selector, &m.labels)
                    })
            })
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
        let Some(pos) = st.items.iter().position(|r| ledger::id_of(r) == id) else {
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
        let Some(r) = st
            .items
            .iter_mut()
            .find(|r| ledger::id_of(r) == id.as_str())
        else {
            return Err(Status::failed_precondition(format!(
                "reservation {id:?} not found"
            )));
        };
        if !ledger::is_accepted(r) || !self.has(Mutant::ReservationConsumedWhole) {
            let none = HashMap::new();
            let consumed = st.consumed.get(id.as_str()).unwrap_or(&none);
            ledger::check_consume(r, class, consumed)
                .map_err(|e| Status::failed_precondition(e.to_string()))?;
        }
        let spec = r.spec.as_ref();
        if spec.is_none_or(|s| s.machine_classes.is_empty())
            || self.has(Mutant::ReservationConsumedWhole)
        {
            r.status = Some(rsv::ReservationStatus { state: BOUND });
            return Ok(());
        }
        let consumed = st.consumed.entry(id.clone()).or_default();
        *consumed.entry(class.to_owned()).or_default() += 1;
        if ledger::fully_consumed(spec, consumed) {
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
            && !st.items.iter().any(ledger::is_accepted)
            && st.released.is_empty()
        {
            return Ok(());
        }
        let want = ledger::machine_usage(spec, |c| self.class_size(c));
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

rpc_service! {
    /// The mock's `ReservationRuntime` service (served on the machine runtime's socket).
    ReservationService: ReservationRuntime, ReservationRuntimeServer {
        create_reservation(CreateReservation, rsv::CreateReservationRequest)
            -> rsv::CreateReservationResponse = |core, req| core.create_reservation(req);
        list_reservations(ListReservations, rsv::ListReservationsRequest)
            -> rsv::ListReservationsResponse = |core, req| core.list_reservations(req);
        delete_reservation(DeleteReservation, rsv::DeleteReservationRequest)
            -> rsv::DeleteReservationResponse = |core, req| {
            core.delete_reservation(&req.reservation_id).map(|()| rsv::DeleteReservationResponse {})
        };
    }
}
