//! The `machine-broker` binary with its embedded lower plane: it serves on a 0600 socket,
//! answers Version and Status (the embedded leaves' classes, summed), runs a machine to
//! RUNNING, and exits 0 on SIGTERM, removing its socket.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{os::unix::fs::PermissionsExt as _, time::Duration};

use iri_spec::machine::v1alpha1::{self as machine, machine_runtime_client::MachineRuntimeClient};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_an_embedded_lower_plane_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("broker.sock");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_machine-broker"))
        .arg("--socket")
        .arg(&socket)
        .args([
            "--leaves",
            "3",
            "--leaf-class",
            "m1:cpu=2,memory=4Gi,quantity=5",
        ])
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let channel =
        iri_spec::endpoint::connect_lazy(&iri_spec::endpoint::Endpoint::Unix(socket.clone()));
    let mut c = MachineRuntimeClient::new(channel);
    // Poll until the leaves are announced (a child process has no readiness event).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Ok(status) = c.status(machine::StatusRequest {}).await {
            let status = status.into_inner();
            if status.machine_class_status.iter().any(|s| s.quantity == 15) {
                break status;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no Status with 3 × 5 m1"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let class = status.machine_class_status[0]
        .machine_class
        .clone()
        .unwrap();
    assert_eq!(class.name, "m1");
    assert_eq!(class.capabilities.unwrap().resources.get("cpu"), Some(&2));
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");
    let version = c
        .version(machine::VersionRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(version.runtime_name, "machinebroker");
    let created = c
        .create_machine(machine::CreateMachineRequest {
            machine: Some(machine::Machine {
                metadata: Some(Default::default()),
                spec: Some(machine::MachineSpec {
                    class: "m1".to_owned(),
                    ..Default::default()
                }),
                status: None,
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .machine
        .unwrap();
    let id = created.metadata.unwrap().id;
    loop {
        let listed = c
            .list_machines(machine::ListMachinesRequest {
                filter: Some(machine::MachineFilter {
                    id: id.clone(),
                    ..Default::default()
                }),
            })
            .await
            .unwrap()
            .into_inner()
            .machines;
        if listed[0].status.as_ref().unwrap().state == machine::MachineState::MachineRunning as i32
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "machine not RUNNING"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pid = child.id().unwrap();
    let killed = tokio::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("exits after SIGTERM")
        .unwrap();
    assert!(status.success(), "graceful exit: {status}");
    assert!(!socket.exists(), "socket removed");
}
