//! The mock `MachineRuntime`: machines with a power/lifecycle state machine, volumes and NICs
//! with per-entry status, generations, events and class status.

use std::{collections::HashMap, sync::Arc};

use iri_spec::machine::v1alpha1::{
    self as machine, MachineState, Power,
    machine_runtime_server::{MachineRuntime, MachineRuntimeServer},
};
use iri_spec::meta::v1alpha1 as meta;
use tokio::time::Instant;
use tonic::{Request, Response, Status};

use crate::{
    Method, Mutant,
    core::{Core, EventLog, EventQuery, Slot, Store, Timers, invalid, labels_match, not_found},
    lock,
};

/// Stored machines and machine events.
#[derive(Debug)]
pub(crate) struct MachineStore {
    pub(crate) store: Store<machine::Machine>,
    pub(crate) events: EventLog,
    dup_id: Option<String>,
}

impl MachineStore {
    pub(crate) fn new(event_capacity: usize) -> Self {
        MachineStore {
            store: Store::default(),
            events: EventLog::new(event_capacity),
            dup_id: None,
        }
    }
}

fn state_name(state: i32) -> &'static str {
    MachineState::try_from(state).map_or("UNKNOWN", |s| s.as_str_name())
}

fn volume_handle(machine_id: &str, vol: &machine::Volume) -> String {
    match vol.connection.as_ref() {
        Some(conn) if !conn.handle.is_empty() => conn.handle.clone(),
        _ => format!("iri-mock://machines/{machine_id}/volumes/{}", vol.name),
    }
}

fn nic_handle(machine_id: &str, nic: &machine::NetworkInterface) -> String {
    format!(
        "iri-mock://machines/{machine_id}/network-interfaces/{}",
        nic.name
    )
}

