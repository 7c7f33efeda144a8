//! A machine's attachments, its volumes and network interfaces, written once over
//! [`Attachment`]: their validation at create, Attach, Detach, their status entries, and
//! UpdateVolume.

use iri_spec::{
    kind::Attachment,
    machine::v1alpha1::{self as machine, MachineSpec},
};
use tonic::Status;

use crate::{Mutant, core::Core, core::invalid};

/// An attachment as the mock keeps it.
pub(super) trait Attached: Attachment {
    /// The request field that carries one (`volume`, `network_interface`).
    const FIELD: &'static str;
    /// The state of a status entry not attached yet.
    const PENDING: i32;
    /// Attach of a name the machine has already answers OK.
    const DUPLICATE_OK: Mutant;
    /// Detach of a name the machine does not have answers OK.
    const DETACH_UNKNOWN_OK: Mutant;

    /// Checks the entry beyond its name.
    fn validate(&self) -> Result<(), Status>;
    /// Whether CreateMachine skips [`Attached::validate`] (a mutant).
    fn unchecked_at_create(&self, _core: &Core) -> bool {
        false
    }
    /// The handle the status reports for it on machine `machine_id`.
    fn handle(&self, machine_id: &str) -> String;
}

impl Attached for machine::Volume {
    const FIELD: &'static str = "volume";
    const PENDING: i32 = machine::VolumeState::VolumePending as i32;
    const DUPLICATE_OK: Mutant = Mutant::AttachDuplicateOk;
    const DETACH_UNKNOWN_OK: Mutant = Mutant::DetachUnknownOk;

    fn validate(&self) -> Result<(), Status> {
        let name = &self.name;
        match (&self.local_disk, &self.connection) {
            (Some(_), Some(_)) => Err(invalid(format!(
                "volume {name:?} has both local_disk and connection: set exactly one"
            ))),
            (None, None) => Err(invalid(format!(
                "volume {name:?} has neither local_disk nor connection: set exactly one"
            ))),
            (Some(disk), None) if disk.size_bytes < 0 => Err(invalid(format!(
                "volume {name:?} has a negative local disk size"
            ))),
            _ => Ok(()),
        }
    }

    fn unchecked_at_create(&self, core: &Core) -> bool {
        self.local_disk.is_none()
            && self.connection.is_none()
            && !self.name.is_empty()
            && core.has(Mutant::VolumeSourceUnchecked)
    }

    fn handle(&self, machine_id: &str) -> String {
        match self.connection.as_ref() {
            Some(conn) if !conn.handle.is_empty() => conn.handle.clone(),
            _ => format!("iri-mock://machines/{machine_id}/volumes/{}", self.name),
        }
    }
}

impl Attached for machine::NetworkInterface {
    const FIELD: &'static str = "network_interface";
    const PENDING: i32 = machine::NetworkInterfaceState::NetworkInterfacePending as i32;
    const DUPLICATE_OK: Mutant = Mutant::AttachNicDuplicateOk;
    const DETACH_UNKNOWN_OK: Mutant = Mutant::DetachNicUnknownOk;

    fn validate(&self) -> Result<(), Status> {
        Ok(())
    }

    fn handle(&self, machine_id: &str) -> String {
        format!(
            "iri-mock://machines/{machine_id}/network-interfaces/{}",
            self.name
        )
    }
}

/// A valid entry: a name, and whatever else [`Attached::validate`] checks.
fn validated<A: Attached>(entry: A) -> Result<A, Status> {
    if entry.name().is_empty() {
        return Err(invalid(format!("{} name is required", A::NAME)));
    }
    entry.validate()?;
    Ok(entry)
}

/// The status entries of `spec`'s attachments of kind `A` on machine `machine_id`, attached or
/// pending.
pub(super) fn statuses<A: Attached>(
    machine_id: &str,
    spec: &MachineSpec,
    attached: bool,
) -> Vec<A::Status> {
    let state = if attached { A::ATTACHED } else { A::PENDING };
    A::specs(spec)
        .iter()
        .map(|e| A::new_status(e.name().to_owned(), e.handle(machine_id), state))
        .collect()
}

/// The position of the first name that repeats an earlier one. Small lists (the usual one or two
/// volumes) are scanned without allocating.
fn first_duplicate<'a>(names: impl Iterator<Item = &'a str> + Clone) -> Option<usize> {
    if names.clone().count() <= 16 {
        names
            .clone()
            .enumerate()
            .position(|(i, name)| names.clone().take(i).any(|earlier| earlier == name))
    } else {
        let mut seen = std::collections::HashSet::new();
        names.into_iter().position(|name| !seen.insert(name))
    }
}

impl Core {
    /// CreateMachine's check of the spec's entries of kind `A`: each valid, names unique.
    pub(super) fn check_entries<A: Attached>(&self, spec: &MachineSpec) -> Result<(), Status> {
        if self.has(Mutant::CreateVolumesUnchecked) {
            return Ok(());
        }
        let entries = A::specs(spec);
        let duplicate = first_duplicate(entries.iter().map(|e| e.name()));
        for (i, entry) in entries.iter().enumerate() {
            if !entry.unchecked_at_create(self) {
                validated(entry.clone())?;
            }
            if duplicate == Some(i) {
                return Err(invalid(format!(
                    "duplicate {} name {:?}",
                    A::NAME,
                    entry.name()
                )));
            }
        }
        Ok(())
    }

