//! A machine's worker: one reconcile pass brings the VMM to the record (prepare disks, spawn
//! or adopt the VMM, create and boot the VM, hot-plug, power off, tear down on delete) and
//! copies what the VMM reports back into the record.

use super::*;

impl Runtime {
    // ---- reconcile ----------------------------------------------------------------------

    /// One reconcile pass; returns true when the machine is gone.
    pub(super) async fn reconcile(&self, entry: &Arc<Entry>) -> bool {
        let pass = Instant::now();
        let record = entry.snapshot();
        let paths = VmPaths::new(&self.vm_dir(&record.id));
        if record.deleted_at != 0 {
            self.teardown(&record, &paths).await;
            return true;
        }
        // A new machine that is to run takes a VMM started ahead: its directory becomes the
        // machine's (so only while the machine has none).
        let mut warm = None;
        if let Some(pool) = &self.inner.warm
            && record.vmm.is_none()
            && record.want_boot
            && record.spec.power == machine::Power::On as i32
            && !paths.dir.exists()
        {
            warm = pool.take_or_wait(&paths.dir, WARM_WAIT).await;
        }
        if !paths.dir.join("disks").is_dir()
            && let Err(e) = private_dirs(&paths.dir)
        {
            warn!(error = %e, "create machine dir");
            return false;
        }

        // Disks for every spec volume.
        let mut disks = Vec::new();
        let mut failures = Vec::new();
        for volume in &record.spec.volumes {
            match self.prepare_disk(&record, volume, &paths).await {
                Ok(disk) => disks.push(disk),
                Err(e) => failures.push(format!("volume {:?}: {e:#}", volume.name)),
            }
        }
        let nics: Vec<NicSpec> = match self.inner.cfg.nic_mode {
            NicMode::None | NicMode::Auto => Vec::new(),
            NicMode::Tap => record
                .spec
                .network_interfaces
                .iter()
                .map(|n| NicSpec {
                    id: nic_id(&n.name),
                    mac: nic_mac(&record.id, &n.name),
                    tap: tap_name(&self.inner.cfg.tap_prefix, &record.id, &n.name),
                })
                .collect(),
        };

        let mut process = record.vmm.clone().filter(VmmProcess::is_alive);
        let power_on = record.spec.power == machine::Power::On as i32;
        let mut want_boot = record.want_boot && power_on;
        let mut ok = failures.is_empty();

        timed("reconcile.prepare", pass);
        if let Some(spawned) = warm.take_if(|_| !(want_boot && failures.is_empty())) {
            // Not booting after all (a volume is not ready): the machine keeps the VMM.
            process = Some(self.own_vmm(entry, spawned));
        }
        if want_boot && failures.is_empty() {
            let t = Instant::now();
            let res = self
                .power_on(entry, &record, &paths, &disks, &nics, &mut process, warm)
                .await;
            timed("reconcile.power_on", t);
            match res {
                Ok(()) => want_boot = false,
                Err(e) => {
                    ok = false;
                    warn!(error = %e, "boot failed");
                    self.warning_event(entry, &record, "BootFailed", "PowerOn", format!("{e:#}"));
                }
            }
        }

        let t = Instant::now();
        let mut info = match &process {
            Some(p) => self.inner.vmm.info(p).await.ok(),
            None => None,
        };
        timed("reconcile.info", t);
        if info.is_none() {
            process = None;
        }

        if !power_on
            && let (Some(p), Some(i)) = (&process, &info)
            && matches!(i.state, VmState::Running | VmState::Paused)
        {
            match self.power_off(p).await {
                Ok(()) => {
                    info!("machine powered off");
                    self.record_event(
                        &record,
                        "Normal",
                        "PoweredOff",
                        "PowerOff",
                        "machine powered off".into(),
                    );
                }
                Err(e) => {
                    ok = false;
                    warn!(error = %e, "power off failed");
                }
            }
            info = self.inner.vmm.info(p).await.ok();
        }

        // Hot-plug while running (a created VM picks its devices up at the next boot).
        if let (Some(p), Some(i)) = (&process, &info)
            && matches!(i.state, VmState::Running | VmState::Paused)
        {
            match self.hotplug(p, i, &record.disks, &disks, &nics).await {
                Ok(changed) => {
                    if changed {
                        info = self.inner.vmm.info(p).await.ok();
                    }
                }
                Err(e) => {
                    ok = false;
                    warn!(error = %e, "hot-plug failed");
                    self.warning_event(entry, &record, "HotplugFailed", "Attach", format!("{e:#}"));
                }
            }
        }
        for failure in &failures {
            warn!(%failure, "volume not ready");
        }

        // Observed state.
        let state = observed_state(info.as_ref().map(|i| i.state), want_boot);
        let present: Vec<String> = info
            .as_ref()
            .map(|i| i.disk_ids.clone())
            .unwrap_or_default();
        let present_nics: Vec<String> =
            info.as_ref().map(|i| i.nic_ids.clone()).unwrap_or_default();
        let volume_status: Vec<DeviceStatus> = record
            .spec
            .volumes
            .iter()
            .map(|v| {
                let disk = disks.iter().find(|d| d.name == v.name);
                DeviceStatus {
                    name: v.name.clone(),
                    handle: disk
                        .map(|d| d.disk.path.display().to_string())
                        .unwrap_or_default(),
                    attached: disk.is_some_and(|d| present.contains(&d.disk.id)),
                }
            })
            .collect();
        let nic_status: Vec<DeviceStatus> = record
            .spec
            .network_interfaces
            .iter()
            .map(|n| {
                let id = nic_id(&n.name);
                let attached =
                    self.inner.cfg.nic_mode == NicMode::Tap && present_nics.contains(&id);
                DeviceStatus {
                    name: n.name.clone(),
                    handle: if attached {
                        nic_mac(&record.id, &n.name)
                    } else {
                        String::new()
                    },
                    attached,
                }
            })
            .collect();

        let old_state = record.state;
        // What this pass may change: persisted (volatile) only when it did.
        let observed = |r: &MachineRecord| {
            (
                r.state,
                r.vmm.clone(),
                r.disks.clone(),
                r.volume_status.clone(),
                r.nic_status.clone(),
                r.want_boot,
                r.observed_generation,
            )
        };
        let changed = entry.with(|r| {
            let before = observed(r);
            if r.deleted_at == 0 {
                r.state = state as i32;
            }
            r.vmm = process.clone();
            r.disks = disks.clone();
            r.volume_status = volume_status;
            r.nic_status = nic_status;
            if r.generation == record.generation {
                r.want_boot = want_boot;
                if ok {
                    r.observed_generation = record.generation;
                }
            }
            before != observed(r)
        });
        timed("reconcile.observed", pass);
        let t = Instant::now();
        if changed && let Err(e) = self.persist(entry, Durability::Volatile).await {
            warn!(error = %e, "persist machine state");
        }
        timed("reconcile.persist", t);
        if old_state != state as i32 && record.deleted_at == 0 {
            debug!(from = old_state, to = ?state, "machine state changed");
            if state == machine::MachineState::MachineTerminated
                && old_state == machine::MachineState::MachineRunning as i32
                && power_on
            {
                info!("guest stopped (vmm exited or vm shut down)");
                self.record_event(
                    &record,
                    "Normal",
                    "Stopped",
                    "PowerOff",
                    "guest stopped".into(),
                );
            }
        }
        false
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "the pass's own locals, borrowed; a struct for one call would only rename them"
    )]
    async fn power_on(
        &self,
        entry: &Arc<Entry>,
        record: &MachineRecord,
        paths: &VmPaths,
        disks: &[PreparedDisk],
        nics: &[NicSpec],
        process: &mut Option<VmmProcess>,
        warm: Option<Spawned>,
    ) -> vmm::Result<()> {
        let vmm = &self.inner.vmm;
        let fresh = process.is_none();
        if fresh {
            let t = Instant::now();
            let spawned = match warm {
                Some(spawned) => spawned,
                None => {
                    vmm.spawn_for(paths, &self.vm_spec(record, paths, disks, nics))
                        .await?
                }
            };
            timed("power_on.spawn", t);
            *process = Some(self.own_vmm(entry, spawned));
        }
        let Some(p) = process.as_ref() else {
            return Err(vmm::Error::Gone);
        };
        let start_vm = async {
            let t = Instant::now();
            // A VMM spawned just now has no VM (CH) or no device attached yet (QEMU's
            // prelaunch): no need to ask, `create` is what it needs.
            let info = if fresh {
                None
            } else {
                Some(vmm.info(p).await?)
            };
            let state = info.as_ref().map_or(VmState::NotCreated, |i| i.state);
            timed("power_on.info", t);
            let t = Instant::now();
            let spec = self.vm_spec(record, paths, disks, nics);
            match state {
                VmState::Running | VmState::Paused => return Ok::<bool, vmm::Error>(false),
                VmState::NotCreated => vmm.create(p, &spec).await?,
                VmState::Created | VmState::Shutdown => {
                    let want: Vec<&str> = disks.iter().map(|d| d.disk.id.as_str()).collect();
                    let mut have: Vec<&str> = info
                        .iter()
                        .flat_map(|i| i.disk_ids.iter().map(String::as_str))
                        .collect();
                    let mut want_sorted = want.clone();
                    want_sorted.sort_unstable();
                    have.sort_unstable();
                    if want_sorted != have || record.disks != disks {
                        vmm.delete(p).await?;
                        vmm.create(p, &spec).await?;
                    }
                }
            }
            timed("power_on.create", t);
            let t = Instant::now();
            if !self
                .inner
                .consoles
                .wait_connected(&record.id, CONSOLE_CONNECT)
                .await
            {
                warn!("the console pump did not reach the serial socket before boot");
            }
            timed("power_on.console", t);
            let t = Instant::now();
            vmm.boot(p).await?;
            timed("power_on.boot", t);
            // The VMM took the boot (CH's vm.boot and QEMU's `cont` return once the vCPUs
            // run): listed as RUNNING at once; the pass's vm.info below confirms it.
            entry.with(|r| {
                if r.deleted_at == 0 && r.generation == record.generation {
                    r.state = machine::MachineState::MachineRunning as i32;
                }
            });
            Ok(true)
        };
        let booted = if fresh {
            // The new VMM's pid is written (volatile: it matters only while the host is up)
            // while the VM is created and booted. A runtime killed before the write lands
            // leaves a VMM it does not know: the restarted runtime kills the VMMs in the
            // directory of every machine whose VMM it does not adopt (and of machines it has
            // no record of, `sweep_orphans`) before it starts new ones.
            let t = Instant::now();
            let (written, booted) =
                tokio::join!(self.persist(entry, Durability::Volatile), start_vm);
            timed("power_on.pid_and_boot", t);
            if let Err(e) = written {
                warn!(error = %e, "persist vmm pid");
            }
            booted?
        } else {
            start_vm.await?
        };
        if booted {
            info!("machine booted");
            self.record_event(
                record,
                "Normal",
                "Booted",
                "PowerOn",
                "machine booted".into(),
            );
        }
        Ok(())
    }

    /// The machine's VMM from now on: recorded in the entry (persisted with the next write)
    /// and reaped by a task that wakes the worker when it exits.
    fn own_vmm(&self, entry: &Arc<Entry>, spawned: Spawned) -> VmmProcess {
        let p = spawned.process;
        entry.with(|r| r.vmm = Some(p.clone()));
        let mut child = spawned.child;
        let waker = Arc::clone(entry);
        tokio::spawn(async move {
            let _ = child.wait().await;
            waker.wake.notify_one();
        });
        debug!(pid = p.pid, "vmm spawned");
        p
    }

    async fn power_off(&self, p: &VmmProcess) -> vmm::Result<()> {
        let vmm = &self.inner.vmm;
        let grace = self.inner.cfg.graceful_power_off;
        if !grace.is_zero() && vmm.power_button(p).await.is_ok() {
            let deadline = tokio::time::Instant::now() + grace;
            while tokio::time::Instant::now() < deadline {
                match vmm.info(p).await {
                    Ok(i) if i.state == VmState::Running => {}
                    _ => return Ok(()),
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        match vmm.shutdown(p).await {
            Ok(()) | Err(vmm::Error::Gone) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn hotplug(
        &self,
        p: &VmmProcess,
        info: &VmInfo,
        previous: &[PreparedDisk],
        disks: &[PreparedDisk],
        nics: &[NicSpec],
    ) -> vmm::Result<bool> {
        let vmm = &self.inner.vmm;
        let mut changed = false;
        for id in &info.disk_ids {
            let desired = disks.iter().find(|d| &d.disk.id == id);
            let replaced = desired.is_some_and(|d| {
                previous
                    .iter()
                    .find(|old| &old.disk.id == id)
                    .is_some_and(|old| old.disk != d.disk)
            });
            if desired.is_none() || replaced {
                vmm.detach_device(p, id).await?;
                info!(disk = %id, "disk detached");
                changed = true;
            }
        }
        for disk in disks {
            let replaced = previous
                .iter()
                .any(|old| old.disk.id == disk.disk.id && old.disk != disk.disk);
            if !info.disk_ids.contains(&disk.disk.id) || replaced {
                vmm.attach_disk(p, &disk.disk).await?;
                info!(disk = %disk.disk.id, "disk attached");
                changed = true;
            }
        }
        if self.inner.cfg.nic_mode == NicMode::Tap {
            for id in &info.nic_ids {
                if !nics.iter().any(|n| &n.id == id) {
                    vmm.detach_device(p, id).await?;
                    changed = true;
                }
            }
            for nic in nics {
                if !info.nic_ids.contains(&nic.id) {
                    vmm.attach_nic(p, nic).await?;
                    changed = true;
                }
            }
        }
        Ok(changed)
    }

    fn vm_spec(
        &self,
        record: &MachineRecord,
        paths: &VmPaths,
        disks: &[PreparedDisk],
        nics: &[NicSpec],
    ) -> VmSpec {
        let class = self
            .inner
            .cfg
            .classes
            .iter()
            .find(|c| c.name == record.spec.class);
        let mut oem_strings = Vec::new();
        if !record.spec.ignition_data.is_empty() {
            oem_strings
                .push(base64::engine::general_purpose::STANDARD.encode(&record.spec.ignition_data));
        }
        VmSpec {
            uuid: platform_uuid(&record.id),
            cpus: class.map_or(1, |c| c.cpu.max(1)),
            memory_bytes: class.map_or(256 << 20, |c| c.memory_bytes),
            kernel: self.inner.cfg.payload.kernel.clone(),
            cmdline: self.inner.cfg.payload.cmdline.clone(),
            disks: disks.iter().map(|d| d.disk.clone()).collect(),
            nics: nics.to_vec(),
            oem_strings,
            serial_file: paths.serial.clone(),
        }
    }

    async fn prepare_disk(
        &self,
        record: &MachineRecord,
        volume: &machine::Volume,
        paths: &VmPaths,
    ) -> anyhow::Result<PreparedDisk> {
        use anyhow::Context as _;
        if let Some(existing) = record.disks.iter().find(|d| d.name == volume.name)
            && existing.owned
            && volume.local_disk.is_some()
            && existing.disk.path.exists()
        {
            return Ok(existing.clone());
        }
        let source = self.validate_volume(volume)?;
        let previous = |path: &Path| {
            record
                .disks
                .iter()
                .find(|d| d.name == volume.name && d.disk.path == path)
        };
        let (path, format, owned) = match source {
            VolumeSource::File(path, format) => {
                if format == ImageFormat::Qcow2 {
                    let checked = path.clone();
                    tokio::task::spawn_blocking(move || vmm::check_plain_qcow2(&checked))
                        .await
                        .context("qcow2 check task")??;
                }
                (path, format, false)
            }
            VolumeSource::Local { image, size } => {
                let disks = paths.dir.join("disks");
                let name = volume.name.clone();
                // The format of a local disk is the one this runtime created it in, kept in
                // its file name (`<name>.img` raw, `<name>.qcow2`): the guest writes the bytes.
                let (target, format) = tokio::task::spawn_blocking(
                    move || -> anyhow::Result<(PathBuf, ImageFormat)> {
                        for format in [ImageFormat::Raw, ImageFormat::Qcow2] {
                            let path =
                                disks.join(format!("{name}.{}", format.local_disk_extension()));
                            if path.exists() {
                                return Ok((path, format));
                            }
                        }
                        let format = match &image {
                            Some(image) => ImageFormat::of_operator_image(image)
                                .context("read local disk image")?,
                            None => ImageFormat::Raw,
                        };
                        if format == ImageFormat::Qcow2
                            && let Some(image) = &image
                        {
                            vmm::check_plain_qcow2(image)?;
                        }
                        let dest = disks.join(format!("{name}.{}", format.local_disk_extension()));
                        let tmp = dest.with_extension("tmp");
                        let file = {
                            use std::os::unix::fs::OpenOptionsExt as _;
                            let _ = std::fs::remove_file(&tmp);
                            let file = std::fs::OpenOptions::new()
                                .write(true)
                                .create_new(true)
                                .mode(0o600)
                                .open(&tmp)
                                .context("create local disk")?;
                            if let Some(image) = &image {
                                // Into the 0600 file (fs::copy would copy the image's mode).
                                let mut from =
                                    std::fs::File::open(image).context("open local disk image")?;
                                std::io::copy(&mut from, &mut &file)
                                    .context("copy local disk image")?;
                            }
                            file
                        };
                        if format == ImageFormat::Raw && file.metadata()?.len() < size {
                            file.set_len(size).context("size local disk")?;
                        }
                        file.sync_all()?;
                        std::fs::rename(&tmp, &dest).context("place local disk")?;
                        Ok((dest, format))
                    },
                )
                .await
                .context("local disk task")??;
                (target, format, true)
            }
        };
        let id = disk_id(&volume.name, record.generation, previous(&path));
        Ok(PreparedDisk {
            name: volume.name.clone(),
            disk: DiskSpec {
                id,
                path,
                format,
                readonly: false,
            },
            owned,
        })
    }

    async fn teardown(&self, record: &MachineRecord, paths: &VmPaths) {
        let vmm = &self.inner.vmm;
        if let Some(p) = record.vmm.as_ref().filter(|p| p.is_alive()) {
            if let Ok(info) = vmm.info(p).await
                && matches!(info.state, VmState::Running | VmState::Paused)
            {
                let _ = vmm.shutdown(p).await;
            }
            let _ = vmm.delete(p).await;
            let _ = vmm.terminate(p, TERMINATE_GRACE).await;
        }
        let stray = crate::vmm::kill_processes_in(&paths.dir, TERMINATE_GRACE).await;
        if !stray.is_empty() {
            warn!(?stray, "vmm processes survived teardown");
        }
        let dir = paths.dir.clone();
        let _ = tokio::task::spawn_blocking(move || remove_dir(&dir)).await;
        if let Err(e) = self.inner.store.remove(&record.id) {
            warn!(error = %e, "remove machine state file");
        }
        self.lock_machines().remove(&record.id);
        self.inner.consoles.remove(&record.id);
        info!("machine deleted");
        self.record_event(
            record,
            "Normal",
            "Deleted",
            "Delete",
            "machine deleted".into(),
        );
    }
}
