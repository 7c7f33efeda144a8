//! The status copy of the Machine reconciler (reference §3.3, §3.4): the IRI machine's state,
//! its volumes and network interfaces (two [`Attachment`]s with one status mapping) and the
//! Ready / VolumesReady / NetworkInterfacesReady conditions, written when the generation
//! handshake allows.

use iri_spec::{
    keys,
    kind::{Attachment, IriKind},
    machine::v1alpha1 as machine,
};
use irikit_api::{
    compute::{self, Machine},
    meta::Condition,
    store::now_rfc3339,
};
use tracing::{debug, info};

use super::{MachineReconciler, annotation_i64, volumes};
use crate::{error::Result, pool::set_condition};

/// The ironcore state for an IRI machine state (§3.3). STOPPED, which Go cannot map, is
/// `Shutdown` like SUSPENDED (§8.1).
pub fn machine_state(state: i32) -> &'static str {
    match machine::MachineState::try_from(state) {
        Ok(machine::MachineState::MachinePending) => "Pending",
        Ok(machine::MachineState::MachineRunning) => "Running",
        Ok(machine::MachineState::MachineSuspended | machine::MachineState::MachineStopped) => {
            "Shutdown"
        }
        Ok(machine::MachineState::MachineTerminated) => "Terminated",
        Ok(machine::MachineState::MachineTerminating) => "Terminating",
        Err(_) => "Pending",
    }
}

/// The status entries of the attachments `names` (in that order) of kind `A`: `Attached` when
/// the runtime reports the entry attached, else `Pending`, with the runtime's handle; the
/// transition time of an entry whose state did not change is kept from `old`.
fn attachment_statuses<A: Attachment>(
    iri: &machine::Machine,
    names: impl IntoIterator<Item = String>,
    old: &[compute::AttachmentStatus],
    now: &str,
) -> Vec<compute::AttachmentStatus> {
    names
        .into_iter()
        .map(|name| {
            let reported = A::status_of(iri, &name);
            let state = if reported.is_some_and(|s| A::status_state(s) == A::ATTACHED) {
                "Attached"
            } else {
                "Pending"
            };
            let last_state_transition_time = old
                .iter()
                .find(|s| s.name == name && s.state == state)
                .and_then(|s| s.last_state_transition_time.clone())
                .or_else(|| Some(now.to_string()));
            compute::AttachmentStatus {
                handle: reported.map_or_else(String::new, |s| A::status_handle(s).to_string()),
                state: state.into(),
                last_state_transition_time,
                name,
                ..compute::AttachmentStatus::default()
            }
        })
        .collect()
}

/// The storage Volume behind machine volume `name` (`volumeRef` or the ephemeral Volume).
fn volume_ref_of(m: &Machine, name: &str) -> Option<irikit_api::meta::LocalObjectReference> {
    m.spec
        .volumes
        .iter()
        .find(|v| v.name == name)
        .and_then(|v| volumes::referenced_volume(m, v))
        .map(irikit_api::meta::LocalObjectReference::new)
}

impl MachineReconciler {
    /// Writes the Machine status from the IRI machine when the handshake allows (§3.4).
    /// Returns whether the status reflects the current generation and the machine is settled.
    pub(super) async fn write_status(&self, m: &Machine, iri: &machine::Machine) -> Result<bool> {
        let iri_generation = annotation_i64(iri, keys::IRI_MACHINE_GENERATION_ANNOTATION)?;
        let generation = annotation_i64(iri, keys::MACHINE_GENERATION_ANNOTATION)?;
        let iri_status = iri.status.clone().unwrap_or_default();
        if iri_status.observed_generation < iri_generation {
            debug!(
                observed = iri_status.observed_generation,
                iri_generation, "runtime has not processed the spec yet; status not written"
            );
            return Ok(false);
        }
        let status = self.status_for(m, iri, generation);
        let settled = status.observed_generation == m.metadata.generation
            && match m.spec.power {
                compute::Power::On => status.state == "Running",
                compute::Power::Off => matches!(status.state.as_str(), "Shutdown" | "Terminated"),
            };
        if status != m.status {
            if status.state != m.status.state {
                info!(state = %status.state, machine_id = %status.machine_id, "machine state changed");
            }
            let mut updated = m.clone();
            updated.status = status;
            self.write_known(m, updated, true).await?;
        }
        Ok(settled)
    }

    fn status_for(
        &self,
        m: &Machine,
        iri: &machine::Machine,
        generation: i64,
    ) -> compute::MachineStatus {
        let iri_status = iri.status.clone().unwrap_or_default();
        let now = now_rfc3339();
        let mut status = m.status.clone();
        status.machine_id = format!("{}://{}", self.runtime_name, iri.id());
        status.observed_generation = generation;
        status.state = machine_state(iri_status.state).to_string();

        let mut volume_names: Vec<String> =
            iri_status.volumes.iter().map(|v| v.name.clone()).collect();
        for v in &m.spec.volumes {
            if !volume_names.contains(&v.name) {
                volume_names.push(v.name.clone());
            }
        }
        let mut volumes =
            attachment_statuses::<machine::Volume>(iri, volume_names, &m.status.volumes, &now);
        for v in &mut volumes {
            v.volume_ref = volume_ref_of(m, &v.name);
        }
        let nic_names = m.spec.network_interfaces.iter().map(|n| n.name.clone());
        let mut nics = attachment_statuses::<machine::NetworkInterface>(
            iri,
            nic_names,
            &m.status.network_interfaces,
            &now,
        );
        for (status, nic) in nics.iter_mut().zip(&m.spec.network_interfaces) {
            status.network_interface_ref = nic.network_interface_ref.clone();
        }

        let condition = |type_: &str, ok: bool, reason: &str, message: String| Condition {
            type_: type_.into(),
            status: if ok { "True" } else { "False" }.into(),
            reason: reason.into(),
            message,
            observed_generation: generation,
            last_update_time: None,
            last_transition_time: None,
        };
        let (ready, ready_reason) = match status.state.as_str() {
            "Running" => (true, "Running"),
            "Pending" => (false, "Pending"),
            "Terminating" | "Terminated" => (false, "Terminating"),
            _ => (false, "NotReady"),
        };
        let mut conditions = status.conditions.clone();
        set_condition(
            &mut conditions,
            condition("Ready", ready, ready_reason, String::new()),
        );
        for (type_, not_ready, entries) in [
            ("VolumesReady", "VolumeNotReady", &volumes),
            ("NetworkInterfacesReady", "NetworkInterfaceNotReady", &nics),
        ] {
            let pending = entries.iter().find(|e| e.state != "Attached");
            set_condition(
                &mut conditions,
                match pending {
                    None => condition(type_, true, type_, String::new()),
                    Some(e) => {
                        condition(type_, false, not_ready, format!("{not_ready}: {}", e.name))
                    }
                },
            );
        }
        // Keep existing timestamps stable when nothing but the clock changed.
        for c in &mut conditions {
            if let Some(old) = status.conditions.iter().find(|o| o.type_ == c.type_)
                && old.status == c.status
            {
                c.last_transition_time.clone_from(&old.last_transition_time);
            }
        }
        status.conditions = conditions;
        status.volumes = volumes;
        status.network_interfaces = nics;
        status
    }
}
