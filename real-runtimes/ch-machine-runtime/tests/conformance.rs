//! The iri-conformance suite against `ch-machine-runtime` as a child process: every machine case
//! of the `core` and `go-poollet` profiles on `ch-sim`, on real QEMU VMs booting the PVH stub
//! (`--vmm qemu`, KVM where `/dev/kvm` opens, else TCG; a `qemu` component test) and on a real
//! Cloud Hypervisor where `IRIKIT_CH_BIN` names one; then the lifecycle level (irikit's store,
//! schedulers and poollets driving the same child-process runtimes, with file-volume-runtime
//! volumes attached to the VMs). The runtimes come from [`common::Runtimes`].
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../shared/conformance_check.rs"]
mod check;
mod common;

use std::time::Duration;

use check::Suite;
use common::{Backend, Runtimes, Vmm};
use iri_conformance::{
    Service, Targets,
    runner::{LevelFilter, ProfileFilter},
};

/// The stub VMs are tiny: with 2 host cores and no overcommit the class fits twice, and the
/// lifecycle level runs several Machines at once.
const OVERCOMMIT: &str = "16";

fn targets(runtimes: &Runtimes) -> Targets {
    Targets::connect(Some(&runtimes.machine), Some(&runtimes.volume), None)
}

/// Connection volumes in the suite use driver `ceph`: attaching one needs a Ceph cluster, and
/// the runtime attaches only `local-file` connections (any other driver is InvalidArgument).
/// The `local-file` path is covered by `contract.rs` and `qemu.rs` with the volume runtime.
const CEPH_CASES: [(&str, &str); 3] = [
    (
        "^machine\\.volume\\.attach_connection$",
        "a ceph connection needs a Ceph cluster; only local-file attaches",
    ),
    (
        "^machine\\.volume\\.update_in_spec$",
        "updates a ceph connection volume (needs a Ceph cluster)",
    ),
    (
        "^machine\\.volume\\.update_idempotent$",
        "updates a ceph connection volume (needs a Ceph cluster)",
    ),
];

/// irikit's reservation extension (issue 15) holds the host's real cpu and memory, which the
/// other cases' machines (left until the run's cleanup) have filled by the time the exclusive
/// reservation cases run: those run against a fresh runtime in
/// `reservation_cases_pass_on_ch_sim`.
const RESERVATION_CASES: [(&str, &str); 1] = [(
    "^reservation\\.",
    "run against a fresh runtime in reservation_cases_pass_on_ch_sim (the other cases' machines fill the host's cpu)",
)];

/// The suite's NIC cases wait for ATTACHED with a handle: that needs `--nic-mode tap`.
const NIC_CASES: [(&str, &str); 2] = [
    (
        "^machine\\.nic\\.",
        "NICs attach only with --nic-mode tap (root and /dev/net/tun)",
    ),
    (
        "^machine\\.create\\.with_volume_and_nic$",
        "NICs attach only with --nic-mode tap (root and /dev/net/tun)",
    ),
];

/// The Exec console cases need a guest that echoes its serial input (the PVH stub with a
/// cmdline starting with `e`): on QEMU they run in `exec_cases_pass_on_qemu` with that guest
/// under TCG (see there); on a real Cloud Hypervisor, which has no 8259 PIC for the stub's
/// echo, they do not run.
const EXEC_CASES: [(&str, &str); 1] = [(
    "^machine\\.exec\\.console\\.",
    "run in exec_cases_pass_on_qemu, against the echoing stub",
)];

/// Whether QEMU can create tap devices here (root and /dev/net/tun opens).
fn taps_possible() -> bool {
    rustix::process::geteuid().is_root()
        && std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")
            .is_ok()
}

fn suite(runtimes: &Runtimes, profile: ProfileFilter) -> Suite {
    let mut suite = Suite::new(Service::Machine, profile);
    suite.not_applicable.extend(CEPH_CASES);
    suite.not_applicable.extend(RESERVATION_CASES);
    // Exec serves the VM's serial port: the console cases must run, never skip.
    suite.params.require_exec = true;
    suite.params.machine_class = Some(common::CLASS.to_owned());
    suite.params.image = runtimes.image.display().to_string();
    // Local disks are sparse files; keep them small all the same.
    suite.params.volume_size = 64 << 20;
    suite.params.expand_size = 128 << 20;
    suite
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn machine_cases_pass_on_ch_sim() {
    // ch-sim accepts `net` devices without touching the host: NICs attach as taps. Its
    // emulated stub echoes serial input (cmdline `echo`), at no cost: the Exec cases run here.
    let runtimes = Runtimes::start_with_cmdline(
        Vmm::CloudHypervisor(Backend::Sim),
        "echo",
        &["--nic-mode", "tap", "--cpu-overcommit", OVERCOMMIT],
    )
    .await
    .unwrap();
    let targets = targets(&runtimes);
    for profile in [ProfileFilter::Core, ProfileFilter::GoPoollet] {
        let mut suite = suite(&runtimes, profile);
        suite.params.state_timeout = Duration::from_secs(30);
        suite.check(&targets).await;
    }
    lifecycle(&runtimes, Duration::from_secs(30)).await;
}

/// The `reservation.*` cases against a fresh runtime on ch-sim: holds against the host's real
/// class quantities, cpu, memory and the state directory's free space (issue 15).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservation_cases_pass_on_ch_sim() {
    let runtimes = Runtimes::start(
        Vmm::CloudHypervisor(Backend::Sim),
        &["--cpu-overcommit", OVERCOMMIT],
    )
    .await
    .unwrap();
    let mut suite = Suite::new(Service::Machine, ProfileFilter::Core);
    suite.focus = vec!["^reservation\\."];
    suite.params.machine_class = Some(common::CLASS.to_owned());
    suite.params.image = runtimes.image.display().to_string();
    let report = suite.check(&targets(&runtimes)).await;
    assert_eq!(report.results.len(), 7, "the seven reservation cases ran");
}

