//! Storage volumes of a Machine (reference §3.5, §3.7): the claim flow for `volumeRef` and
//! `ephemeral.volumeTemplate` volumes, the ephemeral Volumes themselves, and the IRI volume
//! (`connection`) each spec volume resolves to.
//!
//! Claims, on every reconcile of a Machine that is not being deleted, over all Volumes of its
//! namespace: a free Volume the Machine references (and that is neither being deleted nor
//! `unclaimable`) is adopted (`spec.claimRef = {name, uid}`); one claimed by this Machine and
//! still referenced is used; one claimed by this Machine but no longer referenced is released
//! (claimRef cleared); one claimed by another Machine that exists is left alone, so the Machine
//! keeps waiting (`VolumeNotReady`); a claim whose Machine is gone (or was re-created) is stale
//! and taken over, which IronCore leaves to its `volumerelease` controller.
//!
//! Ephemeral volumes: nothing else in irikit creates them (IronCore's ephemeral-volume
//! controller in the controller-manager does), so the machinepoollet does: a Volume named
//! `<machine>-<volume>` from the template's metadata and spec, with a controller owner
//! reference to the Machine and the claim already set. The store has no garbage collector, so
//! the machinepoollet also deletes the ephemeral Volumes it owns when they leave the spec and
//! when the Machine is finalized.

use std::collections::{BTreeMap, HashMap};

use iri_spec::{keys, machine::v1alpha1 as machine};
use irikit_api::{
    Kind, ListOptions, Store, StoreExt,
    compute::{self, Machine},
    core::Secret,
    meta::{ObjectMeta, OwnerReference},
    storage::{ClaimRef, Volume, VolumeSpec},
    store,
};
use tracing::{info, warn};

use crate::{error::Result, volume::secret_bytes};

/// The name of the Volume an ephemeral machine volume uses: `<machine>-<volume>`.
pub fn ephemeral_volume_name(machine_name: &str, volume_name: &str) -> String {
    format!("{machine_name}-{volume_name}")
}

/// The storage Volume a machine volume refers to (`volumeRef` or the ephemeral name);
/// `None` for local disks.
pub fn referenced_volume(m: &Machine, volume: &compute::Volume) -> Option<String> {
    if let Some(r) = &volume.volume_ref {
        return Some(r.name.clone());
    }
    volume
        .ephemeral
        .as_ref()
        .map(|_| ephemeral_volume_name(&m.metadata.name, &volume.name))
}

/// Whether `m` references the storage Volume `namespace/name`.
pub fn references_volume(m: &Machine, namespace: &str, name: &str) -> bool {
    m.metadata.namespace == namespace
        && m.spec
            .volumes
            .iter()
            .any(|v| referenced_volume(m, v).as_deref() == Some(name))
}

/// Whether `m` has storage (non-local) volumes.
pub fn has_storage_volumes(m: &Machine) -> bool {
    m.spec
        .volumes
        .iter()
        .any(|v| v.volume_ref.is_some() || v.ephemeral.is_some())
}

