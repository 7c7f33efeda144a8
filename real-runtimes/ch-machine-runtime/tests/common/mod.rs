//! Shared harness for the runtime tests, in four parts: `host` (outside components, VMM
//! binaries, the PVH stub guest, processes), `env` (a runtime environment in a temp dir),
//! `calls` (one helper per RPC and wait) and `stack` (a volume runtime beside it; both runtimes
//! for suites). Everything is re-exported here: tests name it `common::...`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod calls;
mod env;
mod host;
mod stack;

#[allow(unused_imports)]
pub use calls::*;
#[allow(unused_imports)]
pub use env::*;
#[allow(unused_imports)]
pub use host::*;
#[allow(unused_imports)]
pub use stack::*;

/// Two tests of `$run(backend)`: `$sim` on ch-sim, `$real` on the real CH named by
/// `IRIKIT_CH_BIN` (one skip line without one).
#[allow(unused_macros)]
macro_rules! on_ch_sim_and_real_ch {
    ($run:ident: $sim:ident, $real:ident) => {
        #[tokio::test]
        async fn $sim() {
            $run($crate::common::Backend::Sim).await;
        }

        #[tokio::test]
        async fn $real() {
            if let Some(backend) = $crate::common::Backend::real_ch() {
                $run(backend).await;
            }
        }
    };
}
#[allow(unused_imports)]
pub(crate) use on_ch_sim_and_real_ch;
