//! Machine cases: DeleteMachine: codes, the terminating phase, idempotency.

use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use tonic::Code;

use crate::{
    case::{Case, pass, skip_gone_at_once},
    ctx::{expect_code, expect_ok, plausible_ns, unknown_id},
};

use super::rpc::*;

pub(super) fn cases(v: &mut Vec<Case>) {
    // ------------------------------------------------------------ DeleteMachine
    code_cases! { v, Machine;
        "machine.delete.unknown_id_not_found", "DeleteMachine of an unknown id returns NotFound",
        NotFound, "DeleteMachine unknown id",
        |ctx| ctx.delete_machine(&unknown_id()).await;
        "machine.delete.empty_id_invalid", "DeleteMachine with an empty machine_id returns InvalidArgument",
        InvalidArgument, "DeleteMachine empty id",
        |ctx| ctx.delete_machine("").await;
    }
    case!(
        v,
        "machine.delete.terminating_listed",
        "a machine still listed after DeleteMachine has deleted_at set and state TERMINATING",
        |ctx| {
            let id = ctx.running_machine().await?;
            expect_ok(ctx.delete_machine(&id).await, "DeleteMachine")?;
            let Some(mm) = ctx.get_machine(&id).await? else {
                return skip_gone_at_once("machine", "the terminating phase");
            };
            let md = mm.metadata.as_ref().context("no metadata")?;
            ensure!(
                md.deleted_at > 0,
                "deleted_at is 0 on a machine being deleted"
            );
            ensure!(
                status_of(&mm)?.state == TERMINATING,
                "state is {}, want TERMINATING (4)",
                status_of(&mm)?.state
            );
            pass()
        }
    );
    case!(
        v,
        "machine.delete.deleted_at_ns",
        "deleted_at of a machine being deleted is the deletion time in Unix nanoseconds",
        |ctx| {
            // A running machine: a runtime may forget a machine that never started at once
            // (nothing to tear down), which leaves deleted_at unobservable.
            let id = ctx.running_machine().await?;
            expect_ok(ctx.delete_machine(&id).await, "DeleteMachine")?;
            let Some(mm) = ctx.get_machine(&id).await? else {
                return skip_gone_at_once("machine", "deleted_at");
            };
            let t = mm.metadata.as_ref().context("no metadata")?.deleted_at;
            ensure!(
                plausible_ns(t, Duration::from_secs(600)),
                "deleted_at {t} is not now in Unix ns"
            );
            pass()
        }
    );
    case!(
        v,
        "machine.delete.repeat_while_terminating_ok",
        "a repeated DeleteMachine returns OK while the machine is still listed, NotFound only once it is gone",
        |ctx| {
            let id = ctx.running_machine().await?;
            expect_ok(ctx.delete_machine(&id).await, "DeleteMachine")?;
            let res = ctx.delete_machine(&id).await;
            match res {
                Ok(()) => {}
                Err(st) if st.code() == Code::NotFound => {
                    ensure!(
                        ctx.get_machine(&id).await?.is_none(),
                        "second DeleteMachine returned NotFound while the machine is still listed"
                    );
                }
                Err(st) => bail!("second DeleteMachine: {:?}: {}", st.code(), st.message()),
            }
            pass()
        }
    );
    case!(
        v,
        "machine.delete.eventually_gone",
        "a deleted machine disappears from ListMachines within the state budget",
        |ctx| {
            let id = ctx.running_machine().await?;
            expect_ok(ctx.delete_machine(&id).await, "DeleteMachine")?;
            ctx.wait_machine_gone(&id).await?;
            pass()
        }
    );
    case!(
        v,
        "machine.delete.gone_from_label_list",
        "a deleted machine eventually disappears from ListMachines by label too",
        |ctx| {
            let id = ctx.new_machine().await?;
            expect_ok(ctx.delete_machine(&id).await, "DeleteMachine")?;
            ctx.wait_until("the label list to be empty after delete", || async {
                let l = ctx.list_machines_by_labels(ctx.case_selector()).await?;
                Ok(if l.is_empty() {
                    Ok(())
                } else {
                    Err(format!("{:?}", ids_of(&l)))
                })
            })
            .await?;
            pass()
        }
    );
    case!(
        v,
        "machine.delete.not_found_after_gone",
        "DeleteMachine of a machine that is gone returns NotFound",
        |ctx| {
            let id = ctx.new_machine().await?;
            expect_ok(ctx.delete_machine(&id).await, "DeleteMachine")?;
            ctx.wait_machine_gone(&id).await?;
            expect_code(
                ctx.delete_machine(&id).await,
                Code::NotFound,
                "DeleteMachine after gone",
            )?;
            pass()
        }
    );
    case!(
        v,
        "machine.delete.others_untouched",
        "deleting one machine leaves another machine listed and unchanged",
        |ctx| {
            let a = ctx.new_machine().await?;
            let b = ctx.running_machine().await?;
            expect_ok(ctx.delete_machine(&a).await, "DeleteMachine")?;
            ctx.wait_machine_gone(&a).await?;
            let mm = ctx.must_machine(&b).await?;
            ensure!(
                mm.metadata.as_ref().is_some_and(|md| md.deleted_at == 0),
                "the other machine has deleted_at set"
            );
            ensure!(
                status_of(&mm)?.state == RUNNING,
                "the other machine is no longer RUNNING"
            );
            pass()
        }
    );
    case!(
        v,
        "machine.delete.idempotent",
        "repeated DeleteMachine calls return only OK or NotFound and the machine ends up gone",
        |ctx| {
            let id = ctx.new_machine().await?;
            for i in 0..ctx.params().idempotent_count {
                match ctx.delete_machine(&id).await {
                    Ok(()) => {}
                    Err(st) if st.code() == Code::NotFound => {
                        ensure!(i > 0, "first DeleteMachine returned NotFound");
                        ensure!(
                            ctx.get_machine(&id).await?.is_none(),
                            "DeleteMachine #{i} returned NotFound while the machine is listed"
                        );
                    }
                    Err(st) => bail!("DeleteMachine #{i}: {:?}: {}", st.code(), st.message()),
                }
            }
            ctx.wait_machine_gone(&id).await?;
            pass()
        }
    );
    case!(
        v,
        "machine.delete.parallel",
        "parallel DeleteMachine calls on one machine return only OK or NotFound",
        |ctx| {
            let id = ctx.new_machine().await?;
            let n = ctx.params().parallel_creates;
            let futs = (0..n).map(|_| ctx.delete_machine(&id));
            let res = futures::future::join_all(futs).await;
            ensure!(
                res.iter().any(Result::is_ok),
                "no parallel DeleteMachine returned OK"
            );
            for r in res {
                if let Err(st) = r {
                    ensure!(
                        st.code() == Code::NotFound,
                        "parallel DeleteMachine: {:?}: {}",
                        st.code(),
                        st.message()
                    );
                    ensure!(
                        ctx.get_machine(&id).await?.is_none(),
                        "parallel DeleteMachine returned NotFound while the machine is listed"
                    );
                }
            }
            ctx.wait_machine_gone(&id).await?;
            pass()
        }
    );
}
