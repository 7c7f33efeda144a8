//! The acceptance test of issue 15 through a real broker hierarchy: an upper plane whose pools
//! are machine brokers, each over a lower plane of iri-mock leaves, with fragmented free
//! capacity (aggregated capacity says "fits" where no leaf has the local disk). Best-effort
//! scheduling binds Machines to pools that cannot host them; reservation mode binds none so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use machine_broker::{
    BrokerConfig,
    plane::{Hierarchy, PlaneTimings, SchedulerMode},
    workload,
};

/// One hierarchy at a time: the two tests compare timings-sensitive outcomes on 2 cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn hierarchy(mode: &SchedulerMode) -> (Hierarchy, usize) {
    let (nodes, hostable) = workload::fragmented(2, 1);
    let h = Hierarchy::start(
        &nodes,
        PlaneTimings::default(),
        mode.clone(),
        mode.clone(),
        BrokerConfig::default(),
    )
    .await
    .unwrap();
    h.wait_announced(Duration::from_secs(30)).await.unwrap();
    (h, hostable)
}

/// The hierarchy in `mode` and the outcome of the fragmented workload on it (`settle` and
/// `deadline` in seconds).
async fn run(
    mode: &SchedulerMode,
    settle: u64,
    deadline: u64,
) -> (Hierarchy, usize, workload::Outcome) {
    let (h, hostable) = hierarchy(mode).await;
    let outcome = workload::run(
        &h,
        "default",
        hostable,
        Duration::from_secs(settle),
        Duration::from_secs(deadline),
    )
    .await
    .unwrap();
    (h, hostable, outcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn best_effort_binds_machines_where_no_leaf_can_host_them() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (h, hostable, outcome) = run(&SchedulerMode::default(), 3, 60).await;
    eprintln!("best-effort: {outcome:?}");
    // Aggregated capacity prefers the broker of small leaves, and the lower scheduler the
    // small leaves: Machines are bound where they cannot run, although the hierarchy has room
    // for every one of them.
    assert_eq!(outcome.machines, hostable);
    assert!(outcome.misplaced > 0, "{outcome:?}");
    assert_eq!(
        outcome.unbound, 0,
        "best-effort binds everything: {outcome:?}"
    );
    assert!(h.upper().failures().is_empty());
    assert!(h.shutdown(Duration::from_secs(20)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservation_mode_binds_every_machine_where_a_leaf_holds_it() {
    let mode = SchedulerMode::Reservation(scheduler::ReservationConfig {
        timeout: Duration::from_secs(5),
        retry: Duration::from_millis(50),
        max_retry: Duration::from_secs(1),
        ..scheduler::ReservationConfig::default()
    });
    let _one = ONE_AT_A_TIME.lock().await;
    let (h, hostable, outcome) = run(&mode, 10, 120).await;
    eprintln!("reservation: {outcome:?}");
    assert_eq!(outcome.misplaced, 0, "{outcome:?}");
    assert_eq!(outcome.running, hostable, "{outcome:?}");
    assert!(
        !outcome.per_pool.contains_key("b-small"),
        "the broker of small leaves accepted nothing: {outcome:?}"
    );
    assert!(h.upper().failures().is_empty());
    assert!(h.shutdown(Duration::from_secs(20)).await);
}
