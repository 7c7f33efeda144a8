//! The machine pool Lease (reference §4.4, IEP-15): `ironcore-machinepool-lease/<pool>`,
//! renewed by the heartbeat after every probe whether or not the probe worked. The holder is
//! `<pool>_<uuid>`, fixed per process; a Lease held by someone else (an earlier process) is
//! taken over (`acquireTime` set, `leaseTransitions` bumped). `renewTime` has microsecond
//! precision (Kubernetes `MicroTime`), so a sub-second heartbeat still changes it.

use std::{sync::Arc, time::Duration};

use irikit_api::{
    Store, StoreExt,
    coordination::{Lease, LeaseSpec, MACHINE_POOL_LEASE_NAMESPACE},
    meta::ObjectMeta,
    store,
};
use tracing::{debug, info};

use crate::error::Result;

/// IronCore's default `--heartbeat-lease-duration`.
pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(40);

/// Now as RFC 3339 with microseconds (`MicroTime`).
pub fn now_micro() -> String {
    humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string()
}

/// A random RFC 4122 version 4 UUID.
fn new_uuid() -> String {
    let mut bytes: [u8; 16] = rand::random();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let mut out = String::with_capacity(36);
    for (idx, byte) in bytes.iter().enumerate() {
        if matches!(idx, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

/// One process's claim on its pool's Lease.
#[derive(Clone)]
pub struct PoolLease {
    store: Arc<dyn Store>,
    pool: String,
    holder: String,
    duration: Duration,
}

impl PoolLease {
    /// The Lease of `pool` with a fresh holder identity `<pool>_<uuid>`.
    pub fn new(store: Arc<dyn Store>, pool: impl Into<String>, duration: Duration) -> Self {
        let pool = pool.into();
        Self {
            holder: format!("{pool}_{}", new_uuid()),
            store,
            pool,
            duration,
        }
    }

    /// This process's holder identity.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Creates the Lease, takes it over from a foreign holder, or renews it.
    pub async fn renew(&self) -> Result<Lease> {
        let now = now_micro();
        let duration = i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX);
        let existing = match self
            .store
            .get_typed::<Lease>(MACHINE_POOL_LEASE_NAMESPACE, &self.pool)
            .await
        {
            Ok(lease) => lease,
            Err(store::Error::NotFound { .. }) => {
                let lease = Lease {
                    metadata: ObjectMeta::namespaced(MACHINE_POOL_LEASE_NAMESPACE, &self.pool),
                    spec: LeaseSpec {
                        holder_identity: Some(self.holder.clone()),
                        lease_duration_seconds: Some(duration),
                        acquire_time: Some(now.clone()),
                        renew_time: Some(now),
                        lease_transitions: Some(0),
                    },
                    ..Lease::default()
                };
                let lease = self.store.create_typed(lease).await?;
                info!(holder = %self.holder, "machine pool lease created");
                return Ok(lease);
            }
            Err(err) => return Err(err.into()),
        };
        let mut lease = existing;
        if lease.spec.holder_identity.as_deref() != Some(self.holder.as_str()) {
            info!(
                holder = %self.holder,
                previous = lease.spec.holder_identity.as_deref().unwrap_or(""),
                "taking over the machine pool lease"
            );
            lease.spec.holder_identity = Some(self.holder.clone());
            lease.spec.acquire_time = Some(now.clone());
            lease.spec.lease_transitions =
                Some(lease.spec.lease_transitions.unwrap_or(0).saturating_add(1));
        }
        lease.spec.lease_duration_seconds = Some(duration);
        lease.spec.renew_time = Some(now);
        let lease = self.store.update_typed(lease).await?;
        debug!("machine pool lease renewed");
        Ok(lease)
    }
}
