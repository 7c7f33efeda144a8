//! The poollets: IronCore's machinepoollet and volumepoollet over irikit's
//! [`irikit_api::Store`] and an IRI runtime reached through the generated gRPC client.
//!
//! - [`cli`]: log set-up and signal handling shared by the binaries.
//! - [`controller`]: the kube-runtime-style framework (watch → cache → work queue → reconcile
//!   with an error policy, bounded concurrency, graceful shutdown).
//! - [`pool`]: the MachinePool announcement, class mapping, capacity and heartbeat.
//! - [`machine`]: the Machine reconciler (create, update, status, delete, orphan GC, NICs and
//!   storage volumes through the claim flow) and the runtime relist.
//! - [`events`]: the poollets' own Events, and runtime events (ListEvents) recorded as Events
//!   on their Machines and Volumes.
//! - [`lease`]: the pool Lease the heartbeat renews.
//! - [`reservation`]: Reservations passed down to the runtime and their state back up
//!   (IEP-11), and the pool's `reservation.irikit.dev/supported` annotation.
//! - [`machinepoollet`]: [`MachinePoollet`], which runs the machine side.
//! - [`volumepool`]: the VolumePool announcement (volume class mapping, bytes capacity).
//! - [`volume`]: the Volume and VolumeSnapshot reconcilers, runtime relist and event mapper.
//! - [`volumepoollet`]: [`VolumePoollet`], which runs the volume side.

pub mod cli;
pub mod controller;
pub mod error;
pub mod events;
pub mod exec;
pub mod lease;
pub mod machine;
pub mod machinepoollet;
pub mod pool;
pub mod reservation;
pub mod volume;
pub mod volumepool;
pub mod volumepoollet;

pub use controller::{Action, ObjectRef, Reconciler, WorkQueue};

/// The largest runtime response either poollet accepts (256 MiB; gRPC's default 4 MiB holds
/// only about 7,500 volumes or a few thousand machines in one List, and IronCore's Go
/// poollets keep it: ironcore #1442).
pub const MAX_RESPONSE_BYTES: usize = 256 << 20;
pub use error::{Error, Result};
pub use exec::ExecServer;
pub use machinepoollet::{Config, MachinePoollet};
pub use volumepoollet::{Config as VolumePoolletConfig, VolumePoollet};
