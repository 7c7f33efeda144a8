//! Volume cases: Version and Status: the runtime's name and version, its volume classes.

use anyhow::{Context as _, ensure};
use iri_spec::volume::v1alpha1::{self as v};

use crate::{
    case::{Case, pass},
    ctx::expect_ok,
};

use super::rpc::*;

pub(super) fn cases(v: &mut Vec<Case>) {
    case!(
        v,
        "volume.version.name_and_version_set",
        "volume Version returns a non-empty runtime_name and runtime_version",
        |ctx| {
            let mut c = ctx.vc()?;
            let r = expect_ok(
                ctx.rpc(c.version(v::VersionRequest::default())).await,
                "Version",
            )?;
            ensure!(
                !r.runtime_name.is_empty() && !r.runtime_version.is_empty(),
                "empty Version answer: {r:?}"
            );
            pass()
        }
    );

    // ------------------------------------------------------------ Status
    case!(
        v,
        "volume.status.has_classes",
        "volume Status reports at least one volume class",
        |ctx| {
            ensure!(
                !status(&ctx).await?.volume_class_status.is_empty(),
                "volume Status returned no classes"
            );
            pass()
        }
    );
    case!(
        v,
        "volume.status.class_set",
        "every VolumeClassStatus has volume_class with a non-empty, unique name",
        |ctx| {
            let s = status(&ctx).await?;
            ensure!(
                !s.volume_class_status.is_empty(),
                "volume Status returned no classes"
            );
            let mut seen = std::collections::HashSet::new();
            for cs in &s.volume_class_status {
                let c = cs
                    .volume_class
                    .as_ref()
                    .context("a VolumeClassStatus has no volume_class")?;
                ensure!(
                    !c.name.is_empty() && seen.insert(c.name.clone()),
                    "empty or duplicate class name {:?}",
                    c.name
                );
            }
            pass()
        }
    );
    case!(
        v,
        "volume.status.capabilities_set",
        "every volume class has capabilities with tps and iops >= 0",
        |ctx| {
            for cs in status(&ctx).await?.volume_class_status {
                let c = cs
                    .volume_class
                    .context("a VolumeClassStatus has no volume_class")?;
                let caps = c
                    .capabilities
                    .with_context(|| format!("volume class {:?} has no capabilities", c.name))?;
                ensure!(
                    caps.tps >= 0 && caps.iops >= 0,
                    "class {:?}: negative tps/iops {caps:?}",
                    c.name
                );
            }
            pass()
        }
    );
    case!(
        v,
        "volume.status.quantity_non_negative",
        "every VolumeClassStatus quantity (bytes) is >= 0",
        |ctx| {
            for cs in status(&ctx).await?.volume_class_status {
                ensure!(
                    cs.quantity >= 0,
                    "class {:?} has quantity {}",
                    cs.volume_class.map(|c| c.name),
                    cs.quantity
                );
            }
            pass()
        }
    );
    case!(
        v,
        "volume.status.class_usable",
        "the volume class used by the run is one Status reports",
        |ctx| {
            let s = status(&ctx).await?;
            ensure!(
                !s.volume_class_status.is_empty(),
                "Status returned no volume classes"
            );
            let class = ctx.volume_class()?;
            ensure!(
                s.volume_class_status
                    .iter()
                    .any(|cs| cs.volume_class.as_ref().is_some_and(|c| c.name == class)),
                "class {class:?} is not reported by Status"
            );
            pass()
        }
    );
}
