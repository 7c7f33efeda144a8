//! Validated runtime configuration: directories, VMM binary, guest payload, machine classes.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

/// Configuration errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A `--machine-class` value is malformed.
    #[error("machine class {0:?}: expected name,cpu,memoryBytes with cpu >= 1 and memory > 0")]
    BadClass(String),
    /// Two classes share a name.
    #[error("machine class {0:?} is defined twice")]
    DuplicateClass(String),
    /// No class was configured.
    #[error("no machine classes configured: pass --machine-class or --machine-class-file")]
    NoClasses,
    /// The class file could not be read or parsed.
    #[error("machine class file {path:?}: {message}")]
    ClassFile {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A configured directory is unusable.
    #[error("{what} {path:?}")]
    Dir {
        /// Which directory.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `--tap-prefix` is too long or not `[a-z0-9-]`.
    #[error("tap prefix {0:?}: use 1-7 characters of [a-z0-9-]")]
    BadTapPrefix(String),
    /// The state directory path is too long for unix socket paths below it.
    #[error("state dir {0:?} is too long: VMM api sockets below it would exceed 107 bytes")]
    StateDirTooLong(PathBuf),
}

/// Result of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A machine class: whole vCPUs and memory bytes (IRI resources `cpu` and `memory`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MachineClass {
    /// The class name.
    pub name: String,
    /// vCPUs (whole cores).
    pub cpu: u32,
    /// Memory in bytes.
    pub memory_bytes: u64,
}

impl std::str::FromStr for MachineClass {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::BadClass(s.to_owned());
        let mut parts = s.split(',').map(str::trim);
        let (Some(name), Some(cpu), Some(mem), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let class = Self {
            name: name.to_owned(),
            cpu: cpu.parse().map_err(|_| bad())?,
            memory_bytes: mem.parse().map_err(|_| bad())?,
        };
        class.validate().map_err(|_| bad())?;
        Ok(class)
    }
}

impl MachineClass {
    fn validate(&self) -> Result<()> {
        if self.name.is_empty() || self.cpu == 0 || self.memory_bytes == 0 {
            return Err(Error::BadClass(self.name.clone()));
        }
        Ok(())
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClassFile {
    machine_classes: Vec<MachineClass>,
}

/// Read classes from a YAML file: `machineClasses: [{name, cpu, memoryBytes}]`.
pub fn read_class_file(path: &Path) -> Result<Vec<MachineClass>> {
    let err = |message: String| Error::ClassFile {
        path: path.to_owned(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let file: ClassFile = serde_yaml::from_str(&text).map_err(|e| err(e.to_string()))?;
    for class in &file.machine_classes {
        class.validate()?;
    }
    Ok(file.machine_classes)
}

/// What the guest boots when no per-machine payload is known.
#[derive(Debug, Clone)]
pub struct Payload {
    /// Kernel (PVH ELF or bzImage).
    pub kernel: PathBuf,
    /// Kernel command line.
    pub cmdline: String,
}

/// How NICs are realised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NicMode {
    /// `tap` where a tap device can be made here ([`taps_possible`]), else `none` (the default).
    Auto,
    /// NICs are refused with FailedPrecondition (no host networking is touched).
    None,
    /// The VMM creates a named tap device per NIC itself (needs root / CAP_NET_ADMIN);
    /// reported `Attached`. The tap goes away with the VMM's file descriptor: on detach, on
    /// delete, and when the VMM exits.
    Tap,
}

impl NicMode {
    /// `Auto` resolved with a start-up probe: `Tap` or `None`.
    #[must_use]
    pub fn resolve(self) -> Self {
        match self {
            Self::Auto if taps_possible() => Self::Tap,
            Self::Auto => Self::None,
            other => other,
        }
    }
}

/// CAP_NET_ADMIN's bit in `/proc/self/status`'s `CapEff`.
const CAP_NET_ADMIN: u32 = 12;

/// Whether this process can create tap devices: CAP_NET_ADMIN is effective (root has it) and
/// `/dev/net/tun` opens read-write. The VMMs the runtime spawns inherit both.
#[must_use]
pub fn taps_possible() -> bool {
    let cap_net_admin = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << CAP_NET_ADMIN) != 0);
    cap_net_admin
        && std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")
            .is_ok()
}

/// The longest `--tap-prefix`: a tap name is the prefix plus 8 hex digits and Linux allows 15
/// characters (IFNAMSIZ - 1).
pub const MAX_TAP_PREFIX: usize = 7;

/// The validated runtime configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where machine state files and per-machine directories live (canonical).
    pub state_dir: PathBuf,
    /// The VMM binary.
    pub vmm_binary: PathBuf,
    /// The guest payload.
    pub payload: Payload,
    /// Machine classes.
    pub classes: Vec<MachineClass>,
    /// Directories `local-file` volume connections may point into (canonical).
    pub volume_dirs: Vec<PathBuf>,
    /// Directories `local_disk.image` may name files in (canonical).
    pub image_dirs: Vec<PathBuf>,
    /// Size of a `local_disk` without `size_bytes`.
    pub default_local_disk_bytes: u64,
    /// NIC realisation: `Tap` or `None` (`Auto` is resolved by [`Config::validate`]).
    pub nic_mode: NicMode,
    /// Tap device names are this prefix plus 8 hex digits of a hash of machine id and NIC name.
    pub tap_prefix: String,
    /// How often machines are re-probed when nothing happens.
    pub resync_interval: Duration,
    /// Power-off: press the ACPI power button and wait this long before a hard `vm.shutdown`
    /// (zero: hard shutdown at once).
    pub graceful_power_off: Duration,
    /// Stop every VMM when the runtime shuts down (default: leave them running for adoption).
    pub stop_vms_on_exit: bool,
    /// CPU overcommit factor used for class quantities.
    pub cpu_overcommit: u32,
    /// VMMs kept started ahead of their machines (backends that can, see `Vmm::starts_ahead`).
    pub warm_vmms: usize,
    /// Where the Exec console endpoint listens (TCP; Exec URLs name this address).
    pub console_listen: std::net::SocketAddr,
}

