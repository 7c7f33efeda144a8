//! A runtime that drops the labels the poollet gives its machines: found through the machine
//! `status.machineID` names, reported, and never answered with another create.

use iri_spec::{keys, kind::IriKind as _, machine::v1alpha1 as machine};
use irikit_api::{Kind, compute::Machine};

use super::{EVENT_COMPONENT, MachineReconciler, REASON_RUNTIME_LABELS_LOST};
use crate::{
    controller::Action,
    error::{Error, Result},
    events,
    object::involved,
    volume::id_part,
};

/// The IRI machine id `m.status.machineID` names (`<runtime>://<id>`, parsed as IronCore does).
/// Only this poollet writes that status; an id the runtime does not know is simply not listed.
pub(super) fn status_id(m: &Machine) -> Option<&str> {
    id_part(&m.status.machine_id)
}

impl MachineReconciler {
    /// When no IRI machine carries `m`'s uid label: the machine `m.status.machineID` names, if
    /// the runtime still lists it (without that label). A runtime that drops labels would
    /// otherwise get a new machine on every reconcile, each leaking (real VMs, on a real
    /// runtime). IronCore's poollet creates again (it finds machines by label only).
    pub(super) async fn created_unlabelled(&self, m: &Machine) -> Result<Option<machine::Machine>> {
        let Some(id) = status_id(m) else {
            return Ok(None);
        };
        Ok(self
            .get_by_id(id)
            .await?
            .filter(|iri| iri.label(keys::MACHINE_UID_LABEL) != Some(m.metadata.uid.as_str())))
    }

    /// Reports `iri`, the machine `m` was created as, listed without its labels: a Warning
    /// Event on the Machine and an error (the controller logs it and retries with backoff).
    pub(super) async fn labels_lost(&self, m: &Machine, iri: machine::Machine) -> Result<Action> {
        let err = Error::LabelsLost {
            machine_id: iri.id().to_string(),
            label: keys::MACHINE_UID_LABEL,
        };
        events::record(
            self.store.as_ref(),
            involved(Kind::Machine, &m.metadata),
            "Warning",
            REASON_RUNTIME_LABELS_LOST,
            &err.to_string(),
            EVENT_COMPONENT,
        )
        .await;
        Err(err)
    }
}
