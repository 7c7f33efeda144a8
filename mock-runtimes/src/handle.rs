//! The control surface of a mock, [`MockHandle`]: its services, call log, expectations, faults,
//! mutants and stored objects.

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, Mutex},
};

use iri_spec::{
    bucket::v1alpha1 as bucket, event::v1alpha1 as event, kind::Service,
    machine::v1alpha1 as machine, volume::v1alpha1 as volume,
};

use crate::{
    BucketService, Call, Expectation, FaultId, FaultRule, MachineService, Method, Mutant,
    ReservationService, VolumeService, calls::ExpectationState, core::Core, lock,
    objects::MockKind,
};

/// Unmet expectations, one per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.join("\n"))]
pub struct VerifyError(pub Vec<String>);

/// Controls and inspects a mock: call log, expectations, faults, mutants and the stored objects.
/// Cheap to clone; does not verify on drop (only [`MockRuntime`](crate::MockRuntime) does).
#[derive(Clone)]
pub struct MockHandle {
    pub(crate) core: Arc<Core>,
}

impl fmt::Debug for MockHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockHandle")
            .field("core", &self.core)
            .finish()
    }
}

impl MockHandle {
    /// The `MachineRuntime` service, to serve on a transport of your own.
    pub fn machine_service(&self) -> MachineService {
        MachineService {
            core: self.core.clone(),
        }
    }

    /// The `VolumeRuntime` service.
    pub fn volume_service(&self) -> VolumeService {
        VolumeService {
            core: self.core.clone(),
        }
    }

    /// The `BucketRuntime` service.
    pub fn bucket_service(&self) -> BucketService {
        BucketService {
            core: self.core.clone(),
        }
    }

    /// irikit's `ReservationRuntime` extension, served next to the `MachineRuntime`.
    pub fn reservation_service(&self) -> ReservationService {
        ReservationService {
            core: self.core.clone(),
        }
    }

    /// Every reservation, in creation order (deleted ones are gone).
    pub fn reservations(&self) -> Vec<iri_spec::irikit::reservation::v1alpha1::Reservation> {
        lock(&self.core.reservations).items.clone()
    }

    // --- mutants

    /// Switches a mutant on or off while the mock runs.
    pub fn set_mutant(&self, mutant: Mutant, on: bool) {
        self.core.mutants.set(mutant, on);
    }

    /// The mutants that are on.
    pub fn mutants(&self) -> Vec<Mutant> {
        self.core.mutants.active()
    }

    // --- call log

    /// The recorded calls, oldest first.
    pub fn calls(&self) -> Vec<Call> {
        lock(&self.core.calls).calls.iter().cloned().collect()
    }

    /// The recorded calls of `method`.
    pub fn calls_to(&self, method: Method) -> Vec<Call> {
        lock(&self.core.calls)
            .calls
            .iter()
            .filter(|c| c.method == method)
            .cloned()
            .collect()
    }

    /// How many recorded calls of `method` there are.
    pub fn call_count(&self, method: Method) -> usize {
        lock(&self.core.calls)
            .calls
            .iter()
            .filter(|c| c.method == method)
            .count()
    }

    /// Forgets the recorded calls (expectation counts are kept).
    pub fn clear_calls(&self) {
        lock(&self.core.calls).calls.clear();
    }

    /// Panics unless exactly `n` calls of `method` were recorded.
    #[track_caller]
    pub fn assert_called(&self, method: Method, n: usize) {
        let calls = self.calls_to(method);
        assert!(
            calls.len() == n,
            "expected {n} call(s) of {}, got {}: {calls:#?}",
            method.name(),
            calls.len()
        );
    }

    /// Panics unless the recorded calls, in order, have exactly these methods.
    #[track_caller]
    pub fn assert_calls(&self, methods: &[Method]) {
        let got: Vec<Method> = self.calls().iter().map(|c| c.method).collect();
        assert!(
            got == methods,
            "expected calls {:?}, got {:?}",
            methods.iter().map(|m| m.name()).collect::<Vec<_>>(),
            got.iter().map(|m| m.name()).collect::<Vec<_>>()
        );
    }

    /// Panics unless some recorded call of `method` ended with `code`.
    #[track_caller]
    pub fn assert_any_code(&self, method: Method, code: tonic::Code) {
        let calls = self.calls_to(method);
        assert!(
            calls.iter().any(|c| c.code == Some(code)),
            "expected a call of {} with code {code:?}, got {calls:#?}",
            method.name()
        );
    }

    // --- expectations

    /// Registers an expectation on `method` (at least one call unless refined), checked when the
    /// [`MockRuntime`](crate::MockRuntime) drops or by [`verify`](Self::verify).
    pub fn expect(&self, method: Method) -> Expectation {
        let state = Arc::new(Mutex::new(ExpectationState {
            method,
            name: None,
            min: 1,
            max: None,
            code: None,
            predicate: None,
            matched: 0,
        }));
        lock(&self.core.calls).expectations.push(state.clone());
        Expectation { state }
    }

