//! IronCore-style machine and volume schedulers (reference §5): a pure core ([`core::Cache`]:
//! pools and bindings plus a request in, a [`core::Decision`] out) and a controller
//! ([`controller::Scheduler`]) that watches unscheduled objects and pools through the irikit
//! [`Store`](irikit_api::Store) and binds with resourceVersion preconditions.

pub mod controller;
pub mod core;
pub mod flavor;
pub mod reservation;

pub use controller::{Config, Scheduler, Stats};
pub use core::{Cache, Decision, Filtered, PoolInfo, Request};
pub use flavor::{Flavor, MachineFlavor, VolumeFlavor};
pub use reservation::{ReservationConfig, ReservationScheduler};

/// The machine scheduler.
pub type MachineScheduler = Scheduler<MachineFlavor>;
/// The volume scheduler.
pub type VolumeScheduler = Scheduler<VolumeFlavor>;

/// Runs the machine scheduler until `cancel` fires: best-effort ([`MachineScheduler`]), or
/// in reservation mode ([`ReservationScheduler`]) when `reservations` is set. What
/// `irikit-scheduler`, `irikit up` and `irikit controllers` start.
pub async fn run_machine_scheduler(
    store: std::sync::Arc<dyn irikit_api::Store>,
    config: Config,
    reservations: Option<ReservationConfig>,
    cancel: tokio_util::sync::CancellationToken,
) -> Result<(), controller::Error> {
    match reservations {
        Some(mut r) => {
            r.concurrency = config.concurrency;
            r.emit_events = config.emit_events;
            ReservationScheduler::new(store, r).run(cancel).await
        }
        None => MachineScheduler::new(store, config).run(cancel).await,
    }
}
