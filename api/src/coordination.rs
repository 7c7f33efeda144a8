//! `coordination.k8s.io/v1`: the Lease, which a machinepoollet renews with every heartbeat
//! (reference §4.4, IEP-15) and the pool lifecycle controller watches for liveness.

use serde::{Deserialize, Serialize};

use crate::meta::ObjectMeta;

/// The API version of Leases.
pub const API_VERSION: &str = "coordination.k8s.io/v1";
/// Namespace of the machine pools' Leases (one per pool, named after it).
pub const MACHINE_POOL_LEASE_NAMESPACE: &str = "ironcore-machinepool-lease";

/// A Lease (namespaced), in the Kubernetes shape.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Lease {
    /// `coordination.k8s.io/v1`.
    #[serde(default)]
    pub api_version: String,
    /// `Lease`.
    #[serde(default)]
    pub kind: String,
    /// Metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// The lease.
    #[serde(default)]
    pub spec: LeaseSpec,
}

/// `LeaseSpec`. Times are RFC 3339 (Kubernetes `MicroTime`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseSpec {
    /// The current holder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder_identity: Option<String>,
    /// How long a holder may go without renewing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_duration_seconds: Option<i32>,
    /// When the current holder acquired the lease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acquire_time: Option<String>,
    /// When the current holder last renewed the lease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renew_time: Option<String>,
    /// How many times the lease changed holders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_transitions: Option<i32>,
}
