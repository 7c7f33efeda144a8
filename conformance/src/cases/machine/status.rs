//! Machine cases: Version and Status: the runtime's name and version, its machine classes and their
//! capabilities.

use anyhow::{Context as _, ensure};
use iri_spec::machine::v1alpha1::{self as m};

use crate::case::{Case, pass};

use super::rpc::*;

pub(super) fn cases(v: &mut Vec<Case>) {
    // ------------------------------------------------------------ Version
    case!(
        v,
        "machine.version.name_and_version_set",
        "Version returns a non-empty runtime_name and runtime_version",
        |ctx| {
            let r = version(&ctx, "").await?;
            ensure!(!r.runtime_name.is_empty(), "runtime_name is empty");
            ensure!(!r.runtime_version.is_empty(), "runtime_version is empty");
            pass()
        }
    );
    case!(
        v,
        "machine.version.any_request_version",
        "Version answers OK whatever the request's version field says (Go clients send \"\")",
        |ctx| {
            let r = version(&ctx, "v9.9.9-conformance").await?;
            ensure!(!r.runtime_name.is_empty(), "runtime_name is empty");
            pass()
        }
    );
    case!(
        v,
        "machine.version.stable",
        "two Version calls return the same runtime_name and runtime_version",
        |ctx| {
            let (a, b) = (version(&ctx, "").await?, version(&ctx, "").await?);
            ensure!(a == b, "Version changed between calls: {a:?} vs {b:?}");
            ensure!(!a.runtime_name.is_empty(), "runtime_name is empty");
            pass()
        }
    );

    // ------------------------------------------------------------ Status
    case!(
        v,
        "machine.status.has_classes",
        "Status reports at least one machine class",
        |ctx| {
            let s = status(&ctx).await?;
            ensure!(
                !s.machine_class_status.is_empty(),
                "Status returned no machine classes"
            );
            pass()
        }
    );
    case!(
        v,
        "machine.status.class_set",
        "every MachineClassStatus has machine_class set with a non-empty, unique name",
        |ctx| {
            let s = status(&ctx).await?;
            ensure!(
                !s.machine_class_status.is_empty(),
                "Status returned no machine classes"
            );
            let mut seen = std::collections::HashSet::new();
            for cs in &s.machine_class_status {
                let c = cs
                    .machine_class
                    .as_ref()
                    .context("a MachineClassStatus has no machine_class")?;
                ensure!(!c.name.is_empty(), "a machine class has an empty name");
                ensure!(
                    seen.insert(c.name.clone()),
                    "machine class {:?} is listed twice",
                    c.name
                );
            }
            pass()
        }
    );
    case!(
        v,
        "machine.status.capabilities_set",
        "every machine class has capabilities set",
        |ctx| {
            let s = status(&ctx).await?;
            for cs in &s.machine_class_status {
                let c = cs
                    .machine_class
                    .as_ref()
                    .context("a MachineClassStatus has no machine_class")?;
                ensure!(
                    c.capabilities.is_some(),
                    "machine class {:?} has no capabilities",
                    c.name
                );
            }
            pass()
        }
    );
    case!(
        v,
        "machine.status.cpu_memory_keys",
        "every machine class capability map has the keys cpu and memory",
        |ctx| {
            let s = status(&ctx).await?;
            ensure!(
                !s.machine_class_status.is_empty(),
                "Status returned no machine classes"
            );
            for cs in &s.machine_class_status {
                let c = cs
                    .machine_class
                    .as_ref()
                    .context("a MachineClassStatus has no machine_class")?;
                let r = &c
                    .capabilities
                    .as_ref()
                    .context("no capabilities")?
                    .resources;
                ensure!(
                    r.contains_key("cpu"),
                    "machine class {:?} lacks the cpu key: {r:?}",
                    c.name
                );
                ensure!(
                    r.contains_key("memory"),
                    "machine class {:?} lacks the memory key: {r:?}",
                    c.name
                );
            }
            pass()
        }
    );
    case!(
        v,
        "machine.status.resources_positive",
        "cpu and memory capabilities are positive",
        |ctx| {
            let s = status(&ctx).await?;
            for cs in &s.machine_class_status {
                let c = cs
                    .machine_class
                    .as_ref()
                    .context("a MachineClassStatus has no machine_class")?;
                let r = &c
                    .capabilities
                    .as_ref()
                    .context("no capabilities")?
                    .resources;
                for k in ["cpu", "memory"] {
                    let q = *r
                        .get(k)
                        .with_context(|| format!("class {:?} lacks {k}", c.name))?;
                    ensure!(q > 0, "class {:?}: {k} = {q} is not positive", c.name);
                }
            }
            pass()
        }
    );
    case!(
        v,
        "machine.status.quantity_non_negative",
        "every MachineClassStatus quantity is >= 0",
        |ctx| {
            let s = status(&ctx).await?;
            for cs in &s.machine_class_status {
                ensure!(
                    cs.quantity >= 0,
                    "class {:?} has quantity {}",
                    cs.machine_class.as_ref().map(|c| &c.name),
                    cs.quantity
                );
            }
            pass()
        }
    );
    case!(
        v,
        "machine.status.memory_in_bytes",
        "memory capabilities are in bytes (at least 64 MiB), not MiB or GiB",
        |ctx| {
            let s = status(&ctx).await?;
            for cs in &s.machine_class_status {
                let c = cs
                    .machine_class
                    .as_ref()
                    .context("a MachineClassStatus has no machine_class")?;
                let r = &c
                    .capabilities
                    .as_ref()
                    .context("no capabilities")?
                    .resources;
                let mem = *r
                    .get("memory")
                    .with_context(|| format!("class {:?} lacks memory", c.name))?;
                ensure!(
                    mem >= 64 << 20,
                    "class {:?}: memory {mem} is below 64 MiB: not in bytes?",
                    c.name
                );
            }
            pass()
        }
    );
    case!(
        v,
        "machine.status.cpu_in_cores",
        "cpu capabilities are whole cores (1..=999), not millicores",
        |ctx| {
            let s = status(&ctx).await?;
            for cs in &s.machine_class_status {
                let c = cs
                    .machine_class
                    .as_ref()
                    .context("a MachineClassStatus has no machine_class")?;
                let r = &c
                    .capabilities
                    .as_ref()
                    .context("no capabilities")?
                    .resources;
                let cpu = *r
                    .get("cpu")
                    .with_context(|| format!("class {:?} lacks cpu", c.name))?;
                ensure!(
                    (1..1000).contains(&cpu),
                    "class {:?}: cpu {cpu} is not in whole cores (millicores?)",
                    c.name
                );
            }
            pass()
        }
    );
    case!(
        v,
        "machine.status.class_usable",
        "the class used by the run is one Status reports",
        |ctx| {
            let s = status(&ctx).await?;
            ensure!(
                !s.machine_class_status.is_empty(),
                "Status returned no machine classes"
            );
            let class = ctx.machine_class()?;
            ensure!(
                s.machine_class_status
                    .iter()
                    .any(|cs| cs.machine_class.as_ref().is_some_and(|c| c.name == class)),
                "class {class:?} is not reported by Status"
            );
            pass()
        }
    );
    case!(
        v,
        "machine.status.stable",
        "two Status calls report the same class names",
        |ctx| {
            let names = |s: m::StatusResponse| {
                let mut n: Vec<String> = s
                    .machine_class_status
                    .into_iter()
                    .filter_map(|c| c.machine_class.map(|c| c.name))
                    .collect();
                n.sort();
                n
            };
            let a = names(status(&ctx).await?);
            let b = names(status(&ctx).await?);
            ensure!(a == b, "class names changed between calls: {a:?} vs {b:?}");
            ensure!(!a.is_empty(), "Status returned no machine classes");
            pass()
        }
    );
}
