//! The mock `MachineRuntime`: machines with a power/lifecycle state machine, volumes and NICs
//! with per-entry status (attached in [`attach`]), generations, class status and Exec.

mod attach;

use std::collections::HashMap;

use iri_spec::{
    kind::{IriKind, Service},
    machine::v1alpha1::{
        self as machine, MachineState, Power,
        machine_runtime_server::{MachineRuntime, MachineRuntimeServer},
    },
};
use tokio::time::Instant;
use tonic::Status;

use crate::{
    Mutant,
    core::{Core, invalid, not_found, rpc_service},
    lock,
    objects::{Due, KindMutants, MockKind, fresh_meta, kept_in, take_spec},
    store::{Slot, Store, Timers},
};

fn state_name(state: i32) -> &'static str {
    MachineState::try_from(state).map_or("UNKNOWN", |s| s.as_str_name())
}

fn power_of(value: i32) -> Result<Power, Status> {
    Power::try_from(value).map_err(|_| invalid(format!("unknown power value {value}")))
}

impl MockKind for machine::Machine {
    const MUTANTS: KindMutants = KindMutants {
        empty_id_accepted: Some(Mutant::EmptyIdAccepted),
        id_filter_ignored: Some(Mutant::IdFilterIgnored),
        label_selector_ignored: Some(Mutant::LabelSelectorIgnored),
        unknown_id_list_errors: Some(Mutant::UnknownIdListErrors),
        delete_unknown_ok: Some(Mutant::DeleteUnknownOk),
        delete_twice_not_found: Some(Mutant::DeleteTwiceNotFound),
        delete_immediate: Some(Mutant::DeleteImmediate),
        never_gone: Some(Mutant::NeverGone),
        deleted_at_unset: Some(Mutant::DeletedAtUnset),
    };
    const ID_FIELD: &'static str = "machine_id";

    kept_in!(machines);

    /// PENDING → RUNNING (or off, as the power asks), power changes, spec changes applied.
    fn transition(core: &Core, m: &mut Self, timers: &Timers, due: Due) -> Option<String> {
        let power = m.spec.as_ref().map_or(0, |s| s.power);
        let state = m.status.as_ref().map_or(0, |s| s.state);
        let mut new_state = None;
        if due.ready
            && !timers.deleting
            && state == MachineState::MachinePending as i32
            && !core.has(Mutant::NeverRunning)
        {
            new_state = Some(
                if power == Power::Off as i32 && !core.has(Mutant::CreatePowerIgnored) {
                    core.off_state()
                } else {
                    MachineState::MachineRunning
                },
            );
        }
        if due.power {
            let provisioned = timers.ready.is_none()
                && new_state.or(MachineState::try_from(state).ok())
                    != Some(MachineState::MachinePending);
            if !timers.deleting && provisioned {
                if power != Power::Off as i32 {
                    new_state = Some(MachineState::MachineRunning);
                } else if !core.has(Mutant::PowerOffIgnoredState) {
                    new_state = Some(core.off_state());
                }
            }
        }
        if due.apply {
            core.apply_spec(m);
        }
        new_state.and_then(|state| Core::apply_state(m, state))
    }

    fn listed(core: &Core, m: Self) -> Self {
        core.render(m)
    }

    fn on_delete(core: &Core, m: &mut Self) {
        if !core.has(Mutant::DeleteStateUnchanged) {
            m.set_state(MachineState::MachineTerminating as i32);
        }
    }
}

impl Core {
    fn off_state(&self) -> MachineState {
        if self.config.power_off_stopped || self.has(Mutant::PowerOffStopped) {
            MachineState::MachineStopped
        } else {
            MachineState::MachineTerminated
        }
    }

    /// Sets the state of a machine; returns the state-change event message if it changed.
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

