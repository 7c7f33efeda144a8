//! Network interfaces of a Machine (reference §3.1, §3.5, §3.6 step 1).
//!
//! irikit's API has no NetworkInterface, Network or Prefix objects, so a NIC is taken "as given
//! in the spec": an `ephemeral.networkInterfaceTemplate` becomes an IRI `NetworkInterface` with
//! `network_id` = the **network name** (there is no Network object whose `spec.providerID`
//! IronCore would send), the literal IPs of the template, and its attributes plus the
//! `rawNICLabels` / `rawNetworkLabels` JSON maps. The NIC identity in those labels is the
//! ephemeral NetworkInterface IronCore would create (`<machine>-<nic>` in the Machine's
//! namespace); it has no uid, so `nic-uid` and `network-uid` are left out and the
//! `networkinterfacemapping` annotation carries an empty uid. A `networkInterfaceRef` NIC, an
//! ephemeral IP (IPAM prefix) or a template without a network cannot be resolved: the machine
//! waits with `NetworkInterfaceNotReady` and a message saying why.
//!
//! The update pass (§3.6 step 1) keeps IRI NICs that are proto-equal to a desired one,
//! detaches the others (NotFound ignored) and attaches the desired NICs not kept. A spec NIC
//! that cannot be resolved is neither attached nor detached (no detach on unreadiness, §8.8).

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
};

use iri_spec::{keys, machine::v1alpha1 as machine};
use irikit_api::compute::{self, Machine};
use tracing::info;

use super::MachineReconciler;
use crate::error::{Result, rpc};

/// The Machine's NICs as IRI NetworkInterfaces: those that resolve, and why the others do not.
#[derive(Debug, Default)]
pub(crate) struct DesiredNics {
    /// The resolved NICs, in spec order.
    pub(crate) resolved: Vec<machine::NetworkInterface>,
    /// Spec NIC name → why it cannot be resolved.
    pub(crate) unresolved: BTreeMap<String, String>,
}

/// Resolves every spec NIC of `m`.
pub(crate) fn desired_nics(m: &Machine) -> DesiredNics {
    let mut out = DesiredNics::default();
    for nic in &m.spec.network_interfaces {
        match resolve(m, nic) {
            Ok(iri) => out.resolved.push(iri),
            Err(message) => {
                out.unresolved.insert(nic.name.clone(), message);
            }
        }
    }
    out
}

/// The name IronCore gives the ephemeral NetworkInterface of `nic` (`<machine>-<nic>`).
pub(crate) fn ephemeral_nic_name(m: &Machine, nic: &str) -> String {
    format!("{}-{nic}", m.metadata.name)
}

fn resolve(
    m: &Machine,
    nic: &compute::NetworkInterface,
) -> std::result::Result<machine::NetworkInterface, String> {
    let name = &nic.name;
    if let Some(reference) = &nic.network_interface_ref {
        return Err(format!(
            "network interface {name:?} references NetworkInterface {:?}: irikit has no \
             NetworkInterface objects, use ephemeral.networkInterfaceTemplate",
            reference.name
        ));
    }
    let Some(template) = nic
        .ephemeral
        .as_ref()
        .and_then(|e| e.network_interface_template.as_ref())
    else {
        return Err(format!(
            "network interface {name:?} has neither a networkInterfaceRef nor an \
             ephemeral.networkInterfaceTemplate"
        ));
    };
    let spec = &template.spec;
    let network = &spec.network_ref.name;
    if network.is_empty() {
        return Err(format!(
            "network interface {name:?}: the template has no spec.networkRef.name"
        ));
    }
    let mut ips = Vec::new();
    for (idx, ip) in spec.ips.iter().enumerate() {
        match (&ip.value, &ip.ephemeral) {
            (Some(value), None) => {
                if value.parse::<IpAddr>().is_err() {
                    return Err(format!(
                        "network interface {name:?}: ips[{idx}] {value:?} is not an IP address"
                    ));
                }
                ips.push(value.clone());
            }
            (None, Some(_)) => {
                return Err(format!(
                    "network interface {name:?}: ips[{idx}] is an ephemeral prefix; irikit has \
                     no Prefix objects (IPAM), give a literal value"
                ));
            }
            _ => {
                return Err(format!(
                    "network interface {name:?}: ips[{idx}] must have exactly one of value and \
                     ephemeral"
                ));
            }
        }
    }
    let namespace = &m.metadata.namespace;
    let nic_name = ephemeral_nic_name(m, name);
    let nic_labels = BTreeMap::from([
        (keys::NIC_NAMESPACE_LABEL, namespace.as_str()),
        (keys::NIC_NAME_LABEL, nic_name.as_str()),
    ]);
    let network_labels = BTreeMap::from([
        (keys::NETWORK_NAMESPACE_LABEL, namespace.as_str()),
        (keys::NETWORK_NAME_LABEL, network.as_str()),
    ]);
    let mut attributes: HashMap<String, String> = spec
        .attributes
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    attributes.insert(
        keys::RAW_NIC_LABELS_ATTRIBUTE.to_string(),
        json_map(&nic_labels),
    );
    attributes.insert(
        keys::RAW_NETWORK_LABELS_ATTRIBUTE.to_string(),
        json_map(&network_labels),
    );
    Ok(machine::NetworkInterface {
        name: name.clone(),
        network_id: network.clone(),
        ips,
        attributes,
    })
}

