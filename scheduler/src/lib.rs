//! IronCore-style machine and volume schedulers (reference §5): a pure core ([`core::Cache`]:
//! pools and bindings plus a request in, a [`core::Decision`] out) and a controller
//! ([`controller::Scheduler`]) that watches unscheduled objects and pools through the irikit
//! [`Store`](irikit_api::Store) and binds with resourceVersion preconditions.

pub mod controller;
pub mod core;
pub mod flavor;

pub use controller::{Config, Scheduler, Stats};
pub use core::{Cache, Decision, Filtered, PoolInfo, Request};
pub use flavor::{Flavor, MachineFlavor, VolumeFlavor};

/// The machine scheduler.
pub type MachineScheduler = Scheduler<MachineFlavor>;
/// The volume scheduler.
pub type VolumeScheduler = Scheduler<VolumeFlavor>;
