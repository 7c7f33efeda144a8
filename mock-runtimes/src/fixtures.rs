//! Ready-made request objects and rstest fixtures for tests against a mock (or any runtime).

use std::collections::HashMap;

use iri_spec::{
    bucket::v1alpha1 as bucket_api, machine::v1alpha1 as machine_api, meta::v1alpha1 as meta,
    volume::v1alpha1 as volume_api,
};
use rstest::fixture;

use crate::{MockRuntime, MockRuntimeBuilder};

fn metadata(labels: &[(&str, &str)]) -> meta::ObjectMetadata {
    meta::ObjectMetadata {
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        annotations: HashMap::new(),
        ..Default::default()
    }
}

/// A valid machine for CreateMachine: class `x3-small`, powered on, no volumes or NICs.
pub fn machine_with_labels(labels: &[(&str, &str)]) -> machine_api::Machine {
    machine_api::Machine {
        metadata: Some(metadata(labels)),
        spec: Some(machine_api::MachineSpec {
            power: machine_api::Power::On as i32,
            class: "x3-small".to_owned(),
            ..Default::default()
        }),
        status: None,
    }
}

/// A valid machine (see [`machine_with_labels`]) labelled `app=test`.
#[fixture]
pub fn machine() -> machine_api::Machine {
    machine_with_labels(&[("app", "test")])
}

/// A volume for AttachVolume: a 1 GiB local disk named `name`.
pub fn local_disk(name: &str) -> machine_api::Volume {
    machine_api::Volume {
        name: name.to_owned(),
        device: "oda".to_owned(),
        local_disk: Some(machine_api::LocalDisk {
            size_bytes: 1 << 30,
            image: None,
        }),
        connection: None,
    }
}

/// A NIC for AttachNetworkInterface.
pub fn nic(name: &str) -> machine_api::NetworkInterface {
    machine_api::NetworkInterface {
        name: name.to_owned(),
        network_id: "net-1".to_owned(),
        ips: vec!["10.0.0.1".to_owned()],
        attributes: HashMap::new(),
    }
}

/// A valid volume for CreateVolume: class `fast`, 1 GiB, with the given labels.
pub fn volume_with_labels(labels: &[(&str, &str)]) -> volume_api::Volume {
    volume_api::Volume {
        metadata: Some(metadata(labels)),
        spec: Some(volume_api::VolumeSpec {
            class: "fast".to_owned(),
            resources: Some(volume_api::VolumeResources {
                storage_bytes: 1 << 30,
            }),
            ..Default::default()
        }),
        status: None,
    }
}

/// A valid volume (see [`volume_with_labels`]) labelled `app=test`.
#[fixture]
pub fn volume() -> volume_api::Volume {
    volume_with_labels(&[("app", "test")])
}

/// A valid bucket for CreateBucket: class `regular`, labelled `app=test`.
#[fixture]
pub fn bucket() -> bucket_api::Bucket {
    bucket_api::Bucket {
        metadata: Some(metadata(&[("app", "test")])),
        spec: Some(bucket_api::BucketSpec {
            class: "regular".to_owned(),
        }),
        status: None,
    }
}

/// The default builder.
#[fixture]
pub fn builder() -> MockRuntimeBuilder {
    MockRuntime::builder()
}
