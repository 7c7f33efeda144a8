//! irikit's assembled control plane: what `irikit` runs and what the conformance suite's
//! lifecycle level and the machine broker's planes embed.
//!
//! - [`ControlPlane`] ([`plane`]): a store, the machine scheduler (best-effort or reservation
//!   mode), the volume scheduler, the pool-liveness controller and poollets in one process,
//!   stopped by one token.
//! - [`liveness`]: the pool-liveness controller (IronCore's `MachinePoolLifecycleReconciler`:
//!   a pool whose poollet went silent turns `Ready=Unknown`).
//! - [`up`]: `irikit up`, the whole plane in one process against the embedded mock runtimes or
//!   real runtime endpoints, printing every state change.
//! - [`controllers`]: `irikit controllers`, the cluster-wide controllers alone against a
//!   shared store.
//! - [`ctl`]: `irikit apply | get | delete | validate`, a store's objects in and out.
//!
//! It links `poollet`, `scheduler` and `iri-mock` (the embedded runtimes of `up`); real
//! runtimes only ever run as child processes, reached through their endpoints.

pub mod controllers;
pub mod ctl;
pub mod liveness;
pub mod plane;
pub mod up;

pub use plane::{ControlPlane, PlaneConfig};
