//! `core.ironcore.dev/v1alpha1` Reservation: reservation-based scheduling (IronCore IEP-11,
//! reference §6.3). IronCore published no code for it; this shape follows the IEP's text.
//!
//! A Reservation asks pools to hold resources for one placement decision. `spec.resources`
//! is a ResourceList with these keys:
//!
//! - `class/machine.<class>`: how many machines of that class (a count);
//! - `cpu`, `memory`: totals to hold; a runtime holds at least what the class counts imply;
//! - `localStorage` ([`LOCAL_STORAGE_RESOURCE`]): local disk bytes *each* machine of the
//!   reservation needs on the host that runs it. The aggregated-capacity model (a pool's
//!   `class/machine.*` counts) cannot express this dimension at all, which is the IEP's point.
//!
//! Each pool named in `spec.pools` (empty: every pool) reports its decision in `status.pools`.

use serde::{Deserialize, Serialize};

use crate::meta::ObjectMeta;
use crate::quantity::ResourceList;

/// The API group version of Reservations.
pub const API_VERSION: &str = "core.ironcore.dev/v1alpha1";
/// The `cpu` resource key (a total, in cores; fractions allowed).
pub const CPU_RESOURCE: &str = "cpu";
/// The `memory` resource key (a total, in bytes).
pub const MEMORY_RESOURCE: &str = "memory";
/// The `localStorage` resource key: local disk bytes for each machine of the reservation.
pub const LOCAL_STORAGE_RESOURCE: &str = "localStorage";

/// IRI machine annotation: the *runtime* reservation id a `CreateMachine` consumes (defined in
/// `iri_spec::keys`; re-exported here next to the other reservation keys).
pub use iri_spec::keys::RESERVATION_ID_ANNOTATION;
/// Annotation on an api Machine: the name of the Reservation (same namespace) the Machine is
/// placed against. The scheduler sets it when it binds in reservation mode; whoever created the
/// Reservation itself (a broker, for its lower Machines) may set it in advance, and then the
/// scheduler uses that Reservation and never creates or deletes it.
pub const RESERVATION_NAME_ANNOTATION: &str = "reservation.irikit.dev/name";
/// Annotation on an api MachinePool, `"true"` or `"false"`: whether the pool's runtime serves
/// the reservation extension (the machinepoollet writes it after probing; `Unimplemented`
/// means `"false"`). Pools without `"true"` are best-effort candidates in reservation mode.
pub const RESERVATION_SUPPORTED_ANNOTATION: &str = "reservation.irikit.dev/supported";
/// Label on a Reservation the scheduler created for one Machine: that Machine's name.
pub const RESERVATION_MACHINE_LABEL: &str = "reservation.irikit.dev/machine";
/// Label on an IRI reservation a machinepoollet created: the api Reservation's UID.
pub const IRI_RESERVATION_UID_LABEL: &str = "reservation.irikit.dev/reservation-uid";
/// Label on an IRI reservation a machinepoollet created: the api Reservation's namespace.
pub const IRI_RESERVATION_NAMESPACE_LABEL: &str = "reservation.irikit.dev/reservation-namespace";
/// Label on an IRI reservation a machinepoollet created: the api Reservation's name.
pub const IRI_RESERVATION_NAME_LABEL: &str = "reservation.irikit.dev/reservation-name";

/// A Reservation (namespaced).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reservation {
    /// `core.ironcore.dev/v1alpha1`.
    #[serde(default)]
    pub api_version: String,
    /// `Reservation`.
    #[serde(default)]
    pub kind: String,
    /// Metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// What to reserve, and where.
    #[serde(default)]
    pub spec: ReservationSpec,
    /// Each pool's decision.
    #[serde(default)]
    pub status: ReservationStatus,
}

/// `ReservationSpec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReservationSpec {
    /// The machine pools asked (by name); empty means all pools.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pools: Vec<String>,
    /// The resources to hold (see the module documentation for the keys).
    #[serde(default)]
    pub resources: ResourceList,
}

/// `ReservationStatus`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReservationStatus {
    /// One entry per pool that has answered (or is still deciding).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pools: Vec<ReservationPoolStatus>,
}

/// One pool's state of a Reservation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReservationPoolStatus {
    /// The pool's name.
    pub name: String,
    /// The pool's decision.
    #[serde(default)]
    pub state: ReservationState,
}

/// A pool's decision on a Reservation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReservationState {
    /// Not decided yet.
    #[default]
    Pending,
    /// The pool holds the resources.
    Accepted,
    /// The pool cannot hold the resources.
    Rejected,
    /// A Machine was created against the reservation and now occupies the resources.
    Bound,
}

impl ReservationState {
    /// The state's name (`Accepted`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Accepted => "Accepted",
            Self::Rejected => "Rejected",
            Self::Bound => "Bound",
        }
    }
}

impl std::fmt::Display for ReservationState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Reservation {
    /// The state `pool` reported, `None` when it has not (yet).
    pub fn pool_state(&self, pool: &str) -> Option<ReservationState> {
        self.status
            .pools
            .iter()
            .find(|p| p.name == pool)
            .map(|p| p.state)
    }

    /// Whether the reservation asks `pool` (an empty pool list asks every pool).
    pub fn targets(&self, pool: &str) -> bool {
        self.spec.pools.is_empty() || self.spec.pools.iter().any(|p| p == pool)
    }

