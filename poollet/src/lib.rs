//! The poollets: IronCore's machinepoollet and volumepoollet over irikit's
//! [`irikit_api::Store`] and an IRI runtime reached through the generated gRPC client.
//!
//! - [`cli`]: log set-up and signal handling shared by the binaries.
//! - [`controller`]: the kube-runtime-style framework (watch → cache → work queue → reconcile
//!   with an error policy, bounded concurrency, graceful shutdown).
//! - [`flavor`]: what differs between the machine and the volume side ([`flavor::Flavor`]:
//!   runtime client and calls, pool and class kinds, class mapping, what an object uses).
//! - [`runtime`]: the runtime side both share, generic over the flavour and over
//!   `iri_spec::kind::IriKind`: Status probe and heartbeat, ListEvents mapper, relist,
//!   orphan and duplicate reduction.
//! - [`pool`]: the pool announcer of both poollets (one reconciler, two flavours): class
//!   mapping, capacity, allocatable and, for MachinePools, the heartbeat's Ready condition.
//! - [`machine`]: the Machine reconciler (create, update, status, delete, orphan GC, NICs and
//!   storage volumes through the claim flow) and the runtime relist.
//! - [`events`]: the poollets' own Events, and runtime events (ListEvents) recorded as Events
//!   on their Machines and Volumes.
//! - [`lease`]: the pool Lease the heartbeat renews.
//! - [`reservation`]: Reservations passed down to the runtime and their state back up
//!   (IEP-11), and the pool's `reservation.irikit.dev/supported` annotation.
//! - [`machinepoollet`]: [`MachinePoollet`], which runs the machine side.
//! - [`volume`]: the Volume and VolumeSnapshot reconcilers, runtime relist and event mapper.
//! - [`volumepoollet`]: [`VolumePoollet`], which runs the volume side.

pub mod cli;
pub mod controller;
pub mod error;
pub mod events;
pub mod exec;
pub mod flavor;
pub mod lease;
pub mod machine;
pub mod machinepoollet;
mod object;
pub mod pool;
pub mod reservation;
pub mod runtime;
pub mod volume;
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