    /// Checks every expectation now.
    pub fn verify(&self) -> Result<(), VerifyError> {
        let failures: Vec<String> = lock(&self.core.calls)
            .expectations
            .iter()
            .filter_map(|e| lock(e).failure())
            .collect();
        if failures.is_empty() {
            Ok(())
        } else {
            Err(VerifyError(failures))
        }
    }

    /// Removes every expectation (e.g. after verifying one phase of a test).
    pub fn reset_expectations(&self) {
        lock(&self.core.calls).expectations.clear();
    }

    // --- faults

    /// Installs a fault rule.
    pub fn add_fault(&self, rule: FaultRule) -> FaultId {
        let id = lock(&self.core.faults).add(rule);
        self.core
            .faults_on
            .store(true, std::sync::atomic::Ordering::Relaxed);
        id
    }

    /// Removes a fault rule; false if it was not installed.
    pub fn remove_fault(&self, id: FaultId) -> bool {
        lock(&self.core.faults).remove(id)
    }

    /// Removes every fault rule.
    pub fn clear_faults(&self) {
        lock(&self.core.faults).clear();
    }

    /// Every stored object of a kind, in creation order, as List shows it.
    fn all<K: MockKind>(&self) -> Vec<K> {
        self.core.list("", &HashMap::new()).unwrap_or_default()
    }

    // --- machines

    /// The stored machine `id` (as stored, without output mutants).
    pub fn machine(&self, id: &str) -> Option<machine::Machine> {
        self.core.get(id)
    }

    /// Every stored machine, in creation order.
    pub fn machines(&self) -> Vec<machine::Machine> {
        self.all()
    }

    /// How many machines are stored (terminating ones included).
    pub fn machine_count(&self) -> usize {
        self.core.count::<machine::Machine>()
    }

    /// Stores a machine as given and returns its id.
    pub fn insert_machine(&self, m: machine::Machine) -> String {
        self.core.seed(m)
    }

    /// Forces a machine's state (cancelling pending provisioning/power transitions) and records
    /// a state-change event. False if the machine is unknown.
    pub fn set_machine_state(&self, id: &str, state: machine::MachineState) -> bool {
        self.core.force_state::<machine::Machine>(id, state as i32)
    }

    /// Changes a stored machine in place. False if unknown.
    pub fn modify_machine(&self, id: &str, f: impl FnOnce(&mut machine::Machine)) -> bool {
        self.core.modify(id, f)
    }

    /// Adds an event to the machine service's event list.
    pub fn inject_machine_event(&self, ev: event::Event) {
        self.core.inject_event(Service::Machine, ev);
    }

    // --- volumes, snapshots

    /// The stored volume `id`.
    pub fn volume(&self, id: &str) -> Option<volume::Volume> {
        self.core.get(id)
    }

    /// Every stored volume, in creation order.
    pub fn volumes(&self) -> Vec<volume::Volume> {
        self.all()
    }

    /// Stores a volume as given and returns its id.
    pub fn insert_volume(&self, v: volume::Volume) -> String {
        self.core.seed(v)
    }

    /// Forces a volume's state. False if unknown.
    pub fn set_volume_state(&self, id: &str, state: volume::VolumeState) -> bool {
        self.core.force_state::<volume::Volume>(id, state as i32)
    }

    /// Changes a stored volume in place (e.g. to give its access `secret_data`). False if
    /// unknown.
    pub fn modify_volume(&self, id: &str, f: impl FnOnce(&mut volume::Volume)) -> bool {
        self.core.modify(id, f)
    }

    /// Every stored volume snapshot.
    pub fn volume_snapshots(&self) -> Vec<volume::VolumeSnapshot> {
        self.all()
    }

    /// Forces a snapshot's state. False if unknown.
    pub fn set_volume_snapshot_state(&self, id: &str, state: volume::VolumeSnapshotState) -> bool {
        self.core
            .force_state::<volume::VolumeSnapshot>(id, state as i32)
    }

    /// Adds an event to the volume service's event list.
    pub fn inject_volume_event(&self, ev: event::Event) {
        self.core.inject_event(Service::Volume, ev);
    }

    // --- buckets

    /// Every stored bucket, in creation order.
    pub fn buckets(&self) -> Vec<bucket::Bucket> {
        self.all()
    }

    /// Stores a bucket as given and returns its id.
    pub fn insert_bucket(&self, b: bucket::Bucket) -> String {
        self.core.seed(b)
    }

    /// Forces a bucket's state. False if unknown.
    pub fn set_bucket_state(&self, id: &str, state: bucket::BucketState) -> bool {
        self.core.force_state::<bucket::Bucket>(id, state as i32)
    }

    /// Adds an event to the bucket service's event list.
    pub fn inject_bucket_event(&self, ev: event::Event) {
        self.core.inject_event(Service::Bucket, ev);
    }
}
