//! Machine cases: AttachNetworkInterface and DetachNetworkInterface.

use anyhow::{Context as _, ensure};
use tonic::Code;

use crate::{
    case::{Case, pass},
    ctx::{expect_code, expect_ok, unknown_id},
};

use super::rpc::*;

pub(super) fn cases(v: &mut Vec<Case>) {
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