/// A string map as JSON with sorted keys (stable, so equal NICs stay proto-equal).
fn json_map(map: &BTreeMap<&str, &str>) -> String {
    // Serialising a map of strings cannot fail.
    serde_json::to_string(map).unwrap_or_default()
}

/// The `networkinterfacemapping` annotation: machine NIC name → `{"name", "uid"}` of its
/// NetworkInterface, for the resolved NICs (the uid is empty: there are no NIC objects).
pub(crate) fn mapping_annotation(m: &Machine, resolved: &[machine::NetworkInterface]) -> String {
    let mapping: BTreeMap<&str, BTreeMap<&str, String>> = resolved
        .iter()
        .map(|nic| {
            (
                nic.name.as_str(),
                BTreeMap::from([
                    ("name", ephemeral_nic_name(m, &nic.name)),
                    ("uid", String::new()),
                ]),
            )
        })
        .collect();
    serde_json::to_string(&mapping).unwrap_or_default()
}

/// Inserts the `networkinterfacemapping` annotation for `m` into `annotations`.
pub(crate) fn annotate(m: &Machine, annotations: &mut HashMap<String, String>) {
    let resolved = desired_nics(m).resolved;
    annotations.insert(
        keys::NETWORK_INTERFACE_MAPPING_ANNOTATION.to_string(),
        mapping_annotation(m, &resolved),
    );
}

impl MachineReconciler {
    /// §3.6 step 1: detaches IRI NICs that are not proto-equal to a desired one (unless their
    /// spec NIC cannot be resolved right now) and attaches the desired ones not kept. Returns
    /// whether anything was pushed.
    pub(super) async fn sync_nics(
        &self,
        m: &Machine,
        id: &str,
        current: &[machine::NetworkInterface],
    ) -> Result<bool> {
        let desired = desired_nics(m);
        let mut pushed = false;
        let mut kept = Vec::new();
        for nic in current {
            let equal = desired.resolved.iter().any(|d| d == nic);
            if equal || desired.unresolved.contains_key(&nic.name) {
                kept.push(nic.name.clone());
                continue;
            }
            let mut client = self.client.clone();
            let request = machine::DetachNetworkInterfaceRequest {
                machine_id: id.to_string(),
                name: nic.name.clone(),
            };
            let detached = rpc(
                "DetachNetworkInterface",
                self.config.rpc_timeout,
                client.detach_network_interface(request),
            )
            .await;
            match detached {
                Ok(_) => info!(machine_id = %id, nic = %nic.name, "network interface detached"),
                Err(err) if err.code() == Some(tonic::Code::NotFound) => {}
                Err(err) => return Err(err),
            }
            pushed = true;
        }
        for nic in desired.resolved {
            if kept.contains(&nic.name) {
                continue;
            }
            let name = nic.name.clone();
            let mut client = self.client.clone();
            let request = machine::AttachNetworkInterfaceRequest {
                machine_id: id.to_string(),
                network_interface: Some(nic),
            };
            rpc(
                "AttachNetworkInterface",
                self.config.rpc_timeout,
                client.attach_network_interface(request),
            )
            .await?;
            info!(machine_id = %id, nic = %name, "network interface attached");
            pushed = true;
        }
        Ok(pushed)
    }
}