/// The same suite against a real Cloud Hypervisor booting the PVH stub, where `IRIKIT_CH_BIN`
/// names one and /dev/kvm opens (otherwise one `skip:` line).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn machine_cases_pass_on_real_ch() {
    let Some(backend) = Backend::real_ch() else {
        return;
    };
    let taps = taps_possible();
    let runtimes = Runtimes::start(Vmm::CloudHypervisor(backend), &vm_args(taps))
        .await
        .unwrap();
    real_vm_cases(&runtimes, taps, Duration::from_secs(30), |_| {}).await;
    runtimes
        .env
        .wait_no_vmm("no cloud-hypervisor left", Duration::from_secs(30))
        .await;
}

/// The runtime's arguments for real VMs: `--nic-mode tap` where `taps`, else `none`.
fn vm_args(taps: bool) -> [&'static str; 4] {
    let nic_mode = if taps { "tap" } else { "none" };
    ["--nic-mode", nic_mode, "--cpu-overcommit", OVERCOMMIT]
}

/// Every machine case of the `core` and `go-poollet` profiles, then the lifecycle level, on
/// real VMs: the Exec console cases deselected (their VMs boot the halting stub), the NIC cases
/// too without `taps`; `tune` adjusts each suite.
async fn real_vm_cases(
    runtimes: &Runtimes,
    taps: bool,
    state_timeout: Duration,
    tune: impl Fn(&mut Suite),
) {
    let targets = targets(runtimes);
    for profile in [ProfileFilter::Core, ProfileFilter::GoPoollet] {
        let mut suite = suite(runtimes, profile);
        suite.not_applicable.extend(EXEC_CASES);
        if !taps {
            suite.not_applicable.extend(NIC_CASES);
        }
        suite.params.state_timeout = state_timeout;
        tune(&mut suite);
        suite.check(&targets).await;
    }
    lifecycle(runtimes, state_timeout).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn machine_cases_pass_on_qemu() {
    let Some(binary) = common::qemu_binary() else {
        return;
    };
    let accel = if common::kvm_opens() { "kvm" } else { "tcg" };
    let taps = taps_possible();
    let args = vm_args(taps);
    let Some(runtimes) = Runtimes::start(Vmm::Qemu { binary, accel }, &args).await else {
        return;
    };
    eprintln!("qemu conformance under {accel}, --nic-mode {}", args[1]);
    // Real VMs: a QEMU start is ~0.5 s under KVM, seconds under TCG on a loaded host.
    real_vm_cases(&runtimes, taps, Duration::from_secs(90), |suite| {
        suite.case_timeout = Duration::from_secs(240);
        suite.parallel = 4;
    })
    .await;
    // Every machine the suite created was deleted: no QEMU of this stack is left.
    runtimes
        .env
        .wait_no_vmm("no qemu left", Duration::from_secs(30))
        .await;
}

/// The Exec console cases on QEMU VMs booting the stub that echoes its serial input (cmdline
/// `echo`): the URL is served, bytes written come back, a second console is refused, a token
/// works once. Under TCG: the echoing stub is interrupt-driven (it idles in `hlt`), and the
/// PVM-backed KVM of these hosts cannot emulate its `iret` (KVM internal error).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_cases_pass_on_qemu() {
    let Some(binary) = common::qemu_binary() else {
        return;
    };
    let accel = "tcg";
    let Some(runtimes) = Runtimes::start_with_cmdline(
        Vmm::Qemu { binary, accel },
        "echo",
        &["--cpu-overcommit", OVERCOMMIT],
    )
    .await
    else {
        return;
    };
    let mut suite = suite(&runtimes, ProfileFilter::All);
    suite.focus = vec!["^machine\\.exec\\.console\\."];
    suite.params.state_timeout = Duration::from_secs(90);
    suite.case_timeout = Duration::from_secs(240);
    suite.parallel = 1;
    let report = suite.check(&targets(&runtimes)).await;
    assert_eq!(report.count("passed"), 4, "the four exec console cases");
    runtimes
        .env
        .wait_no_vmm("no qemu left", Duration::from_secs(30))
        .await;
}

/// The lifecycle level against `runtimes`: pool announcement, scheduling, creation, status,
/// power, volumes from file-volume-runtime attached and resized, delete, unreachable runtime.
async fn lifecycle(runtimes: &Runtimes, state_timeout: Duration) {
    let mut suite = Suite::new(Service::Machine, ProfileFilter::All);
    suite.level = LevelFilter::Lifecycle;
    suite.params.state_timeout = state_timeout;
    suite.case_timeout = state_timeout * 4;
    suite.check(&targets(runtimes)).await;
}
