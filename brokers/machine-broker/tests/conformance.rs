//! The broker passes iri-conformance: the RPC level on its own (every machine case of the
//! `core` and `go-poollet` profiles, over a lower plane of iri-mock leaves, on a memory and on
//! an etcd lower store), and the lifecycle level with irikit's machinepoollet above it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../../real-runtimes/shared/conformance_check.rs"]
mod check;
mod common;

use std::{sync::Arc, time::Duration};

use check::Suite;
use common::BrokerUnderTest;
use iri_conformance::{
    Service, Targets,
    runner::{LevelFilter, ProfileFilter},
};
use irikit_api::Store;
use machine_broker::BrokerConfig;

/// The Exec console cases skip on a runtime whose Exec answers an empty URL (the broker has no
/// console bridge).
const NOT_APPLICABLE: [(&str, &str); 2] = [
    (
        "^machine\\.exec\\.console\\.",
        "Exec answers an empty URL: the broker has no console bridge",
    ),
    (
        "^reservation\\.",
        "the lower poollets' reservation pass-through is not on this branch yet (tests/reservation.rs writes the lower states itself)",
    ),
];

fn suite(profile: ProfileFilter) -> Suite {
    let mut suite = Suite::new(Service::Machine, profile);
    suite.not_applicable.extend(NOT_APPLICABLE);
    suite.params.state_timeout = Duration::from_secs(30);
    suite
}

async fn rpc_level(store: Arc<dyn Store>) {
    let under_test =
        BrokerUnderTest::start(store, &common::two_leaves(), BrokerConfig::default()).await;
    let targets = Targets::connect(Some(&under_test.endpoint), None, None);
    for profile in [ProfileFilter::Core, ProfileFilter::GoPoollet] {
        suite(profile).check(&targets).await;
    }
    under_test.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_level_passes_on_a_memory_lower_plane() {
    rpc_level(Arc::new(irikit_api::store::memory::MemoryStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_level_passes_on_an_etcd_lower_plane() {
    let Some(etcd) = common::etcd().await else {
        return;
    };
    rpc_level(irikit_api::store::open(&etcd.url).await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_level_passes_with_the_poollet_above() {
    let under_test = BrokerUnderTest::start(
        Arc::new(irikit_api::store::memory::MemoryStore::new()),
        &common::two_leaves(),
        BrokerConfig::default(),
    )
    .await;
    // The lifecycle machine cases attach storage volumes: a volume runtime (iri-mock).
    let volumes = iri_mock::MockRuntime::builder()
        .start_unix_temp()
        .await
        .unwrap();
    let targets = Targets::connect(
        Some(&under_test.endpoint),
        Some(&volumes.endpoint().unwrap()),
        None,
    );
    let mut suite = Suite::new(Service::Machine, ProfileFilter::Core);
    suite.level = LevelFilter::Lifecycle;
    suite.params.state_timeout = Duration::from_secs(30);
    suite.check(&targets).await;
    under_test.stop().await;
}
