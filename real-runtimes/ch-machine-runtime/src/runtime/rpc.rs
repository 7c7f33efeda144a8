//! The IRI RPCs' side of a machine: validation of specs, volumes and NICs against the runtime's
//! configuration and limits, then create, list, delete and the updates, each of which changes
//! the record, persists it and wakes the machine's worker (see `reconcile`).

use super::*;

impl Runtime {
    // ---- validation -------------------------------------------------------------------

    pub(super) fn validate_volume(&self, volume: &machine::Volume) -> Result<VolumeSource> {
        validate::name("volume name", &volume.name)?;
        match (&volume.local_disk, &volume.connection) {
            (Some(_), Some(_)) => Err(Error::InvalidArgument(format!(
                "volume {:?} sets both local_disk and connection",
                volume.name
            ))),
            (None, None) => Err(Error::InvalidArgument(format!(
                "volume {:?} sets neither local_disk nor connection",
                volume.name
            ))),
            (None, Some(conn)) => {
                if conn.driver != "local-file" {
                    return Err(Error::InvalidArgument(format!(
                        "volume {:?}: driver {:?} is not supported (only local-file)",
                        volume.name, conn.driver
                    )));
                }
                let path = validate::confined_file(
                    "volume handle",
                    &conn.handle,
                    &self.inner.cfg.volume_dirs,
                )?;
                // The format is what the volume runtime reports (`format` access attribute,
                // passed through by the poollet), never the file's bytes: the guest writes them.
                let attribute = conn.attributes.get("format").map(String::as_str);
                let format = ImageFormat::from_attribute(attribute).ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "volume {:?}: format attribute {:?} is not supported (raw or qcow2)",
                        volume.name,
                        attribute.unwrap_or_default()
                    ))
                })?;
                Ok(VolumeSource::File(path, format))
            }
            (Some(disk), None) => {
                if disk.size_bytes < 0 {
                    return Err(Error::InvalidArgument(format!(
                        "volume {:?}: size_bytes must not be negative",
                        volume.name
                    )));
                }
                let image = match disk.image.as_ref().map(|i| i.image.as_str()) {
                    Some(image) if !image.is_empty() => Some(validate::confined_file(
                        "local disk image",
                        image,
                        &self.inner.cfg.image_dirs,
                    )?),
                    _ => None,
                };
                let size = u64::try_from(disk.size_bytes).unwrap_or_default();
                let max = self.max_local_disk_bytes();
                if size > max {
                    return Err(Error::OutOfRange(format!(
                        "volume {:?}: local disk of {size} bytes is larger than the {max} bytes \
                         the state directory's filesystem can hold",
                        volume.name
                    )));
                }
                Ok(VolumeSource::Local {
                    image,
                    size: if size == 0 && image_is_none(&disk.image) {
                        self.inner.cfg.default_local_disk_bytes
                    } else {
                        size
                    },
                })
            }
        }
    }

    /// The largest local disk: the size of the filesystem holding the state directory (a
    /// sparse file can be created larger, but never filled).
    fn max_local_disk_bytes(&self) -> u64 {
        rustix::fs::statvfs(&self.inner.cfg.state_dir)
            .map_or(u64::MAX, |s| s.f_blocks.saturating_mul(s.f_frsize))
    }

    /// Refuse more disks plus NICs than the VMM has device slots (libvirt-provider answers
    /// ResourceExhausted for too many PCI devices too, reference §2.1).
    fn check_device_count(&self, volumes: usize, nics: usize) -> Result<()> {
        let max = self.inner.vmm.max_devices();
        if volumes.saturating_add(nics) > max {
            return Err(Error::ResourceExhausted(format!(
                "{volumes} volumes and {nics} network interfaces need more than the {max} \
                 device slots {} has per machine",
                self.inner.vmm.name()
            )));
        }
        Ok(())
    }

    /// NICs are refused, never left `Pending` forever, when no tap device can be made.
    fn nics_supported(&self) -> Result<()> {
        if self.inner.cfg.nic_mode == NicMode::Tap {
            Ok(())
        } else {
            Err(Error::NicsUnsupported)
        }
    }

    fn validate_nic(nic: &machine::NetworkInterface) -> Result<()> {
        validate::name("network interface name", &nic.name)?;
        Ok(())
    }

    fn validate_spec(&self, spec: &machine::MachineSpec) -> Result<()> {
        if spec.class.is_empty() {
            return Err(Error::InvalidArgument("spec.class is required".into()));
        }
        if !self.inner.cfg.classes.iter().any(|c| c.name == spec.class) {
            return Err(Error::InvalidArgument(format!(
                "machine class {:?} is not supported",
                spec.class
            )));
        }
        if machine::Power::try_from(spec.power).is_err() {
            return Err(Error::InvalidArgument(format!(
                "power {} is not a valid value",
                spec.power
            )));
        }
        self.check_device_count(spec.volumes.len(), spec.network_interfaces.len())?;
        let mut names = std::collections::HashSet::new();
        for volume in &spec.volumes {
            self.validate_volume(volume)?;
            if !names.insert(volume.name.as_str()) {
                return Err(Error::InvalidArgument(format!(
                    "volume name {:?} is used twice",
                    volume.name
                )));
            }
        }
        let mut names = std::collections::HashSet::new();
        for nic in &spec.network_interfaces {
            Self::validate_nic(nic)?;
            if !names.insert(nic.name.as_str()) {
                return Err(Error::InvalidArgument(format!(
                    "network interface name {:?} is used twice",
                    nic.name
                )));
            }
        }
        if !spec.network_interfaces.is_empty() {
            self.nics_supported()?;
        }
        Ok(())
    }

    // ---- RPCs ---------------------------------------------------------------------------

    /// `CreateMachine`: validate, assign an id, persist, start the worker; returns PENDING.
    pub async fn create(&self, request: Option<machine::Machine>) -> Result<machine::Machine> {
        let request =
            request.ok_or_else(|| Error::InvalidArgument("machine is required".into()))?;
        let spec = request
            .spec
            .ok_or_else(|| Error::InvalidArgument("machine.spec is required".into()))?;
        self.validate_spec(&spec)?;
        let meta = request.metadata.unwrap_or_default();
        // Held until the machine is in the map, so a racing reservation or machine sees it.
        let mut admission = Some(self.inner.reservations.admission.lock().await);
        let consumes = self.admit(&meta, &spec)?;
        let id = new_id();
        let record = MachineRecord {
            id: id.clone(),
            created_at: now_ns(),
            deleted_at: 0,
            generation: 0,
            observed_generation: 0,
            labels: meta.labels,
            annotations: meta.annotations,
            want_boot: spec.power == machine::Power::On as i32,
            volume_status: spec
                .volumes
                .iter()
                .map(|v| DeviceStatus {
                    name: v.name.clone(),
                    handle: String::new(),
                    attached: false,
                })
                .collect(),
            nic_status: spec
                .network_interfaces
                .iter()
                .map(|n| DeviceStatus {
                    name: n.name.clone(),
                    handle: String::new(),
                    attached: false,
                })
                .collect(),
            seq: 0,
            spec,
            vmm: None,
            disks: Vec::new(),
            state: machine::MachineState::MachinePending as i32,
        };
        let entry = Arc::new(Entry::new(record.clone(), Stored::Pending));
        self.lock_machines().insert(id.clone(), Arc::clone(&entry));
        // The worker starts the VMM while the record is made durable: it writes nothing (and
        // boots nothing) before that write is done, and tears the machine down if it fails.
        self.spawn_worker(id.clone(), Arc::clone(&entry));
        if consumes.is_none() {
            // The machine is in the map (it counts for admission from now on).
            admission = None;
        }
        let t = Instant::now();
        let written = self.persist(&entry, Durability::Durable).await;
        timed("create.persist", t);
        if let Err(e) = written {
            entry.with(|r| r.deleted_at = now_ns());
            entry.stored.send_replace(Stored::Failed);
            entry.wake.notify_one();
            return Err(e);
        }
        entry.stored.send_replace(Stored::Yes);
        if let Some(reservation) = consumes {
            self.bind(&reservation, &id).await;
        }
        drop(admission);
        info!(machine.id = %id, class = %record.spec.class, "machine created");
        self.record_event(
            &record,
            "Normal",
            "Created",
            "Create",
            "machine created".into(),
        );
        Ok(Self::to_proto(&record))
    }

    /// `ListMachines`.
    pub fn list(&self, filter: Option<&machine::MachineFilter>) -> Vec<machine::Machine> {
        let entries: Vec<Arc<Entry>> = {
            let machines = self.lock_machines();
            match filter.map(|f| f.id.as_str()).filter(|id| !id.is_empty()) {
                Some(id) => machines.get(id).cloned().into_iter().collect(),
                None => machines.values().cloned().collect(),
            }
        };
        // A machine is listed once its CreateMachine's write is done.
        let entries = entries
            .into_iter()
            .filter(|e| *e.stored.borrow() == Stored::Yes);
        let mut records: Vec<MachineRecord> = entries
            .map(|entry| {
                let mut record = entry.snapshot();
                // A VMM that died since the last probe is reported at once.
                if record.state == machine::MachineState::MachineRunning as i32
                    && !record.vmm.as_ref().is_some_and(VmmProcess::is_alive)
                {
                    record.state = machine::MachineState::MachineTerminated as i32;
                    entry.wake.notify_one();
                }
                record
            })
            .filter(|r| {
                filter.is_none_or(|f| iri_spec::selector::matches(&f.label_selector, &r.labels))
            })
            .collect();
        records.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        records.iter().map(Self::to_proto).collect()
    }

    /// `DeleteMachine`: mark deleting (TERMINATING), the worker tears down and forgets it.
    pub async fn delete(&self, id: &str) -> Result<()> {
        let entry = self.entry(id)?;
        let first = entry.with(|r| {
            if r.deleted_at != 0 {
                return None;
            }
            r.deleted_at = now_ns();
            r.state = machine::MachineState::MachineTerminating as i32;
            Some(r.clone())
        });
        if let Some(record) = first {
            self.persist(&entry, Durability::Durable).await?;
            info!(machine.id = %id, "machine deleting");
            self.record_event(
                &record,
                "Normal",
                "Deleting",
                "Delete",
                "machine deleting".into(),
            );
        }
        entry.wake.notify_one();
        Ok(())
    }

    async fn mutate(
        &self,
        id: &str,
        f: impl FnOnce(&mut MachineRecord) -> Result<bool>,
    ) -> Result<()> {
        let entry = self.entry(id)?;
        let changed = entry.with(|r| {
            if r.deleted_at != 0 {
                return Err(Error::Deleting(r.id.clone()));
            }
            f(r)
        })?;
        if changed {
            self.persist(&entry, Durability::Durable).await?;
            entry.wake.notify_one();
        }
        Ok(())
    }

    /// `UpdateMachineAnnotations`: replace the whole map.
    pub async fn update_annotations(
        &self,
        id: &str,
        annotations: HashMap<String, String>,
    ) -> Result<()> {
        let entry = self.entry(id)?;
        entry.with(|r| r.annotations = annotations);
        self.persist(&entry, Durability::Durable).await
    }

    /// `UpdateMachinePower`.
    pub async fn update_power(&self, id: &str, power: i32) -> Result<()> {
        let power = machine::Power::try_from(power)
            .map_err(|_| Error::InvalidArgument(format!("power {power} is not a valid value")))?;
        self.mutate(id, |r| {
            if r.spec.power != power as i32 {
                r.spec.power = power as i32;
                r.generation += 1;
            }
            // Power on is also a request to start a machine whose guest powered itself off.
            r.want_boot = power == machine::Power::On;
            Ok(true)
        })
        .await?;
        let record = self.entry(id)?.snapshot();
        let action = if power == machine::Power::On {
            "PowerOn"
        } else {
            "PowerOff"
        };
        info!(machine.id = %id, power = ?power, "power requested");
        self.record_event(
            &record,
            "Normal",
            action,
            action,
            format!("power {power:?} requested"),
        );
        Ok(())
    }

    /// `AttachVolume`.
    pub async fn attach_volume(&self, id: &str, volume: Option<machine::Volume>) -> Result<()> {
        let volume = volume.ok_or_else(|| Error::InvalidArgument("volume is required".into()))?;
        self.entry(id)?;
        self.validate_volume(&volume)?;
        self.attach(id, volume).await
    }

    /// `UpdateVolume`: replace the spec entry with that name.
    pub async fn update_volume(&self, id: &str, volume: Option<machine::Volume>) -> Result<()> {
        let volume = volume.ok_or_else(|| Error::InvalidArgument("volume is required".into()))?;
        self.entry(id)?;
        if !self
            .entry(id)?
            .snapshot()
            .spec
            .volumes
            .iter()
            .any(|v| v.name == volume.name)
        {
            return Err(Error::DeviceNotFound {
                kind: "volume",
                name: volume.name,
                machine_id: id.to_owned(),
            });
        }
        self.validate_volume(&volume)?;
        self.mutate(id, |r| {
            let Some(slot) = r.spec.volumes.iter_mut().find(|v| v.name == volume.name) else {
                return Err(Error::DeviceNotFound {
                    kind: "volume",
                    name: volume.name.clone(),
                    machine_id: r.id.clone(),
                });
            };
            if *slot != volume {
                *slot = volume;
                r.generation += 1;
            }
            Ok(true)
        })
        .await
    }

    /// `DetachVolume`.
    pub async fn detach_volume(&self, id: &str, name: &str) -> Result<()> {
        self.detach::<machine::Volume>(id, name).await
    }

    /// Add `device` to the machine's spec, and its status (not attached yet); AlreadyExists
    /// when one of its kind has its name, ResourceExhausted past the VMM's device slots.
    async fn attach<D: Device>(&self, id: &str, device: D) -> Result<()> {
        self.mutate(id, |r| {
            if D::in_spec(&mut r.spec)
                .iter()
                .any(|d| d.name() == device.name())
            {
                return Err(Error::DeviceExists {
                    kind: D::KIND,
                    name: device.name().to_owned(),
                    machine_id: r.id.clone(),
                });
            }
            let (volumes, nics) = D::ADDS;
            self.check_device_count(
                r.spec.volumes.len() + volumes,
                r.spec.network_interfaces.len() + nics,
            )?;
            D::statuses(r).push(DeviceStatus {
                name: device.name().to_owned(),
                handle: String::new(),
                attached: false,
            });
            D::in_spec(&mut r.spec).push(device);
            r.generation += 1;
            Ok(true)
        })
        .await
    }

    /// Remove device `name` of kind `D` from the machine's spec; NotFound when it is not there.
    async fn detach<D: Device>(&self, id: &str, name: &str) -> Result<()> {
        self.mutate(id, |r| {
            let devices = D::in_spec(&mut r.spec);
            let before = devices.len();
            devices.retain(|d| d.name() != name);
            if devices.len() == before {
                return Err(Error::DeviceNotFound {
                    kind: D::KIND,
                    name: name.to_owned(),
                    machine_id: r.id.clone(),
                });
            }
            r.generation += 1;
            Ok(true)
        })
        .await
    }

    /// `AttachNetworkInterface`.
    pub async fn attach_nic(&self, id: &str, nic: Option<machine::NetworkInterface>) -> Result<()> {
        let nic =
            nic.ok_or_else(|| Error::InvalidArgument("network_interface is required".into()))?;
        self.entry(id)?;
        Self::validate_nic(&nic)?;
        self.nics_supported()?;
        self.attach(id, nic).await
    }

    /// `DetachNetworkInterface`.
    pub async fn detach_nic(&self, id: &str, name: &str) -> Result<()> {
        self.detach::<machine::NetworkInterface>(id, name).await
    }
}

