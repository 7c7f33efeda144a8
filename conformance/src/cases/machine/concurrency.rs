//! Machine cases: parallel CreateMachine and UpdateMachinePower calls.

use anyhow::ensure;
use iri_spec::machine::v1alpha1::Power;

use crate::{
    case::{Case, pass},
    ctx::expect_ok,
};

use super::rpc::*;

pub(super) fn cases(v: &mut Vec<Case>) {
    // ------------------------------------------------------------ concurrency
    case!(
        v,
        "machine.concurrency.parallel_creates",
        "N parallel CreateMachine calls yield N distinct, listed machines",
        |ctx| {
            let n = ctx.params().parallel_creates;
            let futs = (0..n).map(|_| async { ctx.create_machine(ctx.machine_spec(&[])?).await });
            let mut ids = Vec::new();
            for r in futures::future::join_all(futs).await {
                ids.push(r?.0);
            }
            let mut uniq = ids.clone();
            uniq.sort();
            uniq.dedup();
            ensure!(
                uniq.len() == n,
                "{n} parallel creates returned {} distinct ids",
                uniq.len()
            );
            let mut listed = ids_of(&ctx.list_machines_by_labels(ctx.case_selector()).await?);
            listed.sort();
            ensure!(listed == uniq, "listed {listed:?}, created {uniq:?}");
            pass()
        }
    );
    case!(
        v,
        "machine.concurrency.parallel_power",
        "parallel UpdateMachinePower calls on distinct machines all take effect",
        |ctx| {
            let n = ctx.params().parallel_creates.min(4);
            let mut ids = Vec::new();
            for _ in 0..n {
                ids.push(ctx.new_machine().await?);
            }
            let res =
                futures::future::join_all(ids.iter().map(|id| power(&ctx, id, Power::Off as i32)))
                    .await;
            for r in res {
                expect_ok(r, "UpdateMachinePower")?;
            }
            for id in &ids {
                let mm = ctx.must_machine(id).await?;
                ensure!(
                    spec_of(&mm)?.power == Power::Off as i32,
                    "machine {id} not powered off"
                );
            }
            pass()
        }
    );
}