    /// Brings status in line with spec: observed_generation, per-volume and per-NIC status.
    fn apply_spec(&self, m: &mut machine::Machine) {
        let generation = m.metadata.as_ref().map_or(0, |m| m.generation);
        let Some(spec) = m.spec.as_ref() else {
            return;
        };
        let attached = !self.has(Mutant::NeverAttached);
        let volumes = attach::statuses::<machine::Volume>(m.id(), spec, attached);
        let network_interfaces =
            attach::statuses::<machine::NetworkInterface>(m.id(), spec, attached);
        let status = m.status.get_or_insert_default();
        if !self.has(Mutant::ObservedGenerationLags) {
            status.observed_generation = generation;
        }
        status.volumes = volumes;
        status.network_interfaces = network_interfaces;
    }

    /// A machine as the wire shows it (output mutants applied).
    fn render(&self, mut m: machine::Machine) -> machine::Machine {
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

    fn bump_generation(&self, slot: &mut Slot<machine::Machine>) {
        if !self.has(Mutant::GenerationNotBumped)
            && let Some(meta) = slot.obj.metadata.as_mut()
        {
            meta.generation += 1;
        }
    }

    fn schedule_apply(&self, st: &mut Store<machine::Machine>, id: &str) {
        let at = Instant::now() + self.config.delays.apply;
        if let Some(slot) = st.get_mut(id) {
            slot.timers.apply = Some(at);
        }
        st.wake_at(id, at);
    }

    async fn create_machine(
        &self,
        req: machine::CreateMachineRequest,
    ) -> Result<machine::CreateMachineResponse, Status> {
        let (mut m, spec) = take_spec(req.machine, self.has(Mutant::MissingSpecAccepted))?;
        let spec_given = spec.is_some();
        let spec = spec.unwrap_or_default();
        if spec_given
            && self.machine_class(&spec.class).is_none()
            && !self.has(Mutant::UnknownClassAccepted)
        {
            return Err(invalid(format!("unknown machine class {:?}", spec.class)));
        }
        if !self.has(Mutant::InvalidPowerAccepted) {
            power_of(spec.power)?;
        }
        self.check_entries::<machine::Volume>(&spec)?;
        self.check_entries::<machine::NetworkInterface>(&spec)?;

        // irikit's reservation extension: a machine naming an ACCEPTED reservation consumes it.
        self.consume_reservation(m.metadata.as_ref(), &spec)?;
        let mut md = m.metadata.take().unwrap_or_default();
        let id = if self.has(Mutant::ClientIdHonoured) && !md.id.is_empty() {
            md.id.clone()
        } else if self.has(Mutant::DuplicateIds) {
            lock(&self.duplicate_id)
                .get_or_insert_with(|| self.new_id())
                .clone()
        } else if self.has(Mutant::ConcurrentCreateSameId) {
            // Deliberately racy: read the count, give other creates time to read it too.
            let n = lock(&self.machines).len();
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            format!("abcdef{n:057x}")
        } else {
            self.new_id()
        };
        let created_at = self.created_at(
            self.has(Mutant::CreatedAtZero),
            self.has(Mutant::CreatedAtSeconds),
        );
        fresh_meta(&mut md, &id, created_at);
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
                volumes: attach::statuses::<machine::Volume>(&id, &spec, false),
                network_interfaces: attach::statuses::<machine::NetworkInterface>(
                    &id, &spec, false,
                ),
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
        let stored = self.insert_new(stored, timers);
        let mut out = self.render(stored);
        if self.has(Mutant::CreateResponseNotPending)
            && let Some(status) = out.status.as_mut()
        {
            status.state = MachineState::MachineRunning as i32;
        }
        Ok(machine::CreateMachineResponse { machine: Some(out) })
    }

    /// Runs `f` on the machine `id`, or answers for an unknown one (`unknown_ok` mutant → OK).
    fn with_machine<R: Default>(
        &self,
        id: &str,
        unknown_ok: Option<Mutant>,
        f: impl FnOnce(&Core, &mut Store<machine::Machine>) -> Result<R, Status>,
    ) -> Result<R, Status> {
        self.check_id::<machine::Machine>(id, "machine_id")?;
        let mut st = self.objects::<machine::Machine>();
        if !st.contains(id) {
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
            let Some(slot) = st.get_mut(&id) else {
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
        self.check_id::<machine::Machine>(&id, "machine_id")?;
        if !self.has(Mutant::InvalidPowerAccepted) {
            power_of(req.power)?;
        }
        self.with_machine(&id, Some(Mutant::PowerUnknownOk), |core, st| {
            if core.has(Mutant::PowerIgnored) {
                return Ok(());
            }
            let Some(mut slot) = st.get_mut(&id) else {
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
            st.wake_at(&id, at);
            core.schedule_apply(st, &id);
            tracing::info!(machine.id = %id, power = req.power, "machine power changed");
            Ok(())
        })
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
        self.check_id::<machine::Machine>(id, "machine_id")?;
        if !self.objects::<machine::Machine>().contains(id) && !self.has(Mutant::ExecUnknownOk) {
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
}

rpc_service! {
    /// The `MachineRuntime` gRPC service of a mock.
    MachineService: MachineRuntime, MachineRuntimeServer {
        @common(machine, MachineVersion, MachineListEvents, Service::Machine, [machine::Machine]);
        list_machines(ListMachines, machine::ListMachinesRequest) -> machine::ListMachinesResponse = |core, req| {
            let filter = req.filter.unwrap_or_default();
            let machines = core.list(&filter.id, &filter.label_selector);
            machines.map(|machines| machine::ListMachinesResponse { machines })
        };
        create_machine(CreateMachine, machine::CreateMachineRequest) -> machine::CreateMachineResponse = |core, req| {
            core.create_machine(req).await
        };
        delete_machine(DeleteMachine, machine::DeleteMachineRequest) -> machine::DeleteMachineResponse = |core, req| {
            core.delete::<machine::Machine>(&req.machine_id).map(|()| machine::DeleteMachineResponse {})
        };
        update_machine_annotations(UpdateMachineAnnotations, machine::UpdateMachineAnnotationsRequest)
            -> machine::UpdateMachineAnnotationsResponse = |core, req| {
            core.update_annotations(req).map(|()| machine::UpdateMachineAnnotationsResponse {})
        };
        update_machine_power(UpdateMachinePower, machine::UpdateMachinePowerRequest) -> machine::UpdateMachinePowerResponse = |core, req| {
            core.update_power(req).map(|()| machine::UpdateMachinePowerResponse {})
        };
        attach_volume(AttachVolume, machine::AttachVolumeRequest) -> machine::AttachVolumeResponse = |core, req| {
            core.attach(&req.machine_id, req.volume).map(|()| machine::AttachVolumeResponse {})
        };
        detach_volume(DetachVolume, machine::DetachVolumeRequest) -> machine::DetachVolumeResponse = |core, req| {
            let res = core.detach::<machine::Volume>(&req.machine_id, &req.name);
            res.map(|()| machine::DetachVolumeResponse {})
        };
        update_volume(UpdateVolume, machine::UpdateVolumeRequest) -> machine::UpdateVolumeResponse = |core, req| {
            core.update_volume(req).map(|()| machine::UpdateVolumeResponse {})
        };
        attach_network_interface(AttachNetworkInterface, machine::AttachNetworkInterfaceRequest)
            -> machine::AttachNetworkInterfaceResponse = |core, req| {
            let res = core.attach(&req.machine_id, req.network_interface);
            res.map(|()| machine::AttachNetworkInterfaceResponse {})
        };
        detach_network_interface(DetachNetworkInterface, machine::DetachNetworkInterfaceRequest)
            -> machine::DetachNetworkInterfaceResponse = |core, req| {
            let res = core.detach::<machine::NetworkInterface>(&req.machine_id, &req.name);
            res.map(|()| machine::DetachNetworkInterfaceResponse {})
        };
        status(MachineStatus, machine::StatusRequest) -> machine::StatusResponse = |core, _req| {
            if core.has(Mutant::StatusUnavailable) {
                Err(Status::unavailable("mutant status-unavailable: machine Status fails"))
            } else {
                Ok(core.machine_status())
            }
        };
        exec(Exec, machine::ExecRequest) -> machine::ExecResponse = |core, req| {
            core.exec(&req.machine_id).map(|url| machine::ExecResponse { url })
        };
    }
}
