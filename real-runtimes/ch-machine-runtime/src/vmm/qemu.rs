//! The QEMU backend of [`Vmm`]: one `qemu-system-x86_64` per VM, driven over QMP.
//!
//! QEMU has no "empty VMM": CPUs, memory, kernel, command line, UUID and SMBIOS OEM strings
//! are fixed when the process starts, so [`Vmm::spawn_for`] starts QEMU with the VM's shape and
//! `-S` (status `prelaunch`, reported as [`VmState::Created`]). Disks and NICs are never on
//! the command line: `create` and `attach_*` add them over QMP (`blockdev-add` +
//! `device_add virtio-blk-pci`, `netdev_add` + `device_add virtio-net-pci`) into one of
//! [`ROOT_PORTS`] empty `pcie-root-port`s of a q35 machine with native PCIe hot-plug. A device
//! added that way sits in a slot the guest has not powered on, so `device_del` removes it at
//! once even when the guest has no driver (the PVH stub); a Linux guest takes part in the
//! unplug (pciehp, about 5 s). `boot` is `cont`.
//!
//! Power semantics match the Cloud Hypervisor backend: a guest that powers itself off makes
//! QEMU exit (no `-no-shutdown`), so the runtime sees "process gone" = stopped; a hard
//! `shutdown` is `quit` (the next power-on starts a fresh QEMU, exactly as after a guest
//! power-off under CH); `power_button` is `system_powerdown` (ACPI). Guest reboots stay
//! reboots (no `-no-reboot`), as under CH.
//!
//! Adoption after a runtime restart needs nothing QEMU-specific: the QMP socket's peer pid
//! (`SO_PEERCRED`) is checked against the recorded pid.

use std::{
    fs::File,
    hash::Hasher as _,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use serde_json::json;

use super::{
    DiskSpec, Error, ImageFormat, Launch, Launched, NicSpec, Result, Spawned, VmInfo, VmPaths,
    VmSpec, VmState, Vmm, VmmProcess, proc_start_time,
    qmp::{self, Conn},
};

/// Hot-pluggable slots per VM (disks plus NICs).
pub const ROOT_PORTS: usize = 16;
/// How long `detach_device` waits for the guest to release a device.
const UNPLUG_TIMEOUT: Duration = Duration::from_secs(20);
/// How long `spawn_for` waits for the QMP socket.
const START_TIMEOUT: Duration = Duration::from_secs(15);

impl From<qmp::Error> for Error {
    fn from(e: qmp::Error) -> Self {
        match e {
            qmp::Error::Gone => Self::Gone,
            qmp::Error::Timeout { command } => Self::Timeout(command),
            qmp::Error::Command {
                command,
                class,
                desc,
            } => Self::Refused {
                operation: command,
                status: 0,
                chain: vec![class, desc],
            },
            qmp::Error::Protocol { command, message } => {
                Self::Transport(format!("qmp {command}: {message}"))
            }
        }
    }
}

/// Which QEMU accelerator a VM gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum QemuAccel {
    /// KVM when `/dev/kvm` opens and the guest can run under it, TCG otherwise. Where the host
    /// CPU shows no `vmx`/`svm` flag (a nested, PVM-style KVM such as these CI machines), only
    /// small PVH ELF kernels (our stub guest) get KVM: stock Linux kernels crash there.
    Auto,
    /// Always `-accel kvm`.
    Kvm,
    /// Always `-accel tcg` (software emulation).
    Tcg,
}

/// The QEMU backend.
#[derive(Debug, Clone)]
pub struct Qemu {
    binary: PathBuf,
    accel: QemuAccel,
    launch: Launch,
    bios: Option<PathBuf>,
}

/// Small PVH ELF kernels (below this size) count as "stub guests" for [`QemuAccel::Auto`].
const STUB_KERNEL_MAX: u64 = 1 << 20;

/// Whether `/dev/kvm` opens read-write (KVM is usable by this process).
pub fn kvm_opens() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

