//! Guests for the QEMU tests and `ch-runtime-bench`: the Linux initramfs (Debian's
//! busybox-static and virtio modules from `IRIKIT_GUEST_DIR`, packed here as cpio newc + gzip)
//! and the PVH stub assembled with binutils. Shared by `#[path]`, so no test-only code ships in
//! the library.
#![allow(dead_code, unreachable_pub)]

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::Command,
};

/// Modules the init script loads, in dependency order (cloud-hypervisor.md §2.2), plus the
/// input and ACPI button drivers for the power button.
pub const MODULES: &[&str] = &[
    "virtio_ring",
    "virtio",
    "virtio_pci_legacy_dev",
    "virtio_pci_modern_dev",
    "virtio_pci",
    "virtio_blk",
    "evdev",
    "button",
];

pub const INIT: &str = r#"#!/bin/sh
export PATH=/bin
busybox mount -t proc proc /proc
busybox mount -t sysfs sys /sys
busybox mount -t devtmpfs dev /dev
echo IRIKIT-GUEST-INIT
for m in MODULES; do busybox insmod /lib/modules/$m.ko; done
busybox mkdir -p /etc/acpi/PWRF
printf '#!/bin/sh\necho IRIKIT-POWER-BUTTON >/dev/console\nbusybox poweroff -f\n' > /etc/acpi/PWRF/00000080
busybox chmod +x /etc/acpi/PWRF/00000080
busybox acpid -f -l /tmp/acpid.log -c /etc/acpi &
# READY only once acpid listens on the input devices (the power button must not be missed).
while ! busybox ls -l /proc/$!/fd 2>/dev/null | busybox grep -q /dev/input; do busybox sleep 0.05; done
i=0; while [ ! -b /dev/vda ] && [ $i -lt 50 ]; do busybox sleep 0.1; i=$((i+1)); done
if [ -b /dev/vda ]; then echo "IRIKIT-DISK0: $(busybox head -c 24 /dev/vda)"; else echo "IRIKIT-DISK0: none"; fi
echo IRIKIT-GUEST-READY
busybox grep -q irikit.poweroff /proc/cmdline && busybox poweroff -f
while true; do busybox sleep 3600; done
"#;

/// A minimal `cpio -H newc` writer.
struct Cpio {
    out: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn new() -> Self {
        Self {
            out: Vec::new(),
            ino: 1,
        }
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) -> Result<(), String> {
        let too_big = |what: &str| format!("cpio: {what} of {name} exceeds 4 GiB");
        let fields = [
            self.ino,
            mode,
            0,
            0,
            if mode & 0o040_000 != 0 { 2 } else { 1 },
            0,
            u32::try_from(data.len()).map_err(|_| too_big("data"))?,
            0,
            0,
            0,
            0,
            u32::try_from(name.len() + 1).map_err(|_| too_big("name"))?,
            0,
        ];
        self.ino += 1;
        self.out.extend_from_slice(b"070701");
        for f in fields {
            self.out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
        Ok(())
    }

    fn dir(&mut self, name: &str) -> Result<(), String> {
        self.entry(name, 0o040_755, &[])
    }

    fn file(&mut self, name: &str, mode: u32, data: &[u8]) -> Result<(), String> {
        self.entry(name, 0o100_000 | mode, data)
    }

    fn symlink(&mut self, name: &str, target: &str) -> Result<(), String> {
        self.entry(name, 0o120_777, target.as_bytes())
    }

    fn finish(mut self) -> Result<Vec<u8>, String> {
        self.entry("TRAILER!!!", 0, &[])?;
        Ok(self.out)
    }
}

pub fn find_module(dir: &Path, file: &str) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if let Some(found) = find_module(&path, file) {
                return Some(found);
            }
        } else if path.file_name().is_some_and(|n| n == file) {
            return Some(path);
        }
    }
    None
}

/// Build the Linux guest's initramfs from the unpacked Debian parts in `guest_dir`
/// (`busybox`, `modules/`) into `out` (gzip-compressed cpio newc).
pub fn build_initramfs(guest_dir: &Path, out: &Path) -> Result<(), String> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("read {}: {e}", p.display()));
    let modules = guest_dir.join("modules");
    let mut cpio = Cpio::new();
    for d in [
        "bin",
        "dev",
        "etc",
        "lib",
        "lib/modules",
        "proc",
        "sys",
        "tmp",
    ] {
        cpio.dir(d)?;
    }
    cpio.file("bin/busybox", 0o755, &read(&guest_dir.join("busybox"))?)?;
    cpio.symlink("bin/sh", "busybox")?;
    for m in MODULES {
        let path = find_module(&modules, &format!("{m}.ko"))
            .ok_or_else(|| format!("module {m}.ko not in {}", modules.display()))?;
        cpio.file(&format!("lib/modules/{m}.ko"), 0o644, &read(&path)?)?;
    }
    cpio.file(
        "init",
        0o755,
        INIT.replace("MODULES", &MODULES.join(" ")).as_bytes(),
    )?;
    let archive = cpio.finish()?;
    let file = std::fs::File::create(out).map_err(|e| format!("create {}: {e}", out.display()))?;
    let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    gz.write_all(&archive)
        .and_then(|()| gz.finish().map(drop))
        .map_err(|e| format!("write {}: {e}", out.display()))
}

/// Assemble the PVH stub guest (`pvh-hello.S`, `link.ld` in `src_dir`) into `out_dir`.
pub fn assemble_stub(src_dir: &Path, out_dir: &Path) -> Result<PathBuf, String> {
    let obj = out_dir.join("pvh-hello.o");
    let elf = out_dir.join("pvh-hello.elf");
    let run = |cmd: &mut Command| {
        let status = cmd.status().map_err(|e| format!("{cmd:?}: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("{cmd:?}: {status}"))
        }
    };
    run(Command::new("as")
        .arg("--64")
        .arg("-o")
        .arg(&obj)
        .arg(src_dir.join("pvh-hello.S")))?;
    run(Command::new("ld")
        .args(["-m", "elf_x86_64", "-nostdlib", "-T"])
        .arg(src_dir.join("link.ld"))
        .arg("-o")
        .arg(&elf)
        .arg(&obj))?;
    Ok(elf)
}