fn owner_of(m: &Machine) -> OwnerReference {
    OwnerReference {
        api_version: compute::API_VERSION.to_string(),
        kind: Kind::Machine.as_str().to_string(),
        name: m.metadata.name.clone(),
        uid: m.metadata.uid.clone(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

fn owned_by(v: &Volume, m: &Machine) -> bool {
    v.metadata
        .owner_references
        .iter()
        .any(|o| o.kind == Kind::Machine.as_str() && o.uid == m.metadata.uid)
}

fn claimed_by(v: &Volume, m: &Machine) -> bool {
    v.spec
        .claim_ref
        .as_ref()
        .is_some_and(|c| c.name == m.metadata.name && c.uid == m.metadata.uid)
}

/// Builds the ephemeral Volume for `volume` of `m` from its template, or says why it cannot.
fn ephemeral_volume(m: &Machine, volume: &compute::Volume) -> std::result::Result<Volume, String> {
    let template = volume
        .ephemeral
        .as_ref()
        .and_then(|e| e.volume_template.clone())
        .unwrap_or_default();
    let spec: VolumeSpec = match template.get("spec") {
        Some(spec) => serde_json::from_value(spec.clone()).map_err(|err| {
            format!(
                "volume {:?}: invalid volumeTemplate spec: {err}",
                volume.name
            )
        })?,
        None => VolumeSpec::default(),
    };
    let string_map = |key: &str| -> BTreeMap<String, String> {
        template
            .get("metadata")
            .and_then(|md| md.get(key))
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default()
    };
    let mut v = Volume {
        metadata: ObjectMeta::namespaced(
            m.metadata.namespace.clone(),
            ephemeral_volume_name(&m.metadata.name, &volume.name),
        ),
        spec,
        ..Volume::default()
    };
    v.metadata.labels = string_map("labels");
    v.metadata.annotations = string_map("annotations");
    v.metadata.owner_references = vec![owner_of(m)];
    v.spec.claim_ref = Some(ClaimRef {
        name: m.metadata.name.clone(),
        uid: m.metadata.uid.clone(),
    });
    Ok(v)
}

/// Creates missing ephemeral Volumes, adopts free referenced Volumes, releases the ones no
/// longer referenced and deletes owned ephemeral Volumes that left the spec. Returns the
/// problems found (an invalid template, say) as messages; store errors fail the reconcile.
pub(super) async fn claim(store: &dyn Store, m: &Machine) -> Result<Vec<String>> {
    let namespace = &m.metadata.namespace;
    let mut problems = Vec::new();
    let (volumes, _) = store
        .list_typed::<Volume>(&ListOptions::all().in_namespace(namespace))
        .await?;
    let by_name: HashMap<&str, &Volume> = volumes
        .iter()
        .map(|v| (v.metadata.name.as_str(), v))
        .collect();
    for volume in m.spec.volumes.iter().filter(|v| v.ephemeral.is_some()) {
        let name = ephemeral_volume_name(&m.metadata.name, &volume.name);
        if by_name.contains_key(name.as_str()) {
            continue;
        }
        match ephemeral_volume(m, volume) {
            Ok(v) => match store.create_typed(v).await {
                Ok(_) => info!(volume = %name, "ephemeral volume created"),
                Err(store::Error::AlreadyExists { .. }) => {}
                Err(store::Error::Invalid { errors, .. }) => problems.push(format!(
                    "ephemeral volume {name:?} is invalid: {}",
                    irikit_api::validation::join(&errors)
                )),
                Err(err) => return Err(err.into()),
            },
            Err(message) => problems.push(message),
        }
    }
    let referenced: Vec<String> = m
        .spec
        .volumes
        .iter()
        .filter_map(|v| referenced_volume(m, v))
        .collect();
    for v in &volumes {
        let is_referenced = referenced.contains(&v.metadata.name);
        let mut updated = v.clone();
        if is_referenced {
            if claimed_by(v, m) || v.metadata.is_deleting() || v.spec.unclaimable {
                continue;
            }
            if let Some(claim) = &v.spec.claim_ref
                && claimer_exists(store, namespace, claim).await?
            {
                continue;
            }
            updated.spec.claim_ref = Some(ClaimRef {
                name: m.metadata.name.clone(),
                uid: m.metadata.uid.clone(),
            });
            info!(volume = %v.metadata.name, "volume claimed");
        } else if owned_by(v, m) {
            // An ephemeral volume that left the spec.
            match store
                .delete(Kind::Volume, namespace, &v.metadata.name, None)
                .await
            {
                Ok(_) | Err(store::Error::NotFound { .. }) => {
                    info!(volume = %v.metadata.name, "ephemeral volume deleted");
                }
                Err(err) => return Err(err.into()),
            }
            continue;
        } else if claimed_by(v, m) {
            updated.spec.claim_ref = None;
            info!(volume = %v.metadata.name, "volume released");
        } else {
            continue;
        }
        match store.update_typed(updated).await {
            Ok(_) => {}
            // Somebody else changed it first; the watch brings us back.
            Err(store::Error::Conflict { .. } | store::Error::NotFound { .. }) => {}
            Err(err) => return Err(err.into()),
        }
    }
    Ok(problems)
}

/// Whether the Machine a claim names still exists with that uid. A claim whose claimer is gone
/// is stale and may be taken over (IronCore's `volumerelease` controller clears such claims;
/// irikit has no such controller, so the claiming poollet does it).
async fn claimer_exists(store: &dyn Store, namespace: &str, claim: &ClaimRef) -> Result<bool> {
    match store.get_typed::<Machine>(namespace, &claim.name).await {
        Ok(claimer) => Ok(claim.uid.is_empty() || claimer.metadata.uid == claim.uid),
        Err(store::Error::NotFound { .. }) => Ok(false),
        Err(err) => Err(err.into()),
    }
}

/// Deletes the ephemeral Volumes `m` owns (its finalizer; there is no garbage collector).
pub(super) async fn delete_ephemeral(store: &dyn Store, m: &Machine) -> Result<()> {
    let (volumes, _) = store
        .list_typed::<Volume>(&ListOptions::all().in_namespace(&m.metadata.namespace))
        .await?;
    for v in volumes
        .iter()
        .filter(|v| owned_by(v, m) && !v.metadata.is_deleting())
    {
        match store
            .delete(Kind::Volume, &m.metadata.namespace, &v.metadata.name, None)
            .await
        {
            Ok(_) | Err(store::Error::NotFound { .. }) => {
                info!(volume = %v.metadata.name, "ephemeral volume deleted with its machine");
            }
            Err(err) => return Err(err.into()),
        }
    }
    Ok(())
}

async fn secret_data(
    store: &dyn Store,
    namespace: &str,
    name: &str,
    what: &str,
) -> Result<std::result::Result<HashMap<String, Vec<u8>>, String>> {
    match store.get_typed::<Secret>(namespace, name).await {
        Ok(secret) => Ok(secret_bytes(&secret)),
        Err(store::Error::NotFound { .. }) => Ok(Err(format!("{what} secret {name:?} not found"))),
        Err(err) => Err(err.into()),
    }
}

/// The IRI volume for a storage Volume claimed by `m`, or why it cannot be built yet.
pub(super) async fn connection_volume(
    store: &dyn Store,
    m: &Machine,
    volume: &compute::Volume,
    volume_name: &str,
) -> Result<std::result::Result<machine::Volume, String>> {
    let namespace = &m.metadata.namespace;
    let v = match store.get_typed::<Volume>(namespace, volume_name).await {
        Ok(v) => v,
        Err(store::Error::NotFound { .. }) => {
            return Ok(Err(format!("volume {volume_name:?} not found")));
        }
        Err(err) => return Err(err.into()),
    };
    if !claimed_by(&v, m) {
        let message = match &v.spec.claim_ref {
            Some(c) => format!("volume {volume_name:?} is claimed by {:?}", c.name),
            None => format!("volume {volume_name:?} is not claimed yet"),
        };
        return Ok(Err(message));
    }
    let access = match (&v.status.state[..], &v.status.access) {
        ("Available", Some(access)) => access,
        _ => return Ok(Err(format!("volume {volume_name:?} is not available"))),
    };
    let mut secret_map = HashMap::new();
    if let Some(secret_ref) = &access.secret_ref {
        match secret_data(store, namespace, &secret_ref.name, "access").await? {
            Ok(data) => secret_map = data,
            Err(message) => return Ok(Err(format!("volume {volume_name:?}: {message}"))),
        }
    }
    let mut encryption_data = HashMap::new();
    if let Some(encryption) = &v.spec.encryption {
        match secret_data(store, namespace, &encryption.secret_ref.name, "encryption").await? {
            Ok(data) => encryption_data = data,
            Err(message) => return Ok(Err(format!("volume {volume_name:?}: {message}"))),
        }
    }
    let raw_labels = BTreeMap::from([
        (keys::VOLUME_UID_LABEL, v.metadata.uid.as_str()),
        (keys::VOLUME_NAMESPACE_LABEL, v.metadata.namespace.as_str()),
        (keys::VOLUME_NAME_LABEL, v.metadata.name.as_str()),
    ]);
    let raw_labels = match serde_json::to_string(&raw_labels) {
        Ok(json) => json,
        Err(err) => {
            warn!(error = %err, "encoding rawVolumeLabels failed");
            return Ok(Err(format!("volume {volume_name:?}: labels not encodable")));
        }
    };
    let mut attributes: HashMap<String, String> = access
        .volume_attributes
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    attributes.insert(keys::RAW_VOLUME_LABELS_ATTRIBUTE.to_string(), raw_labels);
    let storage = |list: &irikit_api::ResourceList| {
        list.get("storage")
            .map(|q| i64::try_from(q.value().max(0)).unwrap_or(i64::MAX))
    };
    let effective_storage_bytes = storage(&v.status.resources)
        .or_else(|| storage(&v.spec.resources))
        .unwrap_or(0);
    Ok(Ok(machine::Volume {
        name: volume.name.clone(),
        device: volume.device.clone().unwrap_or_default(),
        local_disk: None,
        connection: Some(machine::VolumeConnection {
            driver: access.driver.clone(),
            handle: access.handle.clone(),
            attributes,
            secret_data: secret_map,
            encryption_data,
            effective_storage_bytes,
        }),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine() -> Machine {
        let mut m = Machine {
            metadata: ObjectMeta::namespaced("ns", "vm"),
            ..Machine::default()
        };
        m.metadata.uid = "uid-vm".into();
        m
    }

    fn ephemeral(template: serde_json::Value) -> compute::Volume {
        compute::Volume {
            name: "data".into(),
            ephemeral: Some(compute::EphemeralVolume {
                volume_template: Some(template),
            }),
            ..compute::Volume::default()
        }
    }

    #[test]
    fn an_ephemeral_volume_comes_from_its_template_owned_and_claimed() {
        let m = machine();
        let template = serde_json::json!({
            "metadata": {"labels": {"a": "b"}, "annotations": {"c": "d"}},
            "spec": {"volumeClassRef": {"name": "fast"}, "resources": {"storage": "1Gi"}}
        });
        let v = ephemeral_volume(&m, &ephemeral(template)).unwrap();
        assert_eq!(v.metadata.name, "vm-data");
        assert_eq!(v.metadata.namespace, "ns");
        assert_eq!(v.metadata.labels.get("a").map(String::as_str), Some("b"));
        assert_eq!(
            v.metadata.annotations.get("c").map(String::as_str),
            Some("d")
        );
        assert_eq!(v.metadata.owner_references, [owner_of(&m)]);
        assert!(claimed_by(&v, &m));
        assert!(owned_by(&v, &m));
        assert_eq!(
            v.spec.volume_class_ref.map(|c| c.name),
            Some("fast".to_string())
        );
        assert_eq!(
            referenced_volume(&m, &ephemeral(serde_json::json!({}))),
            Some("vm-data".to_string())
        );
    }

    #[test]
    fn a_malformed_template_is_a_message_not_a_panic() {
        let m = machine();
        let bad = serde_json::json!({"spec": {"resources": "lots"}});
        let err = ephemeral_volume(&m, &ephemeral(bad)).unwrap_err();
        assert!(err.contains("invalid volumeTemplate spec"), "{err}");
    }
}
