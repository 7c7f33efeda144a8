//! Class mapping, capacity accounting and the Ready condition.

use iri_spec::machine::v1alpha1 as machine;
use irikit_api::compute::{Machine, MachineClass};

use super::{machine::name_of, *};
use crate::{
    error::ClassMapError,
    flavor::{Flavor, MachineFlavor, Usage},
};

fn runtime_class(name: &str, cpu: i64, memory: i64, quantity: i64) -> machine::MachineClassStatus {
    machine::MachineClassStatus {
        machine_class: Some(machine::MachineClass {
            name: name.into(),
            capabilities: Some(machine::MachineClassCapabilities {
                resources: [("cpu".to_string(), cpu), ("memory".to_string(), memory)].into(),
            }),
        }),
        quantity,
    }
}

fn class(name: &str, cpu: &str, memory: &str) -> MachineClass {
    MachineClass {
        metadata: ObjectMeta::named(name),
        capabilities: [
            ("cpu".to_string(), cpu.parse().unwrap()),
            ("memory".to_string(), memory.parse().unwrap()),
        ]
        .into(),
        ..MachineClass::default()
    }
}

fn machine(uid: &str, class: &str) -> Machine {
    let mut m = Machine::default();
    m.metadata.uid = uid.into();
    m.spec.machine_class_ref = LocalObjectReference::new(class);
    m.spec.machine_pool_ref = Some(LocalObjectReference::new("p"));
    m
}

const GI: i64 = 1 << 30;

#[test]
fn map_class_prefers_same_name_then_unique_capabilities() {
    let runtime = [
        runtime_class("small", 2, 8 * GI, 10),
        runtime_class("twin-a", 4, 16 * GI, 1),
        runtime_class("twin-b", 4, 16 * GI, 2),
    ];
    let caps = |c: &MachineClass| capabilities_of(c);
    let check = |c: MachineClass| {
        map_class(&c.metadata.name, &caps(&c), &runtime).map(|r| name_of(r).to_string())
    };
    assert_eq!(check(class("small", "2", "8Gi")), Ok("small".into()));
    assert_eq!(
        check(class("renamed", "2", "8Gi")),
        Ok("small".into()),
        "unique capabilities"
    );
    assert_eq!(
        check(class("renamed", "1500m", "8Gi")),
        Ok("small".into()),
        "cpu rounds up"
    );
    assert_eq!(
        check(class("twin-b", "4", "16Gi")),
        Ok("twin-b".into()),
        "same name wins"
    );
    assert_eq!(
        check(class("other", "4", "16Gi")),
        Err(ClassMapError::Ambiguous(vec![
            "twin-a".into(),
            "twin-b".into()
        ]))
    );
    assert_eq!(
        check(class("small", "2", "9Gi")),
        Err(ClassMapError::NoMatch),
        "same name, other caps"
    );
    let empty = MachineClass {
        metadata: ObjectMeta::named("x"),
        ..MachineClass::default()
    };
    assert_eq!(check(empty), Err(ClassMapError::NoMatch));
}

#[test]
fn announce_counts_each_machine_once_and_floors_at_zero() {
    let runtime = [
        runtime_class("small", 2, 8 * GI, 2),
        runtime_class("large", 8, 32 * GI, 5),
    ];
    let classes = [
        class("small", "2", "8Gi"),
        class("large", "8", "32Gi"),
        class("odd", "3", "1Gi"),
    ];
    let machines = [
        machine("u1", "small"),
        machine("u1", "small"),
        machine("u2", "small"),
        machine("u3", "small"),
        machine("u4", "large"),
    ];
    let machines: Vec<Usage> = machines
        .iter()
        .filter_map(|m| MachineFlavor::usage(&m.clone().into_object(), "p"))
        .collect();
    let got = announce::<MachineFlavor>(&runtime, &classes, &machines);
    let names: Vec<&str> = got
        .available_classes
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(names, ["small", "large"]);
    let show = |list: &ResourceList| -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect()
    };
    assert_eq!(
        show(&got.capacity),
        [
            ("class/machine.large".into(), "5".into()),
            ("class/machine.small".into(), "2".into())
        ]
    );
    assert_eq!(
        show(&got.allocatable),
        [
            ("class/machine.large".into(), "4".into()),
            ("class/machine.small".into(), "0".into())
        ]
    );
}

#[test]
fn ready_condition_keeps_transition_time_while_status_holds() {
    let ok = |at: &str| Probe {
        result: Ok(()),
        at: at.into(),
    };
    let mut conditions = Vec::new();
    set_condition(&mut conditions, ready_condition(&ok("t1"), 1));
    assert_eq!(conditions[0].reason, REASON_HEARTBEAT_RECEIVED);
    assert_eq!(conditions[0].last_transition_time.as_deref(), Some("t1"));
    set_condition(&mut conditions, ready_condition(&ok("t2"), 1));
    assert_eq!(conditions[0].last_transition_time.as_deref(), Some("t1"));
    assert_eq!(conditions[0].last_update_time.as_deref(), Some("t2"));
    let down = Probe {
        result: Err("connection refused".into()),
        at: "t3".into(),
    };
    set_condition(&mut conditions, ready_condition(&down, 1));
    assert_eq!(conditions.len(), 1);
    assert_eq!(
        (
            conditions[0].status.as_str(),
            conditions[0].reason.as_str(),
            conditions[0].message.as_str()
        ),
        ("False", REASON_RUNTIME_UNREACHABLE, "connection refused")
    );
    assert_eq!(conditions[0].last_transition_time.as_deref(), Some("t3"));
}

#[test]
fn config_validation_follows_ironcore_flag_rules() {
    let mut config = PoolConfig::new("pool", "ironcore://pool");
    assert_eq!(config.validate(), Ok(()));
    config.status_timeout = config.heartbeat_interval;
    assert!(config.validate().is_err());
    config.status_timeout = Duration::ZERO;
    assert!(config.validate().is_err());
    let mut config = PoolConfig::new("pool", "ironcore://pool");
    config.lease_duration = config.heartbeat_interval;
    assert!(
        config.validate().is_err(),
        "lease duration must exceed the interval"
    );
}
