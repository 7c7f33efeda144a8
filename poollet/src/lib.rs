//! The poollets: IronCore's machinepoollet (and, later, volumepoollet) over irikit's
//! [`irikit_api::Store`] and an IRI runtime reached through the generated gRPC client.
//!
//! - [`controller`]: the kube-runtime-style framework (watch → cache → work queue → reconcile
//!   with an error policy, bounded concurrency, graceful shutdown).
//! - [`pool`]: the MachinePool announcement, class mapping, capacity and heartbeat.
//! - [`machine`]: the Machine reconciler (create, update, status, delete, orphan GC) and the
//!   runtime relist.
//! - [`events`]: runtime events (ListEvents) recorded as Events on their Machines.
//! - [`lease`]: the pool Lease the heartbeat renews.
//! - [`lifecycle`]: the control-plane side of liveness (silent pools turn `Ready=Unknown`).
//! - [`machinepoollet`]: [`MachinePoollet`], which runs all of it.

pub mod controller;
pub mod error;
pub mod events;
pub mod lease;
pub mod lifecycle;
pub mod machine;
pub mod machinepoollet;
pub mod pool;

pub use controller::{Action, ObjectRef, Reconciler, WorkQueue};
pub use error::{Error, Result};
pub use machinepoollet::{Config, MachinePoollet};
