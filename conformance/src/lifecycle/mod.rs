//! The lifecycle level (issue 6): irikit's own control plane — a store (memory or etcd), the
//! machine and volume schedulers and the machinepoollet — runs in this process against the
//! runtime under test, and each case applies IronCore objects to the store and checks what
//! reaches the runtime and what comes back (scheduling, labels and annotations, status and
//! observedGeneration, power, deletion through the finalizer, an unreachable runtime).
//!
//! - [`env::Env`]: the per-run environment (store, [`ControlPlane`], MachineClasses
//!   for the runtime's classes, the poollet behind a [`gate::Gate`]).
//! - [`gate`]: the cuttable connection between the poollet and the runtime.
//! - [`cases`]: the cases (ids `lifecycle.*`); the reservation path's cases
//!   (`lifecycle.reservation.*`) switch the plane's machine scheduler to reservation mode for
//!   their run.
//!
//! The runner (`runner::run`; `runner::run_lifecycle` for this level alone) starts the environment when a lifecycle case is
//! selected, after the RPC level, and tears it down afterwards. The poollet reaches the
//! runtime through the same endpoint the RPC level uses (or the embedded mock in process).
//!
//! **Run it against a runtime dedicated to the test**: like IronCore's, the machinepoollet
//! deletes runtime machines carrying machinepoollet labels whose Machine its store does not
//! know (orphan GC), which includes machines of other poollets on a shared runtime.

pub mod cases;
pub mod env;
pub mod gate;
mod reservation;

pub use cases::cases;
pub use env::{Env, LifecycleConfig};
pub use gate::{Gate, Upstream};
pub use irikit_controlplane::{ControlPlane, PlaneConfig};