fn host_has_hw_virt() -> bool {
    std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|text| {
        text.lines()
            .filter(|l| l.starts_with("flags"))
            .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"))
    })
}

fn is_small_elf(path: &Path) -> bool {
    use std::io::Read as _;
    let mut magic = [0u8; 4];
    let small = std::fs::metadata(path).is_ok_and(|m| m.len() < STUB_KERNEL_MAX);
    small
        && File::open(path)
            .and_then(|mut f| f.read_exact(&mut magic))
            .is_ok()
        && magic == *b"\x7fELF"
}

/// A QMP-safe name derived from `id` (node names are limited to 31 characters).
fn short_name(prefix: char, id: &str) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    h.write(id.as_bytes());
    format!("{prefix}{:016x}", h.finish())
}

fn node_name(device_id: &str) -> String {
    short_name('b', device_id)
}

fn netdev_name(device_id: &str) -> String {
    short_name('n', device_id)
}

/// The `blockdev-add` arguments for `disk`: its format always explicit (never probed), and
/// for qcow2 `"backing": null`, so a backing file named in the header is never opened.
fn blockdev_json(node: &str, disk: &DiskSpec) -> serde_json::Value {
    let mut blockdev = json!({
        "node-name": node,
        "driver": match disk.format { ImageFormat::Raw => "raw", ImageFormat::Qcow2 => "qcow2" },
        "read-only": disk.readonly,
        "file": { "driver": "file", "filename": disk.path, "read-only": disk.readonly },
    });
    if disk.format == ImageFormat::Qcow2 {
        blockdev["backing"] = serde_json::Value::Null;
    }
    blockdev
}

/// The file holding SMBIOS OEM string `i` (ignition) for QEMU.
fn oem_string_file(paths: &VmPaths, i: usize) -> PathBuf {
    paths.dir.join(format!("oem-string-{i}"))
}

fn root_port(i: usize) -> String {
    format!("irikit-rp{i}")
}

impl Launched for Qemu {
    fn launch_mut(&mut self) -> &mut Launch {
        &mut self.launch
    }
}

impl Qemu {
    /// A backend spawning `binary` (e.g. `qemu-system-x86_64`, looked up on `PATH`).
    pub fn new(binary: PathBuf, accel: QemuAccel) -> Self {
        let bios = Self::find_qboot(&binary);
        Self {
            binary,
            accel,
            launch: Launch::default(),
            bios,
        }
    }

