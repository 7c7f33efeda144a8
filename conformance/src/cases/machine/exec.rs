//! Machine cases: Exec: the console URL and its codes.

use anyhow::ensure;

use crate::{
    case::{Case, pass},
    ctx::{expect_ok, unknown_id},
};

use super::rpc::*;

pub(super) fn cases(v: &mut Vec<Case>) {
    // ------------------------------------------------------------ Exec
    case!(
        v,
        "machine.exec.known_machine",
        "Exec on an existing machine returns OK with an empty or absolute URL",
        |ctx| {
            let id = ctx.running_machine().await?;
            let r = expect_ok(exec(&ctx, &id).await, "Exec")?;
            ensure!(
                r.url.is_empty() || r.url.contains("://"),
                "Exec URL {:?} is neither empty nor absolute",
                r.url
            );
            pass()
        }
    );
    code_cases! { v, Machine;
        "machine.exec.unknown_id_not_found", "Exec on an unknown machine returns NotFound",
        NotFound, "Exec unknown id",
        |ctx| exec(&ctx, &unknown_id()).await;
        "machine.exec.empty_id_invalid", "Exec with an empty machine_id returns InvalidArgument",
        InvalidArgument, "Exec empty id",
        |ctx| exec(&ctx, "").await;
    }
}
