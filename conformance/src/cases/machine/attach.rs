//! Machine cases: AttachVolume, DetachVolume and UpdateVolume; AttachNetworkInterface and
//! DetachNetworkInterface.

use anyhow::{Context as _, ensure};
use tonic::Code;

use super::rpc::*;
use crate::{
    case::{Case, pass},
    ctx::{expect_code, expect_ok, unknown_id},
};

pub(super) fn volumes_cases(v: &mut Vec<Case>) {
    // ------------------------------------------------------------ volumes on machines
    case!(
        v,
        "machine.volume.attach_in_spec",
        "AttachVolume adds the volume to spec.volumes",
        |ctx| {
            let id = ctx.running_machine().await?;
            let vol = ctx.local_disk("data");
            expect_ok(
                attach_volume(&ctx, &id, Some(vol.clone())).await,
                "AttachVolume",
            )?;
            let mm = ctx.must_machine(&id).await?;
            ensure!(
                spec_of(&mm)?.volumes.contains(&vol),
                "spec.volumes {:?} lacks {vol:?}",
                spec_of(&mm)?.volumes
            );
            pass()
        }
    );
    case!(
        v,
        "machine.volume.attach_status_by_name",
        "an attached volume is reported in status by name with a non-empty handle",
        |ctx| {
            let id = ctx.running_machine().await?;
            expect_ok(
                attach_volume(&ctx, &id, Some(ctx.local_disk("data"))).await,
                "AttachVolume",
            )?;
            ctx.wait_machine_status(&id, "to report volume data with a handle", |s| {
                s.volumes
                    .iter()
                    .any(|v| v.name == "data" && !v.handle.is_empty())
            })
            .await?;
            pass()
        }
    );
    case!(
        v,
        "machine.volume.attach_becomes_attached",
        "an attached volume reaches VOLUME_ATTACHED within the state budget",
        |ctx| {
            let id = ctx.running_machine().await?;
            expect_ok(
                attach_volume(&ctx, &id, Some(ctx.local_disk("data"))).await,
                "AttachVolume",
            )?;
            wait_volume_attached(&ctx, &id, "data").await?;
            pass()
        }
    );
    case!(
        v,
        "machine.volume.attach_connection",
        "a connection (remote) volume attaches and is reported with a handle",
        |ctx| {
            let id = ctx.running_machine().await?;
            let vol = ctx.connection_volume("remote", "pool/image-1");
            expect_ok(
                attach_volume(&ctx, &id, Some(vol.clone())).await,
                "AttachVolume",
            )?;
            wait_volume_attached(&ctx, &id, "remote").await?;
            let mm = ctx.must_machine(&id).await?;
            ensure!(
                spec_of(&mm)?.volumes.contains(&vol),
                "spec.volumes lacks the connection volume as sent"
            );
            pass()
        }
    );
    case!(
        v,
        "machine.volume.attach_duplicate_already_exists",
        "AttachVolume of a name that is already attached returns AlreadyExists",
        |ctx| {
            let id = ctx.running_machine().await?;
            expect_ok(
                attach_volume(&ctx, &id, Some(ctx.local_disk("dup"))).await,
                "AttachVolume",
            )?;
            expect_code(
                attach_volume(&ctx, &id, Some(ctx.local_disk("dup"))).await,
                Code::AlreadyExists,
                "second AttachVolume dup",
            )?;
            let mm = ctx.must_machine(&id).await?;
            ensure!(
                volume_names(&mm) == vec!["dup".to_owned()],
                "spec.volumes is {:?}",
                volume_names(&mm)
            );
            pass()
        }
    );
    code_cases! { v, Machine;
        "machine.volume.attach_unknown_machine", "AttachVolume on an unknown machine returns NotFound",
        NotFound, "AttachVolume unknown machine",
        |ctx| attach_volume(&ctx, &unknown_id(), Some(ctx.local_disk("x"))).await;
        "machine.volume.attach_empty_machine_id", "AttachVolume with an empty machine_id returns InvalidArgument",
        InvalidArgument, "AttachVolume empty id",
        |ctx| attach_volume(&ctx, "", Some(ctx.local_disk("x"))).await;
        "machine.volume.attach_missing_volume", "AttachVolume without a volume returns InvalidArgument",
        InvalidArgument, "AttachVolume{volume: None}",
        |ctx| { let id = ctx.new_machine().await?; attach_volume(&ctx, &id, None).await };
        "machine.volume.attach_empty_name", "AttachVolume of a volume with an empty name returns InvalidArgument",
        InvalidArgument, "AttachVolume unnamed",
        |ctx| { let id = ctx.new_machine().await?; attach_volume(&ctx, &id, Some(ctx.local_disk(""))).await };
    }
    case!(
        v,
        "machine.volume.detach_removes",
        "DetachVolume removes the volume from spec and status",
        |ctx| {
            let id = ctx.running_machine().await?;
            expect_ok(
                attach_volume(&ctx, &id, Some(ctx.local_disk("data"))).await,
                "AttachVolume",
            )?;
            wait_volume_attached(&ctx, &id, "data").await?;
            expect_ok(detach_volume(&ctx, &id, "data").await, "DetachVolume")?;
            let mm = ctx
                .wait_machine(&id, "to drop volume data from status", |mm| {
                    mm.and_then(|mm| mm.status.as_ref())
                        .is_some_and(|s| s.volumes.iter().all(|v| v.name != "data"))
                })
                .await?
                .context("machine vanished")?;
            ensure!(
                volume_names(&mm).is_empty(),
                "spec.volumes still has {:?}",
                volume_names(&mm)
            );
            pass()
        }
    );
    code_cases! { v, Machine;
        "machine.volume.detach_unknown_name", "DetachVolume of a name that is not attached returns NotFound",
        NotFound, "DetachVolume unknown name",
        |ctx| { let id = ctx.new_machine().await?; detach_volume(&ctx, &id, "nope").await };
    }
    case!(
        v,
        "machine.volume.detach_twice",
        "a second DetachVolume of the same name returns NotFound",
        |ctx| {
            let id = ctx.new_machine().await?;
            expect_ok(
                attach_volume(&ctx, &id, Some(ctx.local_disk("once"))).await,
                "AttachVolume",
            )?;
            expect_ok(detach_volume(&ctx, &id, "once").await, "first DetachVolume")?;
            expect_code(
                detach_volume(&ctx, &id, "once").await,
                Code::NotFound,
                "second DetachVolume",
            )?;
            pass()
        }
    );
    code_cases! { v, Machine;
        "machine.volume.detach_unknown_machine", "DetachVolume on an unknown machine returns NotFound",
        NotFound, "DetachVolume unknown machine",
        |ctx| detach_volume(&ctx, &unknown_id(), "x").await;
        "machine.volume.detach_empty_name", "DetachVolume with an empty name returns InvalidArgument",
        InvalidArgument, "DetachVolume empty name",
        |ctx| { let id = ctx.new_machine().await?; detach_volume(&ctx, &id, "").await };
    }
    case!(
        v,
        "machine.volume.reattach",
        "a volume can be attached again after it was detached",
        |ctx| {
            let id = ctx.running_machine().await?;
            expect_ok(
                attach_volume(&ctx, &id, Some(ctx.local_disk("again"))).await,
                "AttachVolume",
            )?;
            expect_ok(detach_volume(&ctx, &id, "again").await, "DetachVolume")?;
            expect_ok(
                attach_volume(&ctx, &id, Some(ctx.local_disk("again"))).await,
                "AttachVolume again",
            )?;
            wait_volume_attached(&ctx, &id, "again").await?;
            pass()
        }
    );
    case!(
        v,
        "machine.volume.update_in_spec",
        "UpdateVolume replaces the spec entry of that name",
        |ctx| {
            let id = ctx.running_machine().await?;
            expect_ok(
                attach_volume(&ctx, &id, Some(ctx.connection_volume("grow", "pool/a"))).await,
                "AttachVolume",
            )?;
            let mut vol = ctx.connection_volume("grow", "pool/a");
            if let Some(c) = vol.connection.as_mut() {
                c.effective_storage_bytes *= 2;
            }
            expect_ok(
                update_volume(&ctx, &id, Some(vol.clone())).await,
                "UpdateVolume",
            )?;
            let mm = ctx.must_machine(&id).await?;
            ensure!(
                spec_of(&mm)?.volumes == vec![vol],
                "spec.volumes is {:?}",
                spec_of(&mm)?.volumes
            );
            pass()
        }
    );
    code_cases! { v, Machine;
        "machine.volume.update_unknown_name", "UpdateVolume of a name that is not attached returns NotFound",
        NotFound, "UpdateVolume unknown name",
        |ctx| { let id = ctx.new_machine().await?; update_volume(&ctx, &id, Some(ctx.local_disk("nope"))).await };
        "machine.volume.update_unknown_machine", "UpdateVolume on an unknown machine returns NotFound",
        NotFound, "UpdateVolume unknown machine",
        |ctx| update_volume(&ctx, &unknown_id(), Some(ctx.local_disk("x"))).await;
        "machine.volume.update_missing_volume", "UpdateVolume without a volume returns InvalidArgument",
        InvalidArgument, "UpdateVolume{volume: None}",
        |ctx| { let id = ctx.new_machine().await?; update_volume(&ctx, &id, None).await };
    }
    case!(
        v,
        "machine.volume.update_idempotent",
        "repeating UpdateVolume with the same volume is OK",
        |ctx| {
            let id = ctx.new_machine().await?;
            let vol = ctx.connection_volume("same", "pool/s");
            expect_ok(
                attach_volume(&ctx, &id, Some(vol.clone())).await,
                "AttachVolume",
            )?;
            for i in 0..ctx.params().idempotent_count {
                expect_ok(
                    update_volume(&ctx, &id, Some(vol.clone())).await,
                    &format!("UpdateVolume #{i}"),
                )?;
            }
            let mm = ctx.must_machine(&id).await?;
            ensure!(
                spec_of(&mm)?.volumes == vec![vol],
                "spec.volumes is {:?}",
                spec_of(&mm)?.volumes
            );
            pass()
        }
    );
    case!(
        v,
        "machine.volume.parallel_attach",
        "parallel AttachVolume calls with distinct names all end up in spec",
        |ctx| {
            let id = ctx.running_machine().await?;
            let n = ctx.params().parallel_creates;
            let futs = (0..n).map(|i| {
            let ctx = ctx.clone();
            let id = id.clone();
            async move { attach_volume(&ctx, &id, Some(ctx.local_disk(&format!("p{i}")))).await }
        });
            for (i, r) in futures::future::join_all(futs)
                .await
                .into_iter()
                .enumerate()
            {
                expect_ok(r, &format!("AttachVolume p{i}"))?;
            }
            let mm = ctx.must_machine(&id).await?;
            let mut names = volume_names(&mm);
            names.sort();
            let mut want: Vec<String> = (0..n).map(|i| format!("p{i}")).collect();
            want.sort();
            ensure!(names == want, "spec.volumes names {names:?}, want {want:?}");
            pass()
        }
    );
}