fn validate_volume(vol: &machine::Volume) -> Result<(), Status> {
    if vol.name.is_empty() {
        return Err(invalid("volume name is required"));
    }
    match (&vol.local_disk, &vol.connection) {
        (Some(_), Some(_)) => Err(invalid(format!(
            "volume {:?} has both local_disk and connection: set exactly one",
            vol.name
        ))),
        (None, None) => Err(invalid(format!(
            "volume {:?} has neither local_disk nor connection: set exactly one",
            vol.name
        ))),
        (Some(disk), None) if disk.size_bytes < 0 => Err(invalid(format!(
            "volume {:?} has a negative local disk size",
            vol.name
        ))),
        _ => Ok(()),
    }
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

fn validate_nic(nic: &machine::NetworkInterface) -> Result<(), Status> {
    if nic.name.is_empty() {
        return Err(invalid("network interface name is required"));
    }
    Ok(())
}

fn power_of(value: i32) -> Result<Power, Status> {
    Power::try_from(value).map_err(|_| invalid(format!("unknown power value {value}")))
}

impl Core {
    fn off_state(&self) -> MachineState {
        if self.config.power_off_stopped || self.has(Mutant::PowerOffStopped) {
            MachineState::MachineStopped
        } else {
            MachineState::MachineTerminated
        }
    }

    fn machine_event(
        &self,
        st: &mut MachineStore,
        meta: Option<&meta::ObjectMetadata>,
        reason: &str,
        action: &str,
        message: impl AsRef<str>,
    ) {
        if let Some(meta) = meta {
            let ev = self.event(meta, "machine", reason, action, message);
            st.events.push(ev);
        }
    }

    /// Sets the state of the decoded machine; returns the state-change event message if it changed.
    fn apply_state(m: &mut machine::Machine, state: MachineState) -> Option<String> {
        let status = m.status.get_or_insert_default();
        if status.state == state as i32 {
            return None;
        }
        let old = status.state;
        status.state = state as i32;
        Some(format!(
            "machine state {} -> {}",
            state_name(old),
            state.as_str_name()
        ))
    }

    fn set_state(&self, st: &mut MachineStore, seq: u64, state: MachineState) {
        let Some(slot) = st.store.slot_by_seq_mut(seq) else {
            return;
        };
        let Some(message) = Self::apply_state(slot.obj, state) else {
            return;
        };
        let event = slot
            .obj
            .metadata
            .as_ref()
            .map(|meta| self.event(meta, "machine", "StateChanged", "UpdateState", message));
        if let Some(ev) = event {
            st.events.push(ev);
        }
    }

    /// Applies every transition that is due.
    pub(crate) fn advance_machines(&self, st: &mut MachineStore) {
        let now = Instant::now();
        let due = |t: Option<Instant>| t.is_some_and(|t| t <= now);
        for seq in st.store.due(now) {
            let Some(timers) = st.store.timers_by_seq(seq) else {
                continue;
            };
            if due(timers.gone) {
                if let Some(md) = st.store.remove_seq(seq) {
                    self.machine_event(st, Some(&md), "Deleted", "Delete", "machine deleted");
                }
                continue;
            }
            if !(due(timers.ready) || due(timers.power) || due(timers.apply)) {
                continue;
            }
            let Some(slot) = st.store.slot_by_seq_mut(seq) else {
                continue;
            };
            let power = slot.obj.spec.as_ref().map_or(0, |s| s.power);
            let state = slot.obj.status.as_ref().map_or(0, |s| s.state);
            let mut new_state = None;
            if due(timers.ready) {
                slot.timers.ready = None;
                if !timers.deleting
                    && state == MachineState::MachinePending as i32
                    && !self.has(Mutant::NeverRunning)
                {
                    new_state = Some(
                        if power == Power::Off as i32 && !self.has(Mutant::CreatePowerIgnored) {
                            self.off_state()
                        } else {
                            MachineState::MachineRunning
                        },
                    );
                }
            }
            if due(timers.power) {
                slot.timers.power = None;
                let provisioned = slot.timers.ready.is_none()
                    && new_state.or(MachineState::try_from(state).ok())
                        != Some(MachineState::MachinePending);
                if !timers.deleting && provisioned {
                    if power == Power::Off as i32 {
                        if !self.has(Mutant::PowerOffIgnoredState) {
                            new_state = Some(self.off_state());
                        }
                    } else {
                        new_state = Some(MachineState::MachineRunning);
                    }
                }
            }
            if due(timers.apply) {
                slot.timers.apply = None;
                self.apply_spec(slot.obj);
            }
            let event = new_state
                .and_then(|state| Self::apply_state(slot.obj, state))
                .and_then(|message| {
                    let meta = slot.obj.metadata.as_ref()?;
                    Some(self.event(meta, "machine", "StateChanged", "UpdateState", message))
                });
            if let Some(ev) = event {
                st.events.push(ev);
            }
        }
    }

    /// Brings status in line with spec: observed_generation, per-volume and per-NIC status.
    fn apply_spec(&self, m: &mut machine::Machine) {
        let generation = m.metadata.as_ref().map_or(0, |m| m.generation);
        let id = m
            .metadata
            .as_ref()
            .map(|m| m.id.clone())
            .unwrap_or_default();
        let Some(spec) = m.spec.as_ref() else {
            return;
        };
        let never = self.has(Mutant::NeverAttached);
        let (vol_state, nic_state) = if never {
            (
                machine::VolumeState::VolumePending as i32,
                machine::NetworkInterfaceState::NetworkInterfacePending as i32,
            )
        } else {
            (
                machine::VolumeState::VolumeAttached as i32,
                machine::NetworkInterfaceState::NetworkInterfaceAttached as i32,
            )
        };
        let volumes = spec
            .volumes
            .iter()
            .map(|v| machine::VolumeStatus {
                name: v.name.clone(),
                handle: volume_handle(&id, v),
                state: vol_state,
            })
            .collect();
        let network_interfaces = spec
            .network_interfaces
            .iter()
            .map(|n| machine::NetworkInterfaceStatus {
                name: n.name.clone(),
                handle: nic_handle(&id, n),
                state: nic_state,
            })
            .collect();
        let status = m.status.get_or_insert_default();
        if !self.has(Mutant::ObservedGenerationLags) {
            status.observed_generation = generation;
        }
        status.volumes = volumes;
        status.network_interfaces = network_interfaces;
    }

    /// A copy of a stored machine as the wire shows it (output mutants applied).
    pub(crate) fn render_machine(&self, m: &machine::Machine) -> machine::Machine {
        self.render_owned(m.clone())
    }

    fn render_owned(&self, mut m: machine::Machine) -> machine::Machine {
        if self.has(Mutant::IdUnstable)
            && let Some(meta) = m.metadata.as_mut()
        {
            meta.id = meta.id.chars().rev().collect();
        }
        if let Some(status) = m.status.as_mut() {
            if self.has(Mutant::VolumeStatusMissing) {
                status.volumes.clear();
            }
            if self.has(Mutant::VolumeStatusMissingHandle) {
                status.volumes.iter_mut().for_each(|v| v.handle.clear());
            }
            if self.has(Mutant::NicStatusMissing) {
                status.network_interfaces.clear();
            }
        }
        if self.has(Mutant::NoMetadata) {
            m.metadata = None;
        }
        if self.has(Mutant::NoSpec) {
            m.spec = None;
        }
        if self.has(Mutant::NoStatus) {
            m.status = None;
        }
        m
    }

    fn check_id(&self, id: &str, what: &str) -> Result<(), Status> {
        if id.is_empty() && !self.has(Mutant::EmptyIdAccepted) {
            return Err(invalid(format!("{what} is required")));
        }
        Ok(())
    }

    fn bump_generation(&self, slot: &mut Slot<machine::Machine>) {
        if !self.has(Mutant::GenerationNotBumped)
            && let Some(meta) = slot.obj.metadata.as_mut()
        {
            meta.generation += 1;
        }
    }

    fn schedule_apply(&self, st: &mut MachineStore, id: &str) {
        let at = Instant::now() + self.config.delays.apply;
        if let Some(slot) = st.store.get_mut(id) {
            slot.timers.apply = Some(at);
        }
        st.store.wake_at(id, at);
    }

    async fn create_machine(
        &self,
        req: machine::CreateMachineRequest,
    ) -> Result<machine::CreateMachineResponse, Status> {
        let lax = self.has(Mutant::MissingSpecAccepted);
        let mut m = match req.machine {
            Some(m) => m,
            None if lax => machine::Machine::default(),
            None => return Err(invalid("machine is required")),
        };
        let (spec, spec_given) = match m.spec.take() {
            Some(spec) => (spec, true),
            None if lax => (machine::MachineSpec::default(), false),
            None => return Err(invalid("machine.spec is required")),
        };
        if spec_given
            && self.machine_class(&spec.class).is_none()
            && !self.has(Mutant::UnknownClassAccepted)
        {
            return Err(invalid(format!("unknown machine class {:?}", spec.class)));
        }
        if !self.has(Mutant::InvalidPowerAccepted) {
            power_of(spec.power)?;
        }
        let unchecked = self.has(Mutant::CreateVolumesUnchecked);
        let dup_vol = first_duplicate(spec.volumes.iter().map(|v| v.name.as_str()));
        for (i, vol) in spec.volumes.iter().enumerate().filter(|_| !unchecked) {
            let sourceless = vol.local_disk.is_none() && vol.connection.is_none();
            if !(sourceless && !vol.name.is_empty() && self.has(Mutant::VolumeSourceUnchecked)) {
                validate_volume(vol)?;
            }
            if dup_vol == Some(i) {
                return Err(invalid(format!("duplicate volume name {:?}", vol.name)));
            }
        }
        let dup_nic = first_duplicate(spec.network_interfaces.iter().map(|n| n.name.as_str()));
        for (i, nic) in spec
            .network_interfaces
            .iter()
            .enumerate()
            .filter(|_| !unchecked)
        {
            validate_nic(nic)?;
            if dup_nic == Some(i) {
                return Err(invalid(format!(
                    "duplicate network interface name {:?}",
                    nic.name
                )));
            }
        }

        // irikit's reservation extension: a machine naming an ACCEPTED reservation consumes it.
        self.consume_reservation(m.metadata.as_ref(), &spec)?;
        let mut md = m.metadata.take().unwrap_or_default();
        let id = if self.has(Mutant::ClientIdHonoured) && !md.id.is_empty() {
            md.id.clone()
        } else if self.has(Mutant::DuplicateIds) {
            let mut st = lock(&self.machines);
            match &st.dup_id {
                Some(id) => id.clone(),
                None => {
                    let id = self.new_id();
                    st.dup_id = Some(id.clone());
                    id
                }
            }
        } else if self.has(Mutant::ConcurrentCreateSameId) {
            // Deliberately racy: read the count, give other creates time to read it too.
            let n = lock(&self.machines).store.len();
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            format!("abcdef{n:057x}")
        } else {
            self.new_id()
        };
        md.id = id.clone();
        md.generation = 0;
        md.deleted_at = 0;
        md.created_at = self.created_at(
            self.has(Mutant::CreatedAtZero),
            self.has(Mutant::CreatedAtSeconds),
        );
        if self.has(Mutant::LabelsDropped) {
            md.labels = HashMap::new();
        }
        if self.has(Mutant::AnnotationsDropped) {
            md.annotations = HashMap::new();
        }
        let status = match m.status.take() {
            Some(status) if self.has(Mutant::ClientStatusHonoured) => status,
            _ => machine::MachineStatus {
                observed_generation: 0,
                state: MachineState::MachinePending as i32,
                image_ref: String::new(),
                volumes: spec
                    .volumes
                    .iter()
                    .map(|v| machine::VolumeStatus {
                        name: v.name.clone(),
                        handle: volume_handle(&id, v),
                        state: machine::VolumeState::VolumePending as i32,
                    })
                    .collect(),
                network_interfaces: spec
                    .network_interfaces
                    .iter()
                    .map(|n| machine::NetworkInterfaceStatus {
                        name: n.name.clone(),
                        handle: nic_handle(&id, n),
                        state: machine::NetworkInterfaceState::NetworkInterfacePending as i32,
                    })
                    .collect(),
                machine_conditions: Vec::new(),
            },
        };
        let stored = machine::Machine {
            metadata: Some(md),
            spec: Some(spec),
            status: Some(status),
        };
        let now = Instant::now();
        let timers = Timers {
            ready: Some(now + self.config.delays.provision),
            apply: Some(now + self.config.delays.apply),
            ..Timers::default()
        };
        let mut st = lock(&self.machines);
        self.advance_machines(&mut st);
        self.machine_event(
            &mut st,
            stored.metadata.as_ref(),
            "Created",
            "Create",
            "machine created",
        );
        st.store.insert(&id, stored.clone(), timers);
        drop(st);
        tracing::info!(machine.id = %id, "machine created");
        let mut out = self.render_owned(stored);
        if self.has(Mutant::CreateResponseNotPending)
            && let Some(status) = out.status.as_mut()
        {
            status.state = MachineState::MachineRunning as i32;
        }
        Ok(machine::CreateMachineResponse { machine: Some(out) })
    }

    fn delete_machine(&self, id: &str) -> Result<(), Status> {
        self.check_id(id, "machine_id")?;
        let mut st = lock(&self.machines);
        self.advance_machines(&mut st);
        let now = Instant::now();
        let Some(timers) = st.store.timers(id) else {
            if self.has(Mutant::DeleteUnknownOk) {
                return Ok(());
            }
            return Err(not_found("machine", id));
        };
        if timers.deleting {
            if self.has(Mutant::DeleteTwiceNotFound) {
                return Err(not_found("machine", id));
            }
            return Ok(());
        }
        if self.has(Mutant::DeleteImmediate) {
            if let Some(md) = st.store.remove(id) {
                self.machine_event(&mut st, Some(&md), "Deleted", "Delete", "machine deleted");
            }
            tracing::info!(machine.id = %id, "machine deleted");
            return Ok(());
        }
        let gone_at = (!self.has(Mutant::NeverGone)).then(|| now + self.config.delays.terminate);
        let event = {
            let Some(slot) = st.store.get_mut(id) else {
                return Err(not_found("machine", id));
            };
            slot.timers.deleting = true;
            slot.timers.gone = gone_at;
            if let Some(md) = slot.obj.metadata.as_mut()
                && !self.has(Mutant::DeletedAtUnset)
            {
                md.deleted_at = self.clock.unix_nanos();
            }
            if !self.has(Mutant::DeleteStateUnchanged) {
                slot.obj.status.get_or_insert_default().state =
                    MachineState::MachineTerminating as i32;
            }
            slot.obj.metadata.as_ref().map(|meta| {
                self.event(
                    meta,
                    "machine",
                    "Deleting",
                    "Delete",
                    "machine is being deleted",
                )
            })
        };
        if let Some(at) = gone_at {
            st.store.wake_at(id, at);
        }
        if let Some(ev) = event {
            st.events.push(ev);
        }
        tracing::info!(machine.id = %id, "machine deleting");
        Ok(())
    }

    /// Runs `f` on the machine `id`, or answers for an unknown one (`unknown_ok` mutant → OK).
    fn with_machine<R: Default>(
        &self,
        id: &str,
        unknown_ok: Option<Mutant>,
        f: impl FnOnce(&Core, &mut MachineStore) -> Result<R, Status>,
    ) -> Result<R, Status> {
        self.check_id(id, "machine_id")?;
        let mut st = lock(&self.machines);
        self.advance_machines(&mut st);
        if !st.store.contains(id) {
            if unknown_ok.is_some_and(|m| self.has(m)) {
                return Ok(R::default());
            }
            return Err(not_found("machine", id));
        }
        f(self, &mut st)
    }

    fn update_annotations(
        &self,
        req: machine::UpdateMachineAnnotationsRequest,
    ) -> Result<(), Status> {
        let id = req.machine_id.clone();
        self.with_machine(&id, Some(Mutant::AnnotationsUnknownOk), |core, st| {
            let Some(slot) = st.store.get_mut(&id) else {
                return Ok(());
            };
            let md = slot.obj.metadata.get_or_insert_default();
            if core.has(Mutant::AnnotationsUpdateIgnored) {
            } else if core.has(Mutant::AnnotationsDropped) {
                md.annotations.clear();
            } else if core.has(Mutant::AnnotationsMerged) {
                md.annotations.extend(req.annotations);
            } else {
                md.annotations = req.annotations;
            }
            Ok(())
        })
    }

    fn update_power(&self, req: machine::UpdateMachinePowerRequest) -> Result<(), Status> {
        let id = req.machine_id.clone();
        self.check_id(&id, "machine_id")?;
        if !self.has(Mutant::InvalidPowerAccepted) {
            power_of(req.power)?;
        }
        self.with_machine(&id, Some(Mutant::PowerUnknownOk), |core, st| {
            if core.has(Mutant::PowerIgnored) {
                return Ok(());
            }
            let Some(mut slot) = st.store.get_mut(&id) else {
                return Ok(());
            };
            let spec = slot.obj.spec.get_or_insert_default();
            if spec.power == req.power {
                return Ok(());
            }
            spec.power = req.power;
            core.bump_generation(&mut slot);
            let at = Instant::now() + core.config.delays.power;
            slot.timers.power = Some(at);
            st.store.wake_at(&id, at);
            core.schedule_apply(st, &id);
            tracing::info!(machine.id = %id, power = req.power, "machine power changed");
            Ok(())
        })
    }

    fn attach_volume(&self, req: machine::AttachVolumeRequest) -> Result<(), Status> {
        let id = req.machine_id.clone();
        self.check_id(&id, "machine_id")?;
        let lax = self.has(Mutant::AttachMissingVolumeAccepted);
        let vol = match req.volume {
            Some(vol) if !vol.name.is_empty() => vol,
            _ if lax => return Ok(()),
            None => return Err(invalid("volume is required")),
            Some(_) => return Err(invalid("volume name is required")),
        };
        validate_volume(&vol)?;
        self.with_machine(&id, Some(Mutant::AttachUnknownMachineOk), |core, st| {
            let Some(mut slot) = st.store.get_mut(&id) else {
                return Ok(());
            };
            let spec = slot.obj.spec.get_or_insert_default();
            if spec.volumes.iter().any(|v| v.name == vol.name)
                && !core.has(Mutant::AttachDuplicateOk)
            {
                return Err(Status::already_exists(format!(
                    "machine {id:?} already has a volume named {:?}",
                    vol.name
                )));
            }
            if core.has(Mutant::AttachNotReflected) {
                return Ok(());
            }
            let handle = volume_handle(&id, &vol);
            let name = vol.name.clone();
            spec.volumes.push(vol);
            let status = slot.obj.status.get_or_insert_default();
            status.volumes.retain(|v| v.name != name);
            status.volumes.push(machine::VolumeStatus {
                name,
                handle,
                state: machine::VolumeState::VolumePending as i32,
            });
            core.bump_generation(&mut slot);
            core.schedule_apply(st, &id);
            Ok(())
        })
    }

    fn detach_volume(&self, req: machine::DetachVolumeRequest) -> Result<(), Status> {
        let id = req.machine_id.clone();
        self.check_id(&id, "machine_id")?;
        if req.name.is_empty() && !self.has(Mutant::DetachEmptyNameAccepted) {
            return Err(invalid("volume name is required"));
        }
        self.with_machine(&id, Some(Mutant::AttachUnknownMachineOk), |core, st| {
            let Some(mut slot) = st.store.get_mut(&id) else {
                return Ok(());
            };
            let spec = slot.obj.spec.get_or_insert_default();
            let before = spec.volumes.len();
            spec.volumes.retain(|v| v.name != req.name);
            if spec.volumes.len() == before {
                if core.has(Mutant::DetachUnknownOk) {
                    return Ok(());
                }
                return Err(Status::not_found(format!(
                    "machine {id:?} has no volume named {:?}",
                    req.name
                )));
            }
            core.bump_generation(&mut slot);
            core.schedule_apply(st, &id);
            Ok(())
        })
    }

    fn update_volume(&self, req: machine::UpdateVolumeRequest) -> Result<(), Status> {
        if self.has(Mutant::UpdateVolumeNoop) {
            return Ok(());
        }
        let id = req.machine_id.clone();
        self.check_id(&id, "machine_id")?;
        let vol = match req.volume {
            Some(vol) if !vol.name.is_empty() => vol,
            None if self.has(Mutant::UpdateVolumeMissingAccepted) => return Ok(()),
            None => return Err(invalid("volume is required")),
            Some(_) => return Err(invalid("volume name is required")),
        };
        validate_volume(&vol)?;
        self.with_machine(&id, Some(Mutant::AttachUnknownMachineOk), |core, st| {
            let Some(mut slot) = st.store.get_mut(&id) else {
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

    fn attach_nic(&self, req: machine::AttachNetworkInterfaceRequest) -> Result<(), Status> {
        let id = req.machine_id.clone();
        self.check_id(&id, "machine_id")?;
        let lax = self.has(Mutant::AttachMissingVolumeAccepted);
        let nic = match req.network_interface {
            Some(nic) if !nic.name.is_empty() => nic,
            _ if lax => return Ok(()),
            None => return Err(invalid("network_interface is required")),
            Some(_) => return Err(invalid("network interface name is required")),
        };
        self.with_machine(&id, Some(Mutant::AttachUnknownMachineOk), |core, st| {
            let Some(mut slot) = st.store.get_mut(&id) else {
                return Ok(());
            };
            let spec = slot.obj.spec.get_or_insert_default();
            if spec.network_interfaces.iter().any(|n| n.name == nic.name)
                && !core.has(Mutant::AttachNicDuplicateOk)
            {
                return Err(Status::already_exists(format!(
                    "machine {id:?} already has a network interface named {:?}",
                    nic.name
                )));
            }
            if core.has(Mutant::AttachNotReflected) {
                return Ok(());
            }
            let handle = nic_handle(&id, &nic);
            let name = nic.name.clone();
            spec.network_interfaces.push(nic);
            let status = slot.obj.status.get_or_insert_default();
            status.network_interfaces.retain(|n| n.name != name);
            status
                .network_interfaces
                .push(machine::NetworkInterfaceStatus {
                    name,
                    handle,
                    state: machine::NetworkInterfaceState::NetworkInterfacePending as i32,
                });
            core.bump_generation(&mut slot);
            core.schedule_apply(st, &id);
            Ok(())
        })
    }

    fn detach_nic(&self, req: machine::DetachNetworkInterfaceRequest) -> Result<(), Status> {
        let id = req.machine_id.clone();
        self.check_id(&id, "machine_id")?;
        if req.name.is_empty() && !self.has(Mutant::DetachEmptyNameAccepted) {
            return Err(invalid("network interface name is required"));
        }
        self.with_machine(&id, Some(Mutant::AttachUnknownMachineOk), |core, st| {
            let Some(mut slot) = st.store.get_mut(&id) else {
                return Ok(());
            };
            let spec = slot.obj.spec.get_or_insert_default();
            let before = spec.network_interfaces.len();
            spec.network_interfaces.retain(|n| n.name != req.name);
            if spec.network_interfaces.len() == before {
                if core.has(Mutant::DetachNicUnknownOk) {
                    return Ok(());
                }
                return Err(Status::not_found(format!(
                    "machine {id:?} has no network interface named {:?}",
                    req.name
                )));
            }
            core.bump_generation(&mut slot);
            core.schedule_apply(st, &id);
            Ok(())
        })
    }

    pub(crate) fn list_machines(
        &self,
        filter: Option<machine::MachineFilter>,
    ) -> Result<Vec<machine::Machine>, Status> {
        let filter = filter.unwrap_or_default();
        let mut st = lock(&self.machines);
        self.advance_machines(&mut st);
        if !filter.id.is_empty() && !self.has(Mutant::IdFilterIgnored) {
            let Some(obj) = st.store.get(&filter.id) else {
                if self.has(Mutant::UnknownIdListErrors) {
                    return Err(not_found("machine", &filter.id));
                }
                return Ok(Vec::new());
            };
            let selector_ok = self.has(Mutant::LabelSelectorIgnored)
                || labels_match(&filter.label_selector, obj.metadata.as_ref());
            return Ok(if selector_ok {
                vec![self.render_machine(&obj)]
            } else {
                Vec::new()
            });
        }
        if filter.label_selector.is_empty() || self.has(Mutant::LabelSelectorIgnored) {
            return Ok(st.store.iter().map(|obj| self.render_owned(obj)).collect());
        }
        Ok(st
            .store
            .iter_labelled(&filter.label_selector)
            .map(|obj| self.render_owned(obj))
            .collect())
    }

    fn machine_status(&self) -> machine::StatusResponse {
        if self.has(Mutant::StatusNoClasses) {
            return machine::StatusResponse::default();
        }
        let machine_class_status = self
            .config
            .machine_classes
            .iter()
            .map(|class| {
                let mut resources: HashMap<String, i64> =
                    class.extra.iter().map(|(k, v)| (k.clone(), *v)).collect();
                if !self.has(Mutant::StatusNoCpuKey) {
                    let cpu = if self.has(Mutant::StatusCpuMillis) {
                        class.cpu.saturating_mul(1000)
                    } else {
                        class.cpu
                    };
                    resources.insert("cpu".to_owned(), cpu);
                }
                let memory = if self.has(Mutant::StatusMemoryMib) {
                    class.memory_bytes / (1 << 20)
                } else {
                    class.memory_bytes
                };
                resources.insert("memory".to_owned(), memory);
                machine::MachineClassStatus {
                    machine_class: Some(machine::MachineClass {
                        name: class.name.clone(),
                        capabilities: if self.has(Mutant::NilClassCapabilities) {
                            None
                        } else {
                            Some(machine::MachineClassCapabilities { resources })
                        },
                    }),
                    quantity: if self.has(Mutant::NegativeQuantity) {
                        -class.quantity.max(1)
                    } else {
                        class.quantity
                    },
                }
            })
            .collect();
        machine::StatusResponse {
            machine_class_status,
        }
    }

    fn exec(&self, id: &str) -> Result<String, Status> {
        self.check_id(id, "machine_id")?;
        let mut st = lock(&self.machines);
        self.advance_machines(&mut st);
        if !st.store.contains(id) && !self.has(Mutant::ExecUnknownOk) {
            return Err(not_found("machine", id));
        }
        if let Some(console) = &self.config.console {
            let violations = crate::console::Violations {
                url_not_served: self.has(Mutant::ConsoleUrlNotServed),
                no_echo: self.has(Mutant::ConsoleNoEcho),
                second_allowed: self.has(Mutant::ConsoleSecondAllowed),
                token_reusable: self.has(Mutant::ConsoleTokenReusable),
            };
            return console.issue_with(id, violations);
        }
        Ok(match &self.config.exec_url_prefix {
            Some(prefix) => format!("{prefix}{id}"),
            None => String::new(),
        })
    }

    pub(crate) fn machine_events(&self, q: &EventQuery) -> Vec<iri_spec::event::v1alpha1::Event> {
        let mut st = lock(&self.machines);
        self.advance_machines(&mut st);
        self.filter_events(&st.events, q)
    }

    /// Stores a machine as given (test seeding). Fills in a missing id, created_at, spec and status.
    pub(crate) fn seed_machine(&self, mut m: machine::Machine) -> String {
        let md = m.metadata.get_or_insert_default();
        if md.id.is_empty() {
            md.id = self.new_id();
        }
        if md.created_at == 0 {
            md.created_at = self.clock.unix_nanos();
        }
        let id = md.id.clone();
        m.spec.get_or_insert_default();
        m.status.get_or_insert_default();
        let mut st = lock(&self.machines);
        st.store.insert(&id, m, Timers::default());
        id
    }

    /// Forces a machine's state (test control). Returns false if unknown.
    pub(crate) fn force_machine_state(&self, id: &str, state: MachineState) -> bool {
        let mut st = lock(&self.machines);
        self.advance_machines(&mut st);
        let Some(slot) = st.store.get_mut(id) else {
            return false;
        };
        slot.timers.ready = None;
        slot.timers.power = None;
        let Some(seq) = st.store.seq_of(id) else {
            return false;
        };
        self.set_state(&mut st, seq, state);
        true
    }

    /// The stored machine `id`, as the wire would show it.
    pub(crate) fn get_machine(&self, id: &str) -> Option<machine::Machine> {
        let mut st = lock(&self.machines);
        self.advance_machines(&mut st);
        st.store.get(id)
    }

    /// Mutates a stored machine in place (test control).
    pub(crate) fn modify_machine(&self, id: &str, f: impl FnOnce(&mut machine::Machine)) -> bool {
        let mut st = lock(&self.machines);
        self.advance_machines(&mut st);
        match st.store.get_mut(id) {
            Some(slot) => {
                f(slot.obj);
                true
            }
            None => false,
        }
    }

    pub(crate) fn push_machine_event(&self, ev: iri_spec::event::v1alpha1::Event) {
        lock(&self.machines).events.push(ev);
    }

    pub(crate) fn machine_count(&self) -> usize {
        let mut st = lock(&self.machines);
        self.advance_machines(&mut st);
        st.store.len()
    }
}

/// The `MachineRuntime` gRPC service of a mock.
#[derive(Debug, Clone)]
pub struct MachineService {
    pub(crate) core: Arc<Core>,
}

impl MachineService {
    /// The tonic server for this service.
    pub fn into_server(self) -> MachineRuntimeServer<Self> {
        MachineRuntimeServer::new(self)
    }
}

type R<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl MachineRuntime for MachineService {
    async fn version(
        &self,
        request: Request<machine::VersionRequest>,
    ) -> R<machine::VersionResponse> {
        let (call, _req) = self.core.begin(Method::MachineVersion, request).await?;
        let (runtime_name, runtime_version) = self.core.version();
        call.finish(Ok(machine::VersionResponse {
            runtime_name,
            runtime_version,
        }))
    }

    async fn list_events(
        &self,
        request: Request<machine::ListEventsRequest>,
    ) -> R<machine::ListEventsResponse> {
        let (call, req) = self.core.begin(Method::MachineListEvents, request).await?;
        let f = req.filter.unwrap_or_default();
        let q = EventQuery {
            id: f.id,
            labels: f.label_selector,
            from: f.events_from_time,
            to: f.events_to_time,
        };
        call.finish(Ok(machine::ListEventsResponse {
            events: self.core.machine_events(&q),
        }))
    }

    async fn list_machines(
        &self,
        request: Request<machine::ListMachinesRequest>,
    ) -> R<machine::ListMachinesResponse> {
        let (call, req) = self.core.begin(Method::ListMachines, request).await?;
        let res = self
            .core
            .list_machines(req.filter)
            .map(|machines| machine::ListMachinesResponse { machines });
        call.finish(res)
    }

    async fn create_machine(
        &self,
        request: Request<machine::CreateMachineRequest>,
    ) -> R<machine::CreateMachineResponse> {
        let (call, req) = self.core.begin(Method::CreateMachine, request).await?;
        let res = self.core.create_machine(req).await;
        call.finish(res)
    }

    async fn delete_machine(
        &self,
        request: Request<machine::DeleteMachineRequest>,
    ) -> R<machine::DeleteMachineResponse> {
        let (call, req) = self.core.begin(Method::DeleteMachine, request).await?;
        let res = self.core.delete_machine(&req.machine_id);
        call.finish(res.map(|()| machine::DeleteMachineResponse {}))
    }

    async fn update_machine_annotations(
        &self,
        request: Request<machine::UpdateMachineAnnotationsRequest>,
    ) -> R<machine::UpdateMachineAnnotationsResponse> {
        let (call, req) = self
            .core
            .begin(Method::UpdateMachineAnnotations, request)
            .await?;
        let res = self.core.update_annotations(req);
        call.finish(res.map(|()| machine::UpdateMachineAnnotationsResponse {}))
    }

    async fn update_machine_power(
        &self,
        request: Request<machine::UpdateMachinePowerRequest>,
    ) -> R<machine::UpdateMachinePowerResponse> {
        let (call, req) = self.core.begin(Method::UpdateMachinePower, request).await?;
        let res = self.core.update_power(req);
        call.finish(res.map(|()| machine::UpdateMachinePowerResponse {}))
    }

    async fn attach_volume(
        &self,
        request: Request<machine::AttachVolumeRequest>,
    ) -> R<machine::AttachVolumeResponse> {
        let (call, req) = self.core.begin(Method::AttachVolume, request).await?;
        let res = self.core.attach_volume(req);
        call.finish(res.map(|()| machine::AttachVolumeResponse {}))
    }

    async fn detach_volume(
        &self,
        request: Request<machine::DetachVolumeRequest>,
    ) -> R<machine::DetachVolumeResponse> {
        let (call, req) = self.core.begin(Method::DetachVolume, request).await?;
        let res = self.core.detach_volume(req);
        call.finish(res.map(|()| machine::DetachVolumeResponse {}))
    }

    async fn update_volume(
        &self,
        request: Request<machine::UpdateVolumeRequest>,
    ) -> R<machine::UpdateVolumeResponse> {
        let (call, req) = self.core.begin(Method::UpdateVolume, request).await?;
        let res = self.core.update_volume(req);
        call.finish(res.map(|()| machine::UpdateVolumeResponse {}))
    }

    async fn attach_network_interface(
        &self,
        request: Request<machine::AttachNetworkInterfaceRequest>,
    ) -> R<machine::AttachNetworkInterfaceResponse> {
        let (call, req) = self
            .core
            .begin(Method::AttachNetworkInterface, request)
            .await?;
        let res = self.core.attach_nic(req);
        call.finish(res.map(|()| machine::AttachNetworkInterfaceResponse {}))
    }

    async fn detach_network_interface(
        &self,
        request: Request<machine::DetachNetworkInterfaceRequest>,
    ) -> R<machine::DetachNetworkInterfaceResponse> {
        let (call, req) = self
            .core
            .begin(Method::DetachNetworkInterface, request)
            .await?;
        let res = self.core.detach_nic(req);
        call.finish(res.map(|()| machine::DetachNetworkInterfaceResponse {}))
    }

    async fn status(&self, request: Request<machine::StatusRequest>) -> R<machine::StatusResponse> {
        let (call, _req) = self.core.begin(Method::MachineStatus, request).await?;
        if self.core.has(Mutant::StatusUnavailable) {
            return call.finish(Err(tonic::Status::unavailable(
                "mutant status-unavailable: machine Status fails",
            )));
        }
        call.finish(Ok(self.core.machine_status()))
    }

    async fn exec(&self, request: Request<machine::ExecRequest>) -> R<machine::ExecResponse> {
        let (call, req) = self.core.begin(Method::Exec, request).await?;
        let res = self.core.exec(&req.machine_id);
        call.finish(res.map(|url| machine::ExecResponse { url }))
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
