//! The acceptance test of issue 15 through a real broker hierarchy: an upper plane whose pools
//! are machine brokers, each over a lower plane of iri-mock leaves, with fragmented free
//! capacity (aggregated capacity says "fits" where no leaf has the local disk). Best-effort
//! scheduling binds Machines to pools that cannot host them; reservation mode binds none so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use machine_broker::{
    BrokerConfig,
    plane::{Hierarchy, plane_config},
    workload,
};

/// One hierarchy at a time: the two tests compare timings-sensitive outcomes on 2 cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs the fragmented workload through a hierarchy whose planes schedule in `mode`, waiting
/// `settle` for nothing to change (within `deadline`); the planes must stop cleanly.
async fn run(
    mode: Option<scheduler::ReservationConfig>,
    settle: Duration,
    deadline: Duration,
) -> (workload::Outcome, usize) {
    let _one = ONE_AT_A_TIME.lock().await;
    let (nodes, hostable) = workload::fragmented(2, 1);
    let config = irikit_controlplane::PlaneConfig {
        reservations: mode,
        ..plane_config()
    };
    let h = Hierarchy::start(&nodes, config.clone(), config, BrokerConfig::default())
        .await
        .unwrap();
    h.wait_announced(Duration::from_secs(30)).await.unwrap();
    let outcome = workload::run(&h, "default", hostable, settle, deadline)
        .await
        .unwrap();
    assert!(h.upper().failures().is_empty());
    assert!(h.shutdown(Duration::from_secs(20)).await);
    (outcome, hostable)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn best_effort_binds_machines_where_no_leaf_can_host_them() {
    let (outcome, hostable) = run(None, Duration::from_secs(3), Duration::from_secs(60)).await;
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservation_mode_binds_every_machine_where_a_leaf_holds_it() {
    // Every pool asked at once (the default), and one at a time (reservation-bench's mode).
    for fanout in [0, 1] {
        let mode = Some(scheduler::ReservationConfig {
            timeout: Duration::from_secs(5),
            retry: Duration::from_millis(50),
            max_retry: Duration::from_secs(1),
            fanout,
            ..scheduler::ReservationConfig::default()
        });
        let (outcome, hostable) =
            run(mode, Duration::from_secs(10), Duration::from_secs(120)).await;
        eprintln!("reservation, fanout {fanout}: {outcome:?}");
        assert_eq!(outcome.misplaced, 0, "fanout {fanout}: {outcome:?}");
        assert_eq!(outcome.running, hostable, "fanout {fanout}: {outcome:?}");
        assert!(
            !outcome.per_pool.contains_key("b-small"),
            "fanout {fanout}: the broker of small leaves accepted nothing: {outcome:?}"
        );
    }
}
