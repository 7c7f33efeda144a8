//! VMMs started ahead of their machines (`--warm-vmms`), on ch-sim: a new machine boots in a
//! VMM that was already running, another is started behind it, and neither a graceful stop nor
//! a kill -9 leaves one behind.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{path::Path, time::Duration};

use common::{Backend, Env, Proc, on_ch_sim_and_real_ch};
use iri_spec::machine::v1alpha1::MachineState;

/// Start the runtime with `warm` VMMs ahead, and connect a client.
async fn start(env: &Env, warm: usize) -> (Proc, common::Client) {
    env.start_client(&["--warm-vmms", &warm.to_string()]).await
}

async fn warm_ready(env: &Env, n: usize) -> Vec<(i32, std::path::PathBuf)> {
    common::eventually("warm vmms ready", Duration::from_secs(20), || async {
        let warm = env.warm_vmms();
        (warm.len() == n
            && warm
                .iter()
                .all(|(pid, dir)| dir.join("api.sock").exists() && pid_file(dir) == Some(*pid)))
        .then_some(warm)
    })
    .await
}

fn pid_file(dir: &Path) -> Option<i32> {
    std::fs::read_to_string(dir.join("vmm.pid"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

async fn boots_in_a_vmm_started_ahead(backend: Backend) {
    let Some(env) = Env::new(backend, "halt") else {
        return;
    };
    let (mut runtime, mut client) = start(&env, 1).await;
    let [(warm_pid, warm_dir)] = warm_ready(&env, 1).await.try_into().unwrap();
    assert_eq!(
        pid_file(&warm_dir),
        Some(warm_pid),
        "pid file of the warm vmm"
    );

    let id = common::create_running(&mut client, vec![]).await;
    let machine_dir = env.state_dir.join("vms").join(&id);
    assert!(!warm_dir.exists(), "the warm dir became the machine's");
    assert_eq!(
        pid_file(&machine_dir),
        Some(warm_pid),
        "the machine's dir carries its pid file"
    );
    assert_eq!(
        env.recorded_pid(&id),
        Some(warm_pid),
        "the machine runs in the warm vmm"
    );
    common::eventually("guest banner", Duration::from_secs(20), || async {
        env.serial_log(&id).contains("PVH-HELLO").then_some(())
    })
    .await;
    assert!(
        std::fs::read_to_string(machine_dir.join("vmm.log")).is_ok_and(|log| !log.is_empty()),
        "the vmm keeps logging into its moved directory"
    );
    // Another one is started behind it.
    let [(next_pid, _)] = warm_ready(&env, 1).await.try_into().unwrap();
    assert_ne!(next_pid, warm_pid);
    assert_eq!(env.vmm_processes(), vec![warm_pid]);

    // Delete stops the machine's VMM; a graceful stop stops the warm one and removes its dir.
    common::delete_and_wait(&mut client, &id).await;
    assert!(
        !common::alive(warm_pid),
        "the machine's vmm stopped at delete"
    );
    assert!(runtime.terminate().await.success());
    assert!(
        !common::alive(next_pid),
        "the warm vmm stopped with the runtime"
    );
    assert_eq!(
        common::processes_mentioning(&env.state_dir.display().to_string()),
        Vec::<i32>::new()
    );
    let left: Vec<_> = std::fs::read_dir(env.state_dir.join("vms"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "dirs left: {left:?}");
}

async fn kill9_then_restart(backend: Backend) {
    let Some(env) = Env::new(backend, "halt") else {
        return;
    };
    let (mut runtime, mut client) = start(&env, 1).await;
    warm_ready(&env, 1).await;
    let id = common::create_running(&mut client, vec![]).await;
    let machine_pid = env.recorded_pid(&id).unwrap();
    let [(idle_pid, idle_dir)] = warm_ready(&env, 1).await.try_into().unwrap();

    runtime.kill9();
    assert!(common::alive(machine_pid) && common::alive(idle_pid));

    // Restarted without warm VMMs: the idle one is an orphan, the machine's is adopted.
    let (_runtime, mut client) = start(&env, 0).await;
    let m = common::wait_state(&mut client, &id, MachineState::MachineRunning).await;
    assert_eq!(m.metadata.unwrap().id, id);
    common::eventually("idle warm vmm stopped", Duration::from_secs(20), || async {
        (!common::alive(idle_pid)).then_some(())
    })
    .await;
    assert!(!idle_dir.exists(), "the idle warm dir was removed");
    assert!(
        common::alive(machine_pid),
        "the machine's vmm was adopted, not killed"
    );
    assert_eq!(env.recorded_pid(&id), Some(machine_pid));
    assert_eq!(env.vmm_processes(), vec![machine_pid]);
}

on_ch_sim_and_real_ch!(boots_in_a_vmm_started_ahead:
    a_new_machine_boots_in_a_vmm_started_ahead_on_ch_sim,
    a_new_machine_boots_in_a_vmm_started_ahead_on_real_ch);
on_ch_sim_and_real_ch!(kill9_then_restart:
    kill9_then_restart_adopts_the_machine_and_stops_the_idle_warm_vmm_on_ch_sim,
    kill9_then_restart_adopts_the_machine_and_stops_the_idle_warm_vmm_on_real_ch);

/// A runtime killed after a machine took a warm VMM but before the VMM's pid reached the
/// machine's record: the restarted runtime finds the VMM through the pid file in the machine's
/// directory (its command line names the old `.warm-` directory), and stops it before it
/// starts a new one.
#[tokio::test]
async fn a_taken_vmm_whose_pid_never_reached_the_record_is_found_by_its_pid_file() {
    let Some(env) = Env::new(Backend::Sim, "halt") else {
        return;
    };
    let (mut runtime, mut client) = start(&env, 1).await;
    warm_ready(&env, 1).await;
    let id = common::create_running(&mut client, vec![]).await;
    let taken_pid = env.recorded_pid(&id).unwrap();
    runtime.kill9();
    // Forget the pid and the boot, as if the kill had come before the write of either.
    let records = env.state_dir.join("machines");
    for name in [format!("{id}.json"), format!("{id}.json.vol")] {
        let path = records.join(name);
        if let Ok(text) = std::fs::read_to_string(&path) {
            let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
            v["vmm"] = serde_json::Value::Null;
            v["want_boot"] = serde_json::Value::Bool(true);
            std::fs::write(&path, v.to_string()).unwrap();
        }
    }
    assert!(env.recorded_pid(&id).is_none());

    let (_runtime, mut client) = start(&env, 0).await;
    common::eventually(
        "the unknown vmm stopped",
        Duration::from_secs(20),
        || async { (!common::alive(taken_pid)).then_some(()) },
    )
    .await;
    let m = common::wait_state(&mut client, &id, MachineState::MachineRunning).await;
    assert_eq!(m.metadata.unwrap().id, id);
    let new_pid = env.recorded_pid(&id).unwrap();
    assert_ne!(new_pid, taken_pid, "a new vmm runs the machine");
    assert_eq!(
        env.vmm_processes(),
        vec![new_pid],
        "exactly one vmm for the machine"
    );
}
