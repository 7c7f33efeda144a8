//! `irikit controllers`: the cluster-wide controllers alone against a shared store — the
//! machine scheduler (best-effort or reservation mode), the volume scheduler and the
//! pool-liveness controller — as ironcore-controller-manager runs them, for a deployment whose
//! poollets run on other hosts.

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use irikit_api::Store;
use tokio_util::sync::CancellationToken;

/// What `controllers` runs.
#[derive(Debug, Clone)]
pub struct ControllersConfig {
    /// How long a pool's Ready condition and Lease may stand still before the pool is marked
    /// `Ready=Unknown` (IronCore's `--machine-pool-lifecycle-grace-period`).
    pub pool_grace_period: Duration,
    /// The schedulers' settings.
    pub scheduler: scheduler::Config,
    /// The machine scheduler's reservation mode (`None`: best-effort).
    pub reservations: Option<scheduler::ReservationConfig>,
}

/// Runs both schedulers and the pool-liveness controller on `store` until `cancel`.
pub async fn run(
    store: Arc<dyn Store>,
    config: ControllersConfig,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let machines = scheduler::run_machine_scheduler(
        store.clone(),
        config.scheduler.clone(),
        config.reservations,
        cancel.clone(),
    );
    let volumes = scheduler::VolumeScheduler::new(store.clone(), config.scheduler);
    let (machines, volumes, ()) = tokio::join!(
        machines,
        volumes.run(cancel.clone()),
        crate::liveness::run(store, config.pool_grace_period, cancel.clone()),
    );
    machines.context("machine scheduler")?;
    volumes.context("volume scheduler")?;
    Ok(())
}
