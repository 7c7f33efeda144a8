//! The poollets: IronCore's machinepoollet (and, later, volumepoollet) over irikit's
//! [`irikit_api::Store`] and an IRI runtime reached through the generated gRPC client.
//!
//! - [`controller`]: the kube-runtime-style framework (watch → cache → work queue → reconcile
//!   with an error policy, bounded concurrency, graceful shutdown).
//! - [`pool`]: the MachinePool announcement, class mapping, capacity and heartbeat.

pub mod controller;
pub mod error;
pub mod pool;
