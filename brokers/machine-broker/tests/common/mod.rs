//! What the broker's tests share: a broker served on a unix socket in a temp dir over a lower
//! plane of iri-mock leaves (store: memory, or a throw-away etcd), and the etcd helpers.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::{path::PathBuf, sync::Arc, time::Duration};

use iri_spec::endpoint::Endpoint;
use irikit_api::{Store, StoreExt as _};
use machine_broker::{
    Broker, BrokerConfig,
    plane::{LeafConfig, LowerPlane, plane_config},
};
use tokio_util::sync::CancellationToken;

/// A broker on a socket over a lower plane.
pub struct BrokerUnderTest {
    pub lower: Option<LowerPlane>,
    pub broker: Broker,
    pub endpoint: Endpoint,
    pub token: CancellationToken,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
    _dir: tempfile::TempDir,
}

impl BrokerUnderTest {
    /// Starts the lower plane over `leaves` on `store` (none when `leaves` is empty), and the
    /// broker over `store` in `namespace`.
    pub async fn start(store: Arc<dyn Store>, leaves: &[LeafConfig], config: BrokerConfig) -> Self {
        let lower = if leaves.is_empty() {
            None
        } else {
            Some(
                LowerPlane::start(
                    store.clone(),
                    irikit_controlplane::PlaneConfig {
                        reservations: Some(lower_reservations()),
                        ..plane_config()
                    },
                    leaves,
                )
                .await
                .unwrap(),
            )
        };
        let dir = tempfile::tempdir().unwrap();
        let socket: PathBuf = dir.path().join("broker.sock");
        let broker = Broker::new(store, config);
        let listener = machine_broker::bind(&socket).unwrap();
        let token = CancellationToken::new();
        let server = tokio::spawn({
            let (broker, socket, token) = (broker.clone(), socket.clone(), token.clone());
            async move { machine_broker::serve_on(broker, listener, &socket, token).await }
        });
        if !leaves.is_empty() {
            wait_announced(&broker, leaves.len()).await;
        }
        BrokerUnderTest {
            lower,
            broker,
            endpoint: Endpoint::Unix(socket),
            token,
            server,
            _dir: dir,
        }
    }

    /// Stops the broker and the lower plane.
    pub async fn stop(self) {
        self.token.cancel();
        self.server.await.unwrap().unwrap();
        if let Some(lower) = self.lower {
            let failures = lower.plane().failures();
            assert!(failures.is_empty(), "lower plane: {failures:?}");
            assert!(lower.shutdown(Duration::from_secs(20)).await);
        }
    }
}

/// Waits (poll with a deadline) until the broker's Status sums `n_pools` announced pools.
pub async fn wait_announced(broker: &Broker, n_pools: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (pools, _) = broker
            .store()
            .list_typed::<irikit_api::compute::MachinePool>(&irikit_api::ListOptions::all())
            .await
            .unwrap();
        let ready = pools
            .iter()
            .filter(|p| !p.status.capacity.is_empty() && p.status.state == "Ready")
            .count();
        if ready >= n_pools {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{ready} of {n_pools} lower pools announced within 30s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The lower plane's scheduler: reservation mode (a lower Machine naming a Reservation is
/// placed on a pool that accepted it; the others get a Reservation of their own), with short
/// timings.
pub fn lower_reservations() -> scheduler::ReservationConfig {
    scheduler::ReservationConfig {
        timeout: Duration::from_secs(5),
        retry: Duration::from_millis(50),
        max_retry: Duration::from_secs(1),
        ..scheduler::ReservationConfig::default()
    }
}

/// Whether `IRIKIT_REQUIRE` names etcd.
pub fn etcd_required() -> bool {
    std::env::var("IRIKIT_REQUIRE")
        .unwrap_or_default()
        .split(',')
        .any(|c| c.trim() == "etcd")
}

/// A throw-away etcd on free loopback ports (killed on drop).
pub struct Etcd {
    child: std::process::Child,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A throw-away etcd, or `None` after one `skip:` line when etcd (the binary, or the store
/// backend in this build) is missing and `IRIKIT_REQUIRE` does not name it.
pub async fn etcd() -> Option<Etcd> {
    let built = !matches!(
        irikit_api::store::open("etcd://127.0.0.1:1").await,
        Err(irikit_api::store::Error::BadRequest(_))
    );
    let binary = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("etcd"))
            .find(|p| p.is_file())
    });
    let (true, Some(binary)) = (built, binary) else {
        assert!(
            !etcd_required(),
            "etcd is required (IRIKIT_REQUIRE) but the etcd binary or the irikit-api/etcd store backend is missing"
        );
        let _ = std::io::Write::write_fmt(
            &mut std::io::stderr(),
            format_args!("skip: etcd binary or irikit-api/etcd store backend missing\n"),
        );
        return None;
    };
    let dir = tempfile::tempdir().unwrap();
    let (client, peer) = (free_port(), free_port());
    let client_url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let child = std::process::Command::new(binary)
        .args(["--name", "broker", "--data-dir"])
        .arg(dir.path().join("data"))
        .args([
            "--listen-client-urls",
            &client_url,
            "--advertise-client-urls",
            &client_url,
        ])
        .args([
            "--listen-peer-urls",
            &peer_url,
            "--initial-advertise-peer-urls",
            &peer_url,
        ])
        .arg("--initial-cluster")
        .arg(format!("broker={peer_url}"))
        .args(["--log-level", "error"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let etcd = Etcd {
        child,
        url: format!("etcd://127.0.0.1:{client}"),
        _dir: dir,
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let probe = async {
            let store = irikit_api::store::open(&etcd.url).await?;
            store.revision().await
        };
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(1), probe).await {
            return Some(etcd);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "etcd did not serve within 20s"
        );
        // Polling a child process for readiness; there is no event to wait on.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The leaves most tests use: two iri-mock pools with the mock's default classes, 500 of
/// each (the suite leaves its machines until the run's cleanup, and the lower scheduler,
/// unlike a bare iri-mock, enforces the class counts).
pub fn two_leaves() -> Vec<LeafConfig> {
    ["leaf-a", "leaf-b"]
        .into_iter()
        .map(|pool| LeafConfig {
            classes: iri_mock::classes::default_machine_classes()
                .into_iter()
                .map(|c| c.quantity(500))
                .collect(),
            ..LeafConfig::new(pool)
        })
        .collect()
}