pub(super) fn nics_cases(v: &mut Vec<Case>) {
    // ------------------------------------------------------------ NICs
    case!(
        v,
        "machine.nic.attach_in_spec",
        "AttachNetworkInterface adds the NIC to spec.network_interfaces as sent",
        |ctx| {
            let id = ctx.running_machine().await?;
            let nic = ctx.nic("eth1");
            expect_ok(
                attach_nic(&ctx, &id, Some(nic.clone())).await,
                "AttachNetworkInterface",
            )?;
            let mm = ctx.must_machine(&id).await?;
            ensure!(
                spec_of(&mm)?.network_interfaces.contains(&nic),
                "spec.network_interfaces {:?} lacks {nic:?}",
                spec_of(&mm)?.network_interfaces
            );
            pass()
        }
    );
    case!(
        v,
        "machine.nic.attach_status_by_name",
        "an attached NIC is reported in status by name with a non-empty handle",
        |ctx| {
            let id = ctx.running_machine().await?;
            expect_ok(
                attach_nic(&ctx, &id, Some(ctx.nic("eth1"))).await,
                "AttachNetworkInterface",
            )?;
            ctx.wait_machine_status(&id, "to report NIC eth1 with a handle", |s| {
                s.network_interfaces
                    .iter()
                    .any(|n| n.name == "eth1" && !n.handle.is_empty())
            })
            .await?;
            pass()
        }
    );
    case!(
        v,
        "machine.nic.attach_becomes_attached",
        "an attached NIC reaches NETWORK_INTERFACE_ATTACHED within the state budget",
        |ctx| {
            let id = ctx.running_machine().await?;
            expect_ok(
                attach_nic(&ctx, &id, Some(ctx.nic("eth1"))).await,
                "AttachNetworkInterface",
            )?;
            wait_nic_attached(&ctx, &id, "eth1").await?;
            pass()
        }
    );
    case!(
        v,
        "machine.nic.attach_duplicate_already_exists",
        "AttachNetworkInterface of a name already attached returns AlreadyExists",
        |ctx| {
            let id = ctx.running_machine().await?;
            expect_ok(
                attach_nic(&ctx, &id, Some(ctx.nic("dup"))).await,
                "AttachNetworkInterface",
            )?;
            expect_code(
                attach_nic(&ctx, &id, Some(ctx.nic("dup"))).await,
                Code::AlreadyExists,
                "second AttachNetworkInterface dup",
            )?;
            let mm = ctx.must_machine(&id).await?;
            ensure!(
                nic_names(&mm) == vec!["dup".to_owned()],
                "spec.network_interfaces is {:?}",
                nic_names(&mm)
            );
            pass()
        }
    );
    code_cases! { v, Machine;
        "machine.nic.attach_unknown_machine", "AttachNetworkInterface on an unknown machine returns NotFound",
        NotFound, "AttachNetworkInterface unknown machine",
        |ctx| attach_nic(&ctx, &unknown_id(), Some(ctx.nic("x"))).await;
        "machine.nic.attach_missing_nic", "AttachNetworkInterface without a network_interface returns InvalidArgument",
        InvalidArgument, "AttachNetworkInterface{None}",
        |ctx| { let id = ctx.new_machine().await?; attach_nic(&ctx, &id, None).await };
        "machine.nic.attach_empty_name", "AttachNetworkInterface of a NIC with an empty name returns InvalidArgument",
        InvalidArgument, "AttachNetworkInterface unnamed",
        |ctx| { let id = ctx.new_machine().await?; attach_nic(&ctx, &id, Some(ctx.nic(""))).await };
    }
    case!(
        v,
        "machine.nic.detach_removes",
        "DetachNetworkInterface removes the NIC from spec and status",
        |ctx| {
            let id = ctx.running_machine().await?;
            expect_ok(
                attach_nic(&ctx, &id, Some(ctx.nic("eth1"))).await,
                "AttachNetworkInterface",
            )?;
            wait_nic_attached(&ctx, &id, "eth1").await?;
            expect_ok(
                detach_nic(&ctx, &id, "eth1").await,
                "DetachNetworkInterface",
            )?;
            let mm = ctx
                .wait_machine(&id, "to drop NIC eth1 from status", |mm| {
                    mm.and_then(|mm| mm.status.as_ref())
                        .is_some_and(|s| s.network_interfaces.iter().all(|n| n.name != "eth1"))
                })
                .await?
                .context("machine vanished")?;
            ensure!(
                nic_names(&mm).is_empty(),
                "spec still has {:?}",
                nic_names(&mm)
            );
            pass()
        }
    );
    code_cases! { v, Machine;
        "machine.nic.detach_unknown_name", "DetachNetworkInterface of a name that is not attached returns NotFound",
        NotFound, "DetachNetworkInterface unknown name",
        |ctx| { let id = ctx.new_machine().await?; detach_nic(&ctx, &id, "nope").await };
        "machine.nic.detach_unknown_machine", "DetachNetworkInterface on an unknown machine returns NotFound",
        NotFound, "DetachNetworkInterface unknown machine",
        |ctx| detach_nic(&ctx, &unknown_id(), "x").await;
        "machine.nic.detach_empty_name", "DetachNetworkInterface with an empty name returns InvalidArgument",
        InvalidArgument, "DetachNetworkInterface empty name",
        |ctx| { let id = ctx.new_machine().await?; detach_nic(&ctx, &id, "").await };
    }
    case!(
        v,
        "machine.nic.detach_twice",
        "a second DetachNetworkInterface of the same name returns NotFound",
        |ctx| {
            let id = ctx.new_machine().await?;
            expect_ok(
                attach_nic(&ctx, &id, Some(ctx.nic("once"))).await,
                "AttachNetworkInterface",
            )?;
            expect_ok(
                detach_nic(&ctx, &id, "once").await,
                "first DetachNetworkInterface",
            )?;
            expect_code(
                detach_nic(&ctx, &id, "once").await,
                Code::NotFound,
                "second DetachNetworkInterface",
            )?;
            pass()
        }
    );
    code_cases! { v, Machine;
        "machine.nic.attach_empty_machine_id", "AttachNetworkInterface with an empty machine_id returns InvalidArgument",
        InvalidArgument, "AttachNetworkInterface empty id",
        |ctx| attach_nic(&ctx, "", Some(ctx.nic("x"))).await;
    }
}