    /// The machine count per class (`class/machine.<class>` keys), in class order.
    pub fn class_counts(&self) -> Vec<(&str, i128)> {
        self.spec
            .resources
            .iter()
            .filter_map(|(k, q)| {
                k.strip_prefix(crate::compute::CLASS_RESOURCE_PREFIX)
                    .map(|c| (c, q.value()))
            })
            .collect()
    }
}

/// The IRI extension's messages (`irikit.reservation.v1alpha1`), which poollets and brokers
/// pass a Reservation down with.
pub use iri_spec::irikit::reservation::v1alpha1 as iri;

/// Why a Reservation's resources do not translate into the IRI extension's spec.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ToIriError {
    /// A key the IRI spec has no field for.
    #[error("resource {0:?} has no IRI reservation field")]
    UnknownResource(String),
    /// An amount that is negative, fractional where a count is needed, or beyond i64.
    #[error("resource {0:?}: {1}")]
    Amount(String, String),
}

impl ReservationSpec {
    /// The IRI extension's spec for these resources: class counts, `cpu` in millicores,
    /// `memory` in bytes, `localStorage` in bytes per machine.
    pub fn to_iri(&self) -> Result<iri::ReservationSpec, ToIriError> {
        let mut out = iri::ReservationSpec::default();
        for (key, qty) in &self.resources {
            let amount = |v: i128| {
                if qty.is_negative() {
                    return Err(ToIriError::Amount(
                        key.clone(),
                        format!("{qty} is negative"),
                    ));
                }
                i64::try_from(v)
                    .map_err(|_| ToIriError::Amount(key.clone(), format!("{qty} exceeds i64")))
            };
            if let Some(class) = key.strip_prefix(crate::compute::CLASS_RESOURCE_PREFIX) {
                if qty.milli_value() % 1000 != 0 {
                    return Err(ToIriError::Amount(
                        key.clone(),
                        format!("{qty} is not a whole machine count"),
                    ));
                }
                out.machine_classes
                    .insert(class.to_owned(), amount(qty.value())?);
                continue;
            }
            match key.as_str() {
                CPU_RESOURCE => out.cpu_millis = amount(qty.milli_value())?,
                MEMORY_RESOURCE => out.memory_bytes = amount(qty.value())?,
                LOCAL_STORAGE_RESOURCE => {
                    out.local_storage_bytes_per_machine = amount(qty.value())?;
                }
                other => return Err(ToIriError::UnknownResource(other.to_owned())),
            }
        }
        Ok(out)
    }
}

impl ReservationState {
    /// The state of an IRI `ReservationState` value (`None` for an unknown value).
    pub fn from_iri(state: i32) -> Option<Self> {
        Some(match iri::ReservationState::try_from(state).ok()? {
            iri::ReservationState::ReservationPending => Self::Pending,
            iri::ReservationState::ReservationAccepted => Self::Accepted,
            iri::ReservationState::ReservationRejected => Self::Rejected,
            iri::ReservationState::ReservationBound => Self::Bound,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::{Reservation, ReservationState};
    use crate::{Object, parse_yaml_documents};

    #[test]
    fn yaml_round_trip_and_helpers() {
        let yaml = "apiVersion: core.ironcore.dev/v1alpha1\nkind: Reservation\n\
metadata: {name: r1, namespace: ns}\n\
spec: {pools: [p1, p2], resources: {class/machine.small: 2, cpu: 500m, localStorage: 10Gi}}\n\
status: {pools: [{name: p1, state: Accepted}, {name: p2, state: Rejected}]}\n";
        let obj = parse_yaml_documents(yaml).unwrap().remove(0);
        let again = parse_yaml_documents(&obj.to_yaml()).unwrap().remove(0);
        assert_eq!(obj, again);
        let r: Reservation = obj.into_typed().unwrap();
        assert_eq!(r.pool_state("p1"), Some(ReservationState::Accepted));
        assert_eq!(r.pool_state("p2"), Some(ReservationState::Rejected));
        assert_eq!(r.pool_state("p3"), None);
        assert!(r.targets("p2") && !r.targets("p3"));
        assert_eq!(r.class_counts(), vec![("small", 2)]);
        assert!(matches!(
            parse_yaml_documents(
                "apiVersion: core.ironcore.dev/v1alpha1\nkind: Reservation\nmetadata: {name: r}\nstatus: {pools: [{name: p, state: Maybe}]}"
            ),
            Err(crate::object::ParseObjectError::Decode(_))
        ));
        let spec = r.spec.to_iri().unwrap();
        assert_eq!(spec.machine_classes.get("small"), Some(&2));
        assert_eq!(spec.cpu_millis, 500);
        assert_eq!(spec.memory_bytes, 0);
        assert_eq!(spec.local_storage_bytes_per_machine, 10 << 30);
        let mut bad = r.spec.clone();
        bad.resources.insert("nics".into(), "1".parse().unwrap());
        assert_eq!(
            bad.to_iri(),
            Err(super::ToIriError::UnknownResource("nics".into()))
        );
        let mut half = r.spec.clone();
        half.resources
            .insert("class/machine.small".into(), "1500m".parse().unwrap());
        assert!(matches!(half.to_iri(), Err(super::ToIriError::Amount(..))));
        for (v, want) in [
            (0, Some(ReservationState::Pending)),
            (1, Some(ReservationState::Accepted)),
            (2, Some(ReservationState::Rejected)),
            (3, Some(ReservationState::Bound)),
            (9, None),
        ] {
            assert_eq!(ReservationState::from_iri(v), want);
        }
        let all = Reservation::default();
        assert!(all.targets("anything"));
        let _: Object = crate::Resource::into_object(all);
    }
}