#[cfg(test)]
mod tests {
    use irikit_api::{
        compute::{EphemeralNetworkInterface, IpSource, NetworkInterfaceTemplate},
        meta::{LocalObjectReference, ObjectMeta},
    };

    use super::*;

    fn nic(name: &str, network: &str, ips: &[&str]) -> compute::NetworkInterface {
        let mut template = NetworkInterfaceTemplate::default();
        template.spec.network_ref = LocalObjectReference::new(network);
        template.spec.ips = ips
            .iter()
            .map(|ip| IpSource {
                value: Some((*ip).to_string()),
                ephemeral: None,
            })
            .collect();
        template.spec.attributes.insert("mtu".into(), "1500".into());
        compute::NetworkInterface {
            name: name.into(),
            network_interface_ref: None,
            ephemeral: Some(EphemeralNetworkInterface {
                network_interface_template: Some(template),
            }),
        }
    }

    fn machine_with(nics: Vec<compute::NetworkInterface>) -> Machine {
        let mut m = Machine {
            metadata: ObjectMeta::namespaced("ns", "vm"),
            ..Machine::default()
        };
        m.spec.network_interfaces = nics;
        m
    }

    #[test]
    fn an_ephemeral_nic_becomes_an_iri_nic_with_raw_labels() {
        let m = machine_with(vec![nic("eth0", "net-a", &["10.0.0.5", "fd00::5"])]);
        let desired = desired_nics(&m);
        assert!(desired.unresolved.is_empty());
        let [iri] = desired.resolved.as_slice() else {
            panic!("one nic: {desired:?}")
        };
        assert_eq!(iri.name, "eth0");
        assert_eq!(iri.network_id, "net-a");
        assert_eq!(iri.ips, ["10.0.0.5", "fd00::5"]);
        assert_eq!(iri.attributes["mtu"], "1500");
        assert_eq!(
            iri.attributes[keys::RAW_NIC_LABELS_ATTRIBUTE],
            r#"{"machinepoollet.ironcore.dev/nic-name":"vm-eth0","machinepoollet.ironcore.dev/nic-namespace":"ns"}"#
        );
        assert_eq!(
            iri.attributes[keys::RAW_NETWORK_LABELS_ATTRIBUTE],
            r#"{"machinepoollet.ironcore.dev/network-name":"net-a","machinepoollet.ironcore.dev/network-namespace":"ns"}"#
        );
        assert_eq!(
            mapping_annotation(&m, &desired.resolved),
            r#"{"eth0":{"name":"vm-eth0","uid":""}}"#
        );
    }

    #[test]
    fn unresolvable_nics_say_why() {
        let by_ref = compute::NetworkInterface {
            name: "ref".into(),
            network_interface_ref: Some(LocalObjectReference::new("nic-1")),
            ephemeral: None,
        };
        let mut prefix = nic("ipam", "net-a", &[]);
        if let Some(t) = prefix
            .ephemeral
            .as_mut()
            .and_then(|e| e.network_interface_template.as_mut())
        {
            t.spec.ips.push(IpSource {
                value: None,
                ephemeral: Some(serde_json::json!({"prefixTemplate": {}})),
            });
        }
        let m = machine_with(vec![
            by_ref,
            prefix,
            nic("bad-ip", "net-a", &["10.0.0.300"]),
            nic("no-net", "", &[]),
            nic("ok", "net-b", &[]),
        ]);
        let desired = desired_nics(&m);
        assert_eq!(desired.resolved.len(), 1);
        assert_eq!(desired.resolved[0].name, "ok");
        let why = |name: &str| desired.unresolved[name].clone();
        assert!(
            why("ref").contains("no NetworkInterface objects"),
            "{}",
            why("ref")
        );
        assert!(why("ipam").contains("ephemeral prefix"), "{}", why("ipam"));
        assert!(
            why("bad-ip").contains("not an IP address"),
            "{}",
            why("bad-ip")
        );
        assert!(why("no-net").contains("networkRef"), "{}", why("no-net"));
    }
}
