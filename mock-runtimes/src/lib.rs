//! In-memory IRI runtimes for tests: a machine, volume and bucket runtime served over gRPC, with a
//! realistic state machine, a call log, wiremock-style expectations, fault injection and mutants.
//!
//! IronCore's Go fakes are Go interfaces without a state machine, faults or a call log. This
//! crate is what Rust tests embed instead: it starts in microseconds, talks real gRPC (over an
//! in-process duplex stream, a unix socket or loopback TCP), and lets a test script failures.
//!
//! # Embedding the mock in a test
//!
//! ```
//! use iri_mock::{Method, MockRuntime, fixtures};
//! use iri_spec::machine::v1alpha1::{self as machine, machine_runtime_client::MachineRuntimeClient};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> anyhow::Result<()> {
//! let mock = MockRuntime::builder().start_in_process().await?;
//! mock.expect(Method::CreateMachine).times(1);
//!
//! let mut client = MachineRuntimeClient::new(mock.machine_channel());
//! let created = client
//!     .create_machine(machine::CreateMachineRequest { machine: Some(fixtures::machine()) })
//!     .await?
//!     .into_inner();
//! let id = created.machine.unwrap().metadata.unwrap().id;
//!
//! // Zero delays (the default): the next call sees the machine RUNNING.
//! let listed = client
//!     .list_machines(machine::ListMachinesRequest {
//!         filter: Some(machine::MachineFilter { id: id.clone(), ..Default::default() }),
//!     })
//!     .await?
//!     .into_inner();
//! assert_eq!(listed.machines[0].status.as_ref().unwrap().state, machine::MachineState::MachineRunning as i32);
//! assert_eq!(mock.calls().len(), 2);
//! # Ok(())
//! # } // the expectation is verified when `mock` drops
//! ```
//!
//! # Semantics
//!
//! The runtimes follow IronCore's fakes (reference §2.3/§2.4), corrected toward the runtime
//! contract (§7.4): fresh 63-hex-char ids, `created_at` in Unix ns, labels and annotations stored
//! verbatim, `NotFound` for unknown ids and names, `AlreadyExists` for a duplicate volume/NIC name,
//! `InvalidArgument` for empty ids, missing sub-messages, unknown classes and non-positive sizes,
//! and every listed object with metadata, spec and status. Deletion sets `deleted_at` and
//! TERMINATING and keeps the object listed for [`Delays::terminate`]; a repeated delete meanwhile
//! is OK. `generation` goes up on every spec change and `observed_generation` follows when the
//! change is applied. Events (create, delete, state change) carry `event_time` in Unix seconds.
//!
//! **Transition rule.** A transition with delay `d` caused at time `t` becomes visible to the
//! first call that starts at or after `t + d`, never in the response of the call that caused it
//! (see [`Delays`]). Delays use tokio's clock, so `tokio::time::pause()` works.
//!
//! # Test control
//!
//! [`MockRuntime`] derefs to [`MockHandle`]: read and force object state, inject events, inspect
//! the [`Call`] log, register [`Expectation`]s, install [`FaultRule`]s and switch [`Mutant`]s.

mod bucket;
mod builder;
mod calls;
pub mod classes;
mod clock;
mod conn;
pub mod console;
mod core;
mod events;
mod fault;
pub mod fixtures;
mod handle;
mod machine;
mod method;
mod mutant;
mod objects;
mod reservation;
mod server;
pub mod standalone;
mod store;

use std::sync::{Mutex, MutexGuard, PoisonError};

pub use bucket::BucketService;
pub use builder::{DEFAULT_LOCAL_STORAGE_BYTES, MockRuntimeBuilder};
pub use calls::{Call, Expectation, RequestMessage};
pub use clock::is_idgen_id;
pub use core::Delays;
pub use fault::{Effect, FaultId, FaultRule, Trigger};
pub use handle::{MockHandle, VerifyError};
pub use machine::MachineService;
pub use method::{Method, UnknownMethod};
pub use mutant::{Mutant, UnknownMutant};
pub use reservation::ReservationService;
pub use server::{Error, InProcessDialer, MockRuntime, Result, bind_unix};
pub use volume::VolumeService;

mod volume;

/// Locks a mutex, ignoring poisoning (a panicking test thread must not break other users).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