    /// AttachVolume, AttachNetworkInterface: adds the entry to the spec (its status entry
    /// pending until the change is applied).
    pub(super) fn attach<A: Attached>(&self, id: &str, entry: Option<A>) -> Result<(), Status> {
        self.check_id::<machine::Machine>(id, "machine_id")?;
        let lax = self.has(Mutant::AttachMissingVolumeAccepted);
        let entry = match entry {
            Some(entry) if !entry.name().is_empty() => entry,
            _ if lax => return Ok(()),
            None => return Err(invalid(format!("{} is required", A::FIELD))),
            Some(entry) => entry,
        };
        let entry = validated(entry)?;
        self.with_machine(id, Some(Mutant::AttachUnknownMachineOk), |core, st| {
            let Some(mut slot) = st.get_mut(id) else {
                return Ok(());
            };
            let spec = slot.obj.spec.get_or_insert_default();
            if A::specs(spec).iter().any(|e| e.name() == entry.name()) && !core.has(A::DUPLICATE_OK)
            {
                return Err(Status::already_exists(format!(
                    "machine {id:?} already has a {} named {:?}",
                    A::NAME,
                    entry.name()
                )));
            }
            if core.has(Mutant::AttachNotReflected) {
                return Ok(());
            }
            let handle = entry.handle(id);
            let name = entry.name().to_owned();
            A::specs_mut(spec).push(entry);
            let statuses = A::statuses_mut(slot.obj.status.get_or_insert_default());
            statuses.retain(|e| A::status_name(e) != name);
            statuses.push(A::new_status(name, handle, A::PENDING));
            core.bump_generation(&mut slot);
            core.schedule_apply(st, id);
            Ok(())
        })
    }

    /// DetachVolume, DetachNetworkInterface: removes the entry `name` from the spec.
    pub(super) fn detach<A: Attached>(&self, id: &str, name: &str) -> Result<(), Status> {
        self.check_id::<machine::Machine>(id, "machine_id")?;
        if name.is_empty() && !self.has(Mutant::DetachEmptyNameAccepted) {
            return Err(invalid(format!("{} name is required", A::NAME)));
        }
        self.with_machine(id, Some(Mutant::AttachUnknownMachineOk), |core, st| {
            let Some(mut slot) = st.get_mut(id) else {
                return Ok(());
            };
            let entries = A::specs_mut(slot.obj.spec.get_or_insert_default());
            let before = entries.len();
            entries.retain(|e| e.name() != name);
            if entries.len() == before {
                if core.has(A::DETACH_UNKNOWN_OK) {
                    return Ok(());
                }
                return Err(Status::not_found(format!(
                    "machine {id:?} has no {} named {name:?}",
                    A::NAME
                )));
            }
            core.bump_generation(&mut slot);
            core.schedule_apply(st, id);
            Ok(())
        })
    }

    /// UpdateVolume: replaces the volume of the same name.
    pub(super) fn update_volume(&self, req: machine::UpdateVolumeRequest) -> Result<(), Status> {
        if self.has(Mutant::UpdateVolumeNoop) {
            return Ok(());
        }
        let id = req.machine_id;
        self.check_id::<machine::Machine>(&id, "machine_id")?;
        let vol = match req.volume {
            None if self.has(Mutant::UpdateVolumeMissingAccepted) => return Ok(()),
            None => return Err(invalid("volume is required")),
            Some(vol) => validated(vol)?,
        };
        self.with_machine(&id, Some(Mutant::AttachUnknownMachineOk), |core, st| {
            let Some(mut slot) = st.get_mut(&id) else {
                return Ok(());
            };
            let spec = slot.obj.spec.get_or_insert_default();
            let Some(existing) = spec.volumes.iter_mut().find(|v| v.name == vol.name) else {
                if core.has(Mutant::UpdateVolumeUnknownOk) {
                    return Ok(());
                }
                return Err(Status::not_found(format!(
                    "machine {id:?} has no volume named {:?}",
                    vol.name
                )));
            };
            if *existing == vol || core.has(Mutant::UpdateVolumeIgnored) {
                return Ok(());
            }
            *existing = vol;
            core.bump_generation(&mut slot);
            core.schedule_apply(st, &id);
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::first_duplicate;

    #[test]
    fn first_duplicate_finds_the_second_occurrence() {
        let check = |names: &[&str]| first_duplicate(names.iter().copied());
        assert_eq!(check(&[]), None);
        assert_eq!(check(&["a", "b", "c"]), None);
        assert_eq!(check(&["a", "b", "a", "b"]), Some(2));
        assert_eq!(check(&["a", "b", "b", "a"]), Some(2));
        // Past the small-list scan.
        let many: Vec<String> = (0..40).map(|i| format!("v{i}")).collect();
        let mut names: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(check(&names), None);
        names.push("v3");
        names.push("v1");
        assert_eq!(check(&names), Some(40));
    }
}