    /// QEMU's `qboot.rom`, when installed: it boots `-kernel` guests much faster than SeaBIOS
    /// (under the CI machines' PVM KVM: ~0.6 s instead of ~9 s for the stub guest).
    fn find_qboot(binary: &Path) -> Option<PathBuf> {
        let mut dirs = vec![PathBuf::from("/usr/share/qemu")];
        let resolved = if binary.components().count() > 1 {
            Some(binary.to_owned())
        } else {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|d| d.join(binary))
                    .find(|p| p.is_file())
            })
        };
        if let Some(dir) = resolved
            .as_deref()
            .and_then(Path::parent)
            .and_then(Path::parent)
        {
            dirs.insert(0, dir.join("share/qemu"));
        }
        dirs.into_iter()
            .map(|d| d.join("qboot.rom"))
            .find(|p| p.is_file())
    }

    /// The accelerator a VM booting `kernel` gets.
    pub fn accel_for(&self, kernel: &Path) -> &'static str {
        match self.accel {
            QemuAccel::Kvm => "kvm",
            QemuAccel::Tcg => "tcg",
            QemuAccel::Auto => {
                if kvm_opens() && (host_has_hw_virt() || is_small_elf(kernel)) {
                    "kvm"
                } else {
                    "tcg"
                }
            }
        }
    }

    /// The QEMU command line (without the binary) for `spec`.
    pub fn args(&self, paths: &VmPaths, spec: &VmSpec) -> Vec<String> {
        let mib = spec.memory_bytes.div_ceil(1 << 20).max(16);
        let mut args: Vec<String> = vec![
            "-name".into(),
            format!("irikit-{}", spec.uuid),
            "-no-user-config".into(),
            "-nodefaults".into(),
            "-display".into(),
            "none".into(),
            "-S".into(),
            "-machine".into(),
            "q35".into(),
            "-accel".into(),
            self.accel_for(&spec.kernel).into(),
            "-m".into(),
            format!("{mib}M"),
            "-smp".into(),
            spec.cpus.max(1).to_string(),
            "-uuid".into(),
            spec.uuid.clone(),
            "-chardev".into(),
            format!(
                "socket,id=qmp,path={},server=on,wait=off",
                paths.api_socket.display()
            ),
            "-mon".into(),
            "chardev=qmp,mode=control".into(),
            "-chardev".into(),
            // A socket the runtime's console pump connects to before `cont` (`wait=off`: the
            // guest never blocks on it); the pump appends `serial.log` across power cycles.
            // Without the pump: the file, appended.
            if self.launch.serial_socket {
                format!(
                    "socket,id=serial0,path={},server=on,wait=off",
                    paths.serial_socket.display()
                )
            } else {
                format!("file,id=serial0,path={},append=on", paths.serial.display())
            },
            "-serial".into(),
            "chardev:serial0".into(),
            // Native PCIe hot-plug on the root ports (q35 defaults to ACPI hot-plug, which
            // needs the guest's ACPI to eject anything).
            "-global".into(),
            "ICH9-LPC.acpi-pci-hotplug-with-bridge-support=off".into(),
            "-kernel".into(),
            spec.kernel.display().to_string(),
            "-append".into(),
            spec.cmdline.clone(),
        ];
        if let Some(bios) = &self.bios {
            args.extend(["-bios".into(), bios.display().to_string()]);
        }
        if let Some(initrd) = &self.launch.initramfs {
            args.extend(["-initrd".into(), initrd.display().to_string()]);
        }
        for i in 0..spec.oem_strings.len() {
            // By file, never by value: the command line is world-readable in /proc and an
            // argument is limited to 128 KiB. `spawn_for` writes the files (0600).
            // Commas are doubled in QEMU option values.
            let path = oem_string_file(paths, i).display().to_string();
            args.extend([
                "-smbios".into(),
                format!("type=11,path={}", path.replace(',', ",,")),
            ]);
        }
        for i in 0..ROOT_PORTS {
            args.extend([
                "-device".into(),
                format!(
                    "pcie-root-port,id={},chassis={},bus=pcie.0,addr=0x{:x}",
                    root_port(i),
                    i + 1,
                    i + 2
                ),
            ]);
        }
        args
    }

    async fn connect(vmm: &VmmProcess) -> Result<Conn> {
        Ok(Conn::connect(&vmm.api_socket).await?)
    }

    /// Whether a user-created device `id` exists (an attach already done).
    async fn has_peripheral(conn: &mut Conn, id: &str) -> Result<bool> {
        Ok(Self::peripherals(conn).await?.iter().any(|(d, _)| d == id))
    }

    /// Ids and QOM types of the user-created devices (`/machine/peripheral`).
    async fn peripherals(conn: &mut Conn) -> Result<Vec<(String, String)>> {
        let list = conn
            .execute("qom-list", Some(json!({ "path": "/machine/peripheral" })))
            .await?;
        Ok(list
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| {
                let kind = p["type"]
                    .as_str()?
                    .strip_prefix("child<")?
                    .strip_suffix('>')?;
                Some((p["name"].as_str()?.to_owned(), kind.to_owned()))
            })
            .collect())
    }

    /// The first root port with nothing plugged in (judged by each device's `parent_bus`:
    /// `query-pci` does not show devices in slots the guest has not powered on).
    async fn free_port(conn: &mut Conn) -> Result<String> {
        let mut busy = std::collections::HashSet::new();
        for (id, kind) in Self::peripherals(conn).await? {
            if kind == "pcie-root-port" {
                continue;
            }
            let bus = conn
                .execute(
                    "qom-get",
                    Some(json!({ "path": format!("/machine/peripheral/{id}"), "property": "parent_bus" })),
                )
                .await?;
            // "/machine/peripheral/<port>/<port>"
            if let Some(port) = bus.as_str().and_then(|b| b.rsplit('/').next()) {
                busy.insert(port.to_owned());
            }
        }
        (0..ROOT_PORTS)
            .map(root_port)
            .find(|port| !busy.contains(port))
            .ok_or_else(|| Error::Refused {
                operation: "device_add",
                status: 0,
                chain: vec![format!("all {ROOT_PORTS} hot-plug slots are in use")],
            })
    }

    async fn add_disk(conn: &mut Conn, disk: &DiskSpec) -> Result<()> {
        if Self::has_peripheral(conn, &disk.id).await? {
            return Ok(());
        }
        let node = node_name(&disk.id);
        let blockdev = blockdev_json(&node, disk);
        if let Err(first) = conn.execute("blockdev-add", Some(blockdev.clone())).await {
            // A node left over from an interrupted detach: drop it and try once more.
            let _ = conn
                .execute("blockdev-del", Some(json!({ "node-name": node })))
                .await;
            if conn.execute("blockdev-add", Some(blockdev)).await.is_err() {
                return Err(first.into());
            }
        }
        let port = match Self::free_port(conn).await {
            Ok(port) => port,
            Err(e) => {
                let _ = conn
                    .execute("blockdev-del", Some(json!({ "node-name": node })))
                    .await;
                return Err(e);
            }
        };
        let device = json!({
            "driver": "virtio-blk-pci",
            "id": disk.id,
            "drive": node,
            "bus": port,
        });
        let undo = ("blockdev-del", json!({ "node-name": node }));
        Self::device_add_or_undo(conn, device, undo).await
    }

    async fn add_nic(conn: &mut Conn, nic: &NicSpec) -> Result<()> {
        if Self::has_peripheral(conn, &nic.id).await? {
            return Ok(());
        }
        let netdev = netdev_name(&nic.id);
        // A named tap device QEMU creates itself (needs root / CAP_NET_ADMIN), no bridge: the
        // same as Cloud Hypervisor's `net` with `tap`. It goes away when QEMU closes it.
        let _ = conn
            .execute("netdev_del", Some(json!({ "id": netdev })))
            .await;
        conn.execute(
            "netdev_add",
            Some(json!({
                "type": "tap",
                "id": netdev,
                "ifname": nic.tap,
                "script": "no",
                "downscript": "no",
            })),
        )
        .await?;
        let port = Self::free_port(conn).await?;
        let device = json!({
            "driver": "virtio-net-pci",
            "id": nic.id,
            "netdev": netdev,
            "mac": nic.mac,
            "bus": port,
        });
        let undo = ("netdev_del", json!({ "id": netdev }));
        Self::device_add_or_undo(conn, device, undo).await
    }

    /// `device_add` of `device`; when it fails, the `undo` command drops what it was to use
    /// (its block node or netdev).
    async fn device_add_or_undo(
        conn: &mut Conn,
        device: serde_json::Value,
        undo: (&'static str, serde_json::Value),
    ) -> Result<()> {
        if let Err(e) = conn.execute("device_add", Some(device)).await {
            let _ = conn.execute(undo.0, Some(undo.1)).await;
            return Err(e.into());
        }
        Ok(())
    }

    /// `device_del`, then wait for `DEVICE_DELETED` (polling `qom-list` too), then drop the
    /// device's block node or netdev.
    async fn remove_device(conn: &mut Conn, id: &str) -> Result<()> {
        let present = |list: &[(String, String)]| list.iter().any(|(d, _)| d == id);
        if present(&Self::peripherals(conn).await?) {
            match conn.execute("device_del", Some(json!({ "id": id }))).await {
                Ok(_) => {}
                // Already being unplugged (an earlier attempt timed out): keep waiting.
                Err(qmp::Error::Command { ref desc, .. })
                    if desc.contains("in the process of unplug") || desc.contains("already") => {}
                Err(e) => return Err(e.into()),
            }
            let deadline = Instant::now() + UNPLUG_TIMEOUT;
            loop {
                let event = conn
                    .wait_event(
                        "DEVICE_DELETED",
                        |data| data["device"] == id,
                        Duration::from_millis(250),
                    )
                    .await?;
                if event.is_some() || !present(&Self::peripherals(conn).await?) {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(Error::Timeout("device_del"));
                }
            }
        }
        let _ = conn
            .execute("blockdev-del", Some(json!({ "node-name": node_name(id) })))
            .await;
        let _ = conn
            .execute("netdev_del", Some(json!({ "id": netdev_name(id) })))
            .await;
        Ok(())
    }

    /// `quit`, wait for the process to exit (SIGKILL after `grace`), remove the socket.
    async fn quit(vmm: &VmmProcess, grace: Duration) {
        if vmm.is_alive() {
            if let Ok(mut conn) = Self::connect(vmm).await {
                let _ = conn.execute("quit", None).await;
                // QEMU announces SHUTDOWN and closes the socket as it exits.
                let _ = conn.wait_event("SHUTDOWN", |_| true, grace).await;
            }
            if !vmm.wait_exit(grace).await {
                vmm.kill();
                vmm.wait_exit(Duration::from_secs(5)).await;
            }
        }
        let _ = std::fs::remove_file(&vmm.api_socket);
    }

    fn log_tail(path: &Path) -> String {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| !l.contains("host doesn't support requested feature"))
            .collect();
        lines[lines.len().saturating_sub(3)..].join(" / ")
    }
}

