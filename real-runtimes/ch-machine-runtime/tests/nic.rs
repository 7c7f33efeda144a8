//! NICs with the default `--nic-mode auto` (tap wherever this process can make a tap: root or
//! CAP_NET_ADMIN, as in CI): attach at create, hot-plug, detach, kill -9 adoption and delete,
//! on ch-sim and on real QEMU. Each run uses its own `--tap-prefix`, so parallel runs never
//! share a tap name, and after each test no host network device with that prefix is left
//! (`/sys/class/net`).
//!
//! QEMU creates the tap devices on the host, so there the taps are counted in `/sys/class/net`.
//! ch-sim creates no host devices; there the taps are the ones the runtime told the VMM to
//! create (`vm.info`'s `config.net[].tap`).
//!
//! Without CAP_NET_ADMIN the tests print one `skip:` line unless `IRIKIT_REQUIRE` names `tap`
//! (the refusal itself is tested in `contract.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Backend, Env};
use iri_spec::machine::v1alpha1::{self as machine, MachineState};

/// The tap devices of machine `id` that exist: host devices for QEMU, the VMM's `net` taps
/// for ch-sim.
async fn taps(env: &Env, prefix: &str, id: &str) -> Vec<String> {
    if env.qemu.is_some() {
        return common::net_devices(prefix);
    }
    let info = env.vm_info(id).await;
    let mut names: Vec<String> = info["config"]["net"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n["tap"].as_str().map(str::to_owned))
        .collect();
    names.sort();
    names
}

async fn wait_taps(env: &Env, prefix: &str, id: &str, count: usize) -> Vec<String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let now = taps(env, prefix, id).await;
        if now.len() == count {
            assert!(
                now.iter()
                    .all(|t| t.len() == prefix.len() + 8 && t.starts_with(prefix)),
                "{now:?}"
            );
            return now;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "want {count} taps for {id}, have {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn handle(m: &machine::Machine, name: &str) -> String {
    m.status
        .as_ref()
        .unwrap()
        .network_interfaces
        .iter()
        .find(|n| n.name == name)
        .map(|n| n.handle.clone())
        .unwrap()
}

async fn nic_lifecycle(env: Env) {
    if !ch_machine_runtime::config::taps_possible() {
        common::skip(
            "tap",
            "no CAP_NET_ADMIN or /dev/net/tun: the runtime refuses NICs",
        );
        return;
    }
    let prefix = common::unique_tap_prefix();
    assert_eq!(common::net_devices(&prefix), Vec::<String>::new());
    let extra = ["--tap-prefix", prefix.as_str()];
    let (mut runtime, mut client) = env.start_client(&extra).await;

    // Attached at create, no --nic-mode given.
    let mut spec = common::spec(vec![]);
    spec.network_interfaces = vec![common::nic("eth0")];
    let id = common::create(&mut client, spec).await;
    common::wait_state(&mut client, &id, MachineState::MachineRunning).await;
    common::wait_for_nic(&mut client, &id, "eth0", true).await;
    let first = wait_taps(&env, &prefix, &id, 1).await;

    // Hot-plug a second NIC, then detach the first: its tap goes.
    common::attach_nic(&mut client, &id, "eth1").await;
    let m = common::wait_for_nic(&mut client, &id, "eth1", true).await;
    let eth1 = handle(&m, "eth1");
    assert_ne!(eth1, handle(&m, "eth0"), "two NICs share a MAC");
    let both = wait_taps(&env, &prefix, &id, 2).await;
    common::detach_nic(&mut client, &id, "eth0").await;
    let left = wait_taps(&env, &prefix, &id, 1).await;
    assert!(!left.contains(&first[0]), "the detached NIC's tap is left");
    assert!(both.contains(&left[0]));
    // The status drops the detached NIC at the reconcile after its tap went.
    let nics = common::wait_machine(
        &client,
        &id,
        "the detached NIC to leave the status",
        Duration::from_secs(30),
        |m| {
            let nics = &m.status.as_ref()?.network_interfaces;
            (nics.len() == 1).then(|| nics.clone())
        },
    )
    .await;
    assert_eq!(nics[0].name, "eth1");

    // kill -9 the runtime: the VMM and its tap stay; a new runtime adopts them.
    let pid = env.recorded_pid(&id).unwrap();
    let (mut runtime, mut client) = env
        .kill9_and_restart(&mut runtime, client, &[pid], &extra)
        .await;
    let m = common::wait_for_nic(&mut client, &id, "eth1", true).await;
    assert_eq!(handle(&m, "eth1"), eth1);
    assert_eq!(env.recorded_pid(&id), Some(pid), "the VMM was not adopted");
    assert_eq!(wait_taps(&env, &prefix, &id, 1).await, left);
    // The adopted VMM still hot-plugs and unplugs.
    common::attach_nic(&mut client, &id, "eth2").await;
    common::wait_for_nic(&mut client, &id, "eth2", true).await;
    wait_taps(&env, &prefix, &id, 2).await;
    common::detach_nic(&mut client, &id, "eth2").await;
    assert_eq!(wait_taps(&env, &prefix, &id, 1).await, left);

    // Delete: the VMM and every tap go.
    common::delete_and_wait(&mut client, &id).await;
    assert!(!common::alive(pid), "the VMM survived delete");
    common::eventually("no tap device left", Duration::from_secs(10), || {
        let left = common::net_devices(&prefix);
        async move { left.is_empty().then_some(()) }
    })
    .await;
    runtime.terminate().await;
    assert_eq!(common::net_devices(&prefix), Vec::<String>::new());
}

#[tokio::test]
async fn nics_on_ch_sim() {
    let env = Env::new(Backend::Sim, "halt").unwrap();
    nic_lifecycle(env).await;
}

#[tokio::test]
async fn nics_on_qemu() {
    let Some((env, _reaper)) = common::qemu_env("halt") else {
        return;
    };
    nic_lifecycle(env).await;
}