/// Canonicalize a list of directories, failing on any that does not exist.
pub fn canonical_dirs(what: &'static str, dirs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    dirs.iter()
        .map(|d| {
            std::fs::canonicalize(d).map_err(|source| Error::Dir {
                what,
                path: d.clone(),
                source,
            })
        })
        .collect()
}

impl Config {
    /// Check the class list and the state dir; create the state dir if needed.
    pub fn validate(mut self) -> Result<Self> {
        if self.classes.is_empty() {
            return Err(Error::NoClasses);
        }
        let mut seen = std::collections::HashSet::new();
        for class in &self.classes {
            if !seen.insert(class.name.clone()) {
                return Err(Error::DuplicateClass(class.name.clone()));
            }
        }
        std::fs::create_dir_all(&self.state_dir).map_err(|source| Error::Dir {
            what: "create state dir",
            path: self.state_dir.clone(),
            source,
        })?;
        self.state_dir =
            canonical_dirs("state dir", std::slice::from_ref(&self.state_dir))?.remove(0);
        // <state>/vms/<32 hex>/api.sock must fit sun_path (108 bytes with the NUL).
        if self.state_dir.as_os_str().len() + "/vms/".len() + 32 + "/api.sock".len() > 107 {
            return Err(Error::StateDirTooLong(self.state_dir));
        }
        let prefix_ok = !self.tap_prefix.is_empty()
            && self.tap_prefix.len() <= MAX_TAP_PREFIX
            && self
                .tap_prefix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !prefix_ok {
            return Err(Error::BadTapPrefix(self.tap_prefix));
        }
        self.nic_mode = self.nic_mode.resolve();
        Ok(self)
    }
}

/// Host CPUs and memory, for class quantities.
#[derive(Debug, Clone, Copy)]
pub struct HostResources {
    /// Logical CPUs.
    pub cpus: u64,
    /// Memory in bytes (`MemTotal`).
    pub memory_bytes: u64,
}

impl HostResources {
    /// Read them from the host.
    pub fn probe() -> Self {
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get() as u64)
            .unwrap_or(1);
        let memory_bytes = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|text| {
                text.lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
            .map_or(0, |kib| kib * 1024);
        Self { cpus, memory_bytes }
    }

    /// How many machines of `class` fit: min(cpus*overcommit / class cpu, memory / class memory).
    pub fn quantity(&self, class: &MachineClass, cpu_overcommit: u32) -> i64 {
        let by_cpu = self.cpus * u64::from(cpu_overcommit.max(1)) / u64::from(class.cpu.max(1));
        let by_mem = self.memory_bytes / class.memory_bytes.max(1);
        i64::try_from(by_cpu.min(by_mem)).unwrap_or(i64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("small,1,268435456", Some(("small", 1, 268_435_456)))]
    #[case(" big , 4 , 1073741824 ", Some(("big", 4, 1_073_741_824)))]
    #[case("x,0,1", None)]
    #[case("x,1,0", None)]
    #[case("x,1", None)]
    #[case("x,1,2,3", None)]
    #[case(",1,2", None)]
    #[case("x,a,2", None)]
    fn parses_classes(#[case] input: &str, #[case] want: Option<(&str, u32, u64)>) {
        let got = input.parse::<MachineClass>().ok();
        assert_eq!(
            got.map(|c| (c.name, c.cpu, c.memory_bytes)),
            want.map(|(n, c, m)| (n.to_owned(), c, m))
        );
    }

    #[test]
    fn quantity_is_the_tighter_of_cpu_and_memory() {
        let host = HostResources {
            cpus: 8,
            memory_bytes: 16 << 30,
        };
        let class = MachineClass {
            name: "c".into(),
            cpu: 2,
            memory_bytes: 8 << 30,
        };
        assert_eq!(host.quantity(&class, 1), 2);
        let class = MachineClass {
            name: "c".into(),
            cpu: 4,
            memory_bytes: 1 << 30,
        };
        assert_eq!(host.quantity(&class, 1), 2);
        assert_eq!(host.quantity(&class, 4), 8);
    }
}