#[tonic::async_trait]
impl Vmm for Qemu {
    fn name(&self) -> &'static str {
        "qemu"
    }

    fn max_devices(&self) -> usize {
        ROOT_PORTS
    }

    async fn spawn(&self, paths: &VmPaths) -> Result<Spawned> {
        Err(Error::Spawn {
            binary: self.binary.clone(),
            source: std::io::Error::other(format!(
                "qemu needs the VM's cpus, memory and kernel at start: use spawn_for ({})",
                paths.dir.display()
            )),
        })
    }

    async fn spawn_for(&self, paths: &VmPaths, spec: &VmSpec) -> Result<Spawned> {
        let _ = std::fs::remove_file(&paths.api_socket);
        let _ = std::fs::remove_file(&paths.serial_socket);
        let spawn_error = |source| Error::Spawn {
            binary: self.binary.clone(),
            source,
        };
        for (i, oem) in spec.oem_strings.iter().enumerate() {
            let path = oem_string_file(paths, i);
            super::private_file(&path)
                .and_then(|()| std::fs::write(&path, oem))
                .map_err(spawn_error)?;
        }
        super::private_file(&paths.log).map_err(spawn_error)?;
        super::private_file(&paths.serial).map_err(spawn_error)?;
        let log = File::create(&paths.log).map_err(spawn_error)?;
        let log_err = log.try_clone().map_err(spawn_error)?;
        let mut cmd = tokio::process::Command::new(&self.binary);
        cmd.args(self.args(paths, spec))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            // Own process group: a Ctrl-C meant for the runtime does not reach the VMs.
            .process_group(0)
            .kill_on_drop(false);
        let child = cmd.spawn().map_err(spawn_error)?;
        let pid = child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .ok_or_else(|| Error::NoSocket(paths.api_socket.clone()))?;
        let process = VmmProcess {
            pid,
            start_time: proc_start_time(pid).unwrap_or_default(),
            api_socket: paths.api_socket.clone(),
        };
        let mut spawned = Spawned { process, child };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if spawned.process.api_socket.exists()
                && Conn::connect(&spawned.process.api_socket).await.is_ok()
            {
                return Ok(spawned);
            }
            let exited = matches!(spawned.child.try_wait(), Ok(Some(_)));
            if exited || Instant::now() >= deadline {
                let _ = spawned.child.start_kill();
                let _ = spawned.child.wait().await;
                let _ = std::fs::remove_file(&paths.api_socket);
                return Err(Error::Spawn {
                    binary: self.binary.clone(),
                    source: std::io::Error::other(format!(
                        "qemu did not open its QMP socket: {}",
                        Self::log_tail(&paths.log)
                    )),
                });
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    async fn ping(&self, vmm: &VmmProcess) -> Result<Option<i64>> {
        let mut conn = Self::connect(vmm).await?;
        conn.execute("query-status", None).await?;
        Ok(conn.peer_pid().map(i64::from))
    }

    async fn create(&self, vmm: &VmmProcess, spec: &VmSpec) -> Result<()> {
        let mut conn = Self::connect(vmm).await?;
        for disk in &spec.disks {
            Self::add_disk(&mut conn, disk).await?;
        }
        for nic in &spec.nics {
            Self::add_nic(&mut conn, nic).await?;
        }
        Ok(())
    }

    async fn boot(&self, vmm: &VmmProcess) -> Result<()> {
        let mut conn = Self::connect(vmm).await?;
        conn.execute("cont", None).await?;
        Ok(())
    }

    async fn info(&self, vmm: &VmmProcess) -> Result<VmInfo> {
        let mut conn = Self::connect(vmm).await?;
        let status = conn.execute("query-status", None).await?;
        let state = match status["status"].as_str().unwrap_or_default() {
            "running" => VmState::Running,
            "prelaunch" => VmState::Created,
            "shutdown" | "internal-error" | "guest-panicked" => VmState::Shutdown,
            // paused, suspended, io-error, watchdog, debug, migration states ...
            _ => VmState::Paused,
        };
        let devices = Self::peripherals(&mut conn).await?;
        let of_kind = |kind: &str| {
            devices
                .iter()
                .filter(|(_, k)| k == kind)
                .map(|(id, _)| id.clone())
                .collect()
        };
        Ok(VmInfo {
            state,
            disk_ids: of_kind("virtio-blk-pci"),
            nic_ids: of_kind("virtio-net-pci"),
        })
    }

    async fn shutdown(&self, vmm: &VmmProcess) -> Result<()> {
        // A hard stop ends the process: the next power-on starts a fresh QEMU, as after a
        // guest-initiated power-off (QEMU and CH both exit then).
        Self::quit(vmm, Duration::from_secs(10)).await;
        Ok(())
    }

    async fn power_button(&self, vmm: &VmmProcess) -> Result<()> {
        let mut conn = Self::connect(vmm).await?;
        conn.execute("system_powerdown", None).await?;
        Ok(())
    }

    async fn delete(&self, vmm: &VmmProcess) -> Result<()> {
        // Drop every device so that `create` can lay the VM out again. Only reached before
        // the first boot (prelaunch), where nothing waits for the guest.
        let mut conn = Self::connect(vmm).await?;
        let devices = Self::peripherals(&mut conn).await?;
        for (id, kind) in devices {
            if kind == "virtio-blk-pci" || kind == "virtio-net-pci" {
                Self::remove_device(&mut conn, &id).await?;
            }
        }
        Ok(())
    }

    async fn attach_disk(&self, vmm: &VmmProcess, disk: &DiskSpec) -> Result<()> {
        let mut conn = Self::connect(vmm).await?;
        Self::add_disk(&mut conn, disk).await
    }

    async fn attach_nic(&self, vmm: &VmmProcess, nic: &NicSpec) -> Result<()> {
        let mut conn = Self::connect(vmm).await?;
        Self::add_nic(&mut conn, nic).await
    }

    async fn detach_device(&self, vmm: &VmmProcess, id: &str) -> Result<()> {
        let mut conn = Self::connect(vmm).await?;
        Self::remove_device(&mut conn, id).await
    }

    async fn terminate(&self, vmm: &VmmProcess, grace: Duration) -> Result<()> {
        Self::quit(vmm, grace).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> VmSpec {
        VmSpec {
            uuid: "01234567-89ab-cdef-0123-456789abcdef".into(),
            cpus: 2,
            memory_bytes: 100 << 20,
            kernel: "/k/vmlinuz".into(),
            cmdline: "console=ttyS0 quiet".into(),
            disks: vec![],
            nics: vec![],
            oem_strings: vec!["aWduaXRpb24=".into()],
            serial_file: "/s".into(),
        }
    }

    #[test]
    fn args_carry_the_vm_shape_and_no_disks() {
        let qemu = Qemu::new("/nonexistent/qemu".into(), QemuAccel::Tcg)
            .with_initramfs(Some("/k/initrd".into()));
        let paths = VmPaths::new(Path::new("/state/vms/x"));
        let args = qemu.args(&paths, &spec()).join(" ");
        for want in [
            "-S",
            "-machine q35",
            "-accel tcg",
            "-m 100M",
            "-smp 2",
            "-uuid 01234567-89ab-cdef-0123-456789abcdef",
            "-kernel /k/vmlinuz",
            "-append console=ttyS0 quiet",
            "-initrd /k/initrd",
            "-smbios type=11,path=/state/vms/x/oem-string-0",
            "path=/state/vms/x/api.sock,server=on,wait=off",
            "socket,id=serial0,path=/state/vms/x/serial.sock,server=on,wait=off",
            "-serial chardev:serial0",
            "ICH9-LPC.acpi-pci-hotplug-with-bridge-support=off",
            "pcie-root-port,id=irikit-rp15,chassis=16",
        ] {
            assert!(args.contains(want), "{want:?} missing in {args}");
        }
        assert!(
            !args.contains("-no-shutdown"),
            "guest power-off must end QEMU"
        );
        assert!(!args.contains("-drive"), "disks are added over QMP");
        // Without the console pump (a bare baseline): QEMU appends the serial file itself.
        let bare = Qemu::new("/nonexistent/qemu".into(), QemuAccel::Tcg)
            .with_serial_socket(false)
            .args(&paths, &spec())
            .join(" ");
        assert!(
            bare.contains("file,id=serial0,path=/state/vms/x/serial.log,append=on")
                && !bare.contains("serial.sock"),
            "{bare}"
        );
        assert!(
            !args.contains("aWduaXRpb24="),
            "ignition on the command line"
        );
    }

    #[test]
    fn blockdev_format_is_explicit_and_qcow2_has_no_backing() {
        let mut disk = DiskSpec {
            id: "d".into(),
            path: "/v/d".into(),
            format: ImageFormat::Qcow2,
            readonly: false,
        };
        let qcow2 = blockdev_json("b1", &disk);
        assert_eq!(qcow2["driver"], "qcow2");
        assert!(qcow2.get("backing").is_some_and(serde_json::Value::is_null));
        disk.format = ImageFormat::Raw;
        let raw = blockdev_json("b1", &disk);
        assert_eq!(raw["driver"], "raw");
        assert_eq!(raw["file"]["driver"], "file");
    }

    #[test]
    fn qmp_names_are_short_and_stable() {
        let name = node_name("vol-a-very-long-volume-name-that-goes-on-and-on-and-on");
        assert!(name.len() <= 31);
        assert_eq!(
            name,
            node_name("vol-a-very-long-volume-name-that-goes-on-and-on-and-on")
        );
        assert_ne!(node_name("vol-a"), netdev_name("vol-a"));
    }

    #[test]
    fn accel_is_explicit_when_configured() {
        let kvm = Qemu::new("qemu".into(), QemuAccel::Kvm);
        assert_eq!(kvm.accel_for(Path::new("/nope")), "kvm");
        let tcg = Qemu::new("qemu".into(), QemuAccel::Tcg);
        assert_eq!(tcg.accel_for(Path::new("/nope")), "tcg");
    }
}
