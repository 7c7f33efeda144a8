//! Snapshots (insta, YAML) of listed objects, events and class status, with ids and times redacted.
#![allow(clippy::unwrap_used)]

mod common;

use common::{
    bucket_json, event_json, machine_json, machine_status_json, snapshot_json, start, volume_json,
    volume_status_json,
};
use iri_mock::{MockRuntime, fixtures};
use iri_spec::machine::v1alpha1 as machine;
use serde_json::Value;

macro_rules! snapshot {
    ($name:literal, $value:expr) => {
        insta::assert_yaml_snapshot!($name, $value, {
            "[].metadata.id" => "[id]",
            "[].metadata.created_at" => "[ns]",
            "[].metadata.deleted_at" => insta::dynamic_redaction(|v, _| if v.as_i64() == Some(0) { v } else { "[ns]".into() }),
            "[].spec.volume_id" => "[id]",
            "[].status.volumes[].handle" => "[handle]",
            "[].status.network_interfaces[].handle" => "[handle]",
            "[].status.access.handle" => "[handle]",
            "[].status.access.endpoint" => "[endpoint]",
            "[].status.access.attributes[\"volume-id\"]" => "[id]",
            "[].involved_object_meta.id" => "[id]",
            "[].involved_object_meta.created_at" => "[ns]",
            "[].involved_object_meta.deleted_at" => insta::dynamic_redaction(|v, _| if v.as_i64() == Some(0) { v } else { "[ns]".into() }),
            "[].event_time" => "[s]",
        })
    };
}

#[tokio::test]
async fn listed_machines() {
    let (_mock, mut c) = start(MockRuntime::builder()).await;
    let mut m =
        fixtures::machine_with_labels(&[("machinepoollet.ironcore.dev/machine-uid", "uid-1")]);
    m.metadata.as_mut().unwrap().annotations = [(
        "machinepoollet.ironcore.dev/machine-generation".to_owned(),
        "1".to_owned(),
    )]
    .into();
    let spec = m.spec.as_mut().unwrap();
    spec.volumes.push(fixtures::local_disk("root"));
    spec.network_interfaces.push(fixtures::nic("eth0"));
    spec.ignition_data = b"secret ignition".to_vec();
    spec.guest_config = Some(machine::GuestConfig {
        hostname: "vm-1".into(),
    });
    c.create_machine(m).await;
    let second = c
        .create_machine(fixtures::machine_with_labels(&[("app", "b")]))
        .await;
    c.power(&second, machine::Power::Off).await;
    let third = c
        .create_machine(fixtures::machine_with_labels(&[("app", "c")]))
        .await;
    c.delete_machine(&third).await.unwrap();
    // Zero terminate delay: the third machine is gone by the next call; the second is off.
    let listed: Vec<Value> = c.list_machines().await.iter().map(machine_json).collect();
    snapshot!("listed_machines", listed);
    let events: Vec<Value> = c.machine_events().await.iter().map(event_json).collect();
    snapshot!("machine_events", events);
}

#[tokio::test]
async fn listed_machine_while_terminating() {
    let (_mock, mut c) = start(MockRuntime::builder().delays(iri_mock::Delays {
        terminate: std::time::Duration::from_secs(3600),
        ..Default::default()
    }))
    .await;
    let id = c.create_machine(fixtures::machine()).await;
    c.delete_machine(&id).await.unwrap();
    let listed: Vec<Value> = c.list_machines().await.iter().map(machine_json).collect();
    snapshot!("terminating_machine", listed);
}

#[tokio::test]
async fn listed_volumes_snapshots_buckets() {
    let (_mock, mut c) = start(MockRuntime::builder()).await;
    let id = c.create_volume(fixtures::volume()).await;
    c.create_snapshot(&id).await;
    c.create_bucket(fixtures::bucket()).await;
    let volumes: Vec<Value> = c.list_volumes().await.iter().map(volume_json).collect();
    snapshot!("listed_volumes", volumes);
    let snapshots: Vec<Value> = c.list_snapshots().await.iter().map(snapshot_json).collect();
    snapshot!("listed_volume_snapshots", snapshots);
    let buckets: Vec<Value> = c.list_buckets().await.iter().map(bucket_json).collect();
    snapshot!("listed_buckets", buckets);
}

#[tokio::test]
async fn class_status() {
    let (_mock, mut c) = start(MockRuntime::builder()).await;
    let machine_status = c.machine_status().await;
    insta::assert_yaml_snapshot!("machine_status", machine_status_json(&machine_status));
    let volume_status = c.volume_status().await;
    insta::assert_yaml_snapshot!("volume_status", volume_status_json(&volume_status));
}