/// A volume or a NIC of a machine: where its kind stands in the spec and in the status.
trait Device: Sized {
    /// The kind, as errors name it.
    const KIND: &'static str;
    /// The volumes and the NICs one more of this kind adds.
    const ADDS: (usize, usize);
    /// The name, unique among the machine's devices of this kind.
    fn name(&self) -> &str;
    /// The spec's list of this kind.
    fn in_spec(spec: &mut machine::MachineSpec) -> &mut Vec<Self>;
    /// The status list of this kind.
    fn statuses(record: &mut MachineRecord) -> &mut Vec<DeviceStatus>;
}

/// [`Device`] for `$ty`: its spec list `$spec` and its status list `$status`.
macro_rules! device {
    ($ty:ty, $kind:literal, $adds:expr, $spec:ident, $status:ident) => {
        impl Device for $ty {
            const KIND: &'static str = $kind;
            const ADDS: (usize, usize) = $adds;
            fn name(&self) -> &str {
                &self.name
            }
            fn in_spec(spec: &mut machine::MachineSpec) -> &mut Vec<Self> {
                &mut spec.$spec
            }
            fn statuses(record: &mut MachineRecord) -> &mut Vec<DeviceStatus> {
                &mut record.$status
            }
        }
    };
}

device!(machine::Volume, "volume", (1, 0), volumes, volume_status);
device!(
    machine::NetworkInterface,
    "network interface",
    (0, 1),
    network_interfaces,
    nic_status
);
