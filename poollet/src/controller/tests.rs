//! Queue, runner and watcher semantics, on tokio's paused clock.

use std::sync::atomic::{AtomicUsize, Ordering};

use irikit_api::{
    Resource, StoreExt, compute::MachineClass, meta::ObjectMeta, store::memory::MemoryStore,
};

use super::*;

fn no_jitter(base_ms: u64, max_ms: u64) -> Backoff {
    Backoff {
        base: Duration::from_millis(base_ms),
        max: Duration::from_millis(max_ms),
        jitter: 0.0,
    }
}

#[test]
fn backoff_doubles_and_caps() {
    let backoff = no_jitter(5, 100);
    let delays: Vec<u64> = (0..7)
        .map(|n| backoff.delay(n).as_millis() as u64)
        .collect();
    assert_eq!(delays, [5, 10, 20, 40, 80, 100, 100]);
    assert_eq!(backoff.delay(u32::MAX), Duration::from_millis(100));
    let jittered = Backoff {
        jitter: 0.5,
        ..backoff
    };
    for n in 0..4 {
        let d = jittered.delay(n);
        assert!(d >= backoff.delay(n) && d <= backoff.delay(n).mul_f64(1.5));
    }
}

/// Spawns [`run`] of `probe` over `queue` with `config`; the token that stops it and the task.
fn start(
    queue: &WorkQueue<u32>,
    probe: &Arc<Probe>,
    config: ControllerConfig,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let token = CancellationToken::new();
    let runner = tokio::spawn(run(queue.clone(), probe.clone(), config, token.clone()));
    (token, runner)
}

#[tokio::test(start_paused = true)]
async fn add_deduplicates_queued_keys() {
    let queue = WorkQueue::new();
    queue.add("a");
    queue.add("b");
    queue.add("a");
    assert_eq!(queue.len(), 2);
    assert_eq!(queue.pop().await, Some("a"));
    assert_eq!(queue.pop().await, Some("b"));
    assert!(queue.is_empty());
}

#[tokio::test(start_paused = true)]
async fn add_while_active_is_deferred_until_done() {
    let queue = WorkQueue::new();
    queue.add("a");
    assert_eq!(queue.pop().await, Some("a"));
    assert!(queue.is_active(&"a"));
    queue.add("a");
    queue.add("a");
    assert!(queue.is_empty(), "an active key is not handed out twice");
    queue.done(&"a");
    assert_eq!(queue.len(), 1, "the dirty key comes back exactly once");
    assert_eq!(queue.pop().await, Some("a"));
    queue.done(&"a");
    assert!(queue.is_empty());
}

#[tokio::test(start_paused = true)]
async fn add_after_keeps_the_earliest_deadline() {
    let queue = WorkQueue::new();
    let start = Instant::now();
    queue.add_after("a", Duration::from_secs(10));
    queue.add_after("a", Duration::from_secs(3));
    queue.add_after("a", Duration::from_secs(20));
    assert!(queue.is_scheduled(&"a"));
    assert_eq!(queue.pop().await, Some("a"));
    assert_eq!(start.elapsed(), Duration::from_secs(3));
    queue.done(&"a");
    assert!(!queue.is_scheduled(&"a"));
    // The superseded 10 s timer must not add the key again.
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(queue.is_empty());
}

#[tokio::test(start_paused = true)]
async fn close_wakes_poppers_and_ignores_adds() {
    let queue: WorkQueue<&str> = WorkQueue::new();
    let popper = tokio::spawn({
        let queue = queue.clone();
        async move { queue.pop().await }
    });
    tokio::task::yield_now().await;
    queue.close();
    assert_eq!(popper.await.ok().flatten(), None);
    queue.add("a");
    assert!(queue.is_empty());
}

/// Records concurrency and fails the first `fail_first` reconciles of every key.
#[derive(Default)]
struct Probe {
    running: Mutex<HashSet<u32>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    overlaps: AtomicUsize,
    calls: Mutex<Vec<(u32, Duration)>>,
    fail_first: usize,
    work: Duration,
    start: Mutex<Option<Instant>>,
}

#[derive(Debug, thiserror::Error)]
#[error("injected failure")]
struct Injected;

#[async_trait::async_trait]
impl Reconciler<u32> for Probe {
    type Error = Injected;

    async fn reconcile(&self, key: &u32) -> Result<Action, Injected> {
        let elapsed = lock(&self.start).get_or_insert_with(Instant::now).elapsed();
        if !lock(&self.running).insert(*key) {
            self.overlaps.fetch_add(1, Ordering::SeqCst);
        }
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let n_calls = {
            let mut calls = lock(&self.calls);
            calls.push((*key, elapsed));
            calls.iter().filter(|(k, _)| k == key).count()
        };
        tokio::time::sleep(self.work).await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        lock(&self.running).remove(key);
        if n_calls <= self.fail_first {
            Err(Injected)
        } else {
            Ok(Action::AwaitChange)
        }
    }

    fn error_policy(&self, _key: &u32, _error: &Injected, retries: u32) -> Action {
        Action::Requeue(no_jitter(100, 1000).delay(retries))
    }
}

#[tokio::test(start_paused = true)]
async fn runner_bounds_concurrency_and_serialises_keys() {
    let queue = WorkQueue::new();
    let probe = Arc::new(Probe {
        work: Duration::from_millis(50),
        ..Probe::default()
    });
    let (token, runner) = start(
        &queue,
        &probe,
        ControllerConfig {
            name: "test",
            concurrency: 3,
        },
    );
    for round in 0..5 {
        for key in 0..10u32 {
            queue.add(key);
        }
        tokio::time::sleep(Duration::from_millis(10 + round)).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    token.cancel();
    runner.await.ok();
    assert_eq!(probe.overlaps.load(Ordering::SeqCst), 0);
    assert_eq!(probe.max_in_flight.load(Ordering::SeqCst), 3);
    let calls = lock(&probe.calls);
    for key in 0..10u32 {
        let n = calls.iter().filter(|(k, _)| *k == key).count();
        assert!((1..=5).contains(&n), "key {key} reconciled {n} times");
    }
}

#[tokio::test(start_paused = true)]
async fn runner_requeues_failures_with_exponential_backoff() {
    let queue = WorkQueue::new();
    let probe = Arc::new(Probe {
        fail_first: 3,
        ..Probe::default()
    });
    let (token, runner) = start(&queue, &probe, ControllerConfig::default());
    queue.add(7);
    tokio::time::sleep(Duration::from_secs(10)).await;
    token.cancel();
    runner.await.ok();
    let times: Vec<u128> = lock(&probe.calls)
        .iter()
        .map(|(_, t)| t.as_millis())
        .collect();
    // Failures at 0, 100, 300 (+100, +200, +400): the fourth attempt succeeds at 700 ms.
    assert_eq!(times, [0, 100, 300, 700]);
}

#[tokio::test(start_paused = true)]
async fn shutdown_finishes_in_flight_reconciles() {
    let queue = WorkQueue::new();
    let probe = Arc::new(Probe {
        work: Duration::from_secs(2),
        ..Probe::default()
    });
    let (token, runner) = start(&queue, &probe, ControllerConfig::default());
    queue.add(1);
    queue.add(2);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(probe.in_flight.load(Ordering::SeqCst), 2);
    token.cancel();
    runner.await.ok();
    assert_eq!(
        probe.in_flight.load(Ordering::SeqCst),
        0,
        "in-flight work ran to the end"
    );
    queue.add(3);
    assert!(queue.is_empty(), "a stopped controller takes no more work");
}

fn class(name: &str) -> Object {
    MachineClass {
        metadata: ObjectMeta::named(name),
        capabilities: [("cpu".to_string(), "1".parse().unwrap())].into(),
        ..MachineClass::default()
    }
    .into_object()
}

async fn next_name(rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(Duration::from_secs(60), rx.recv())
        .await
        .ok()
        .flatten()
        .unwrap_or_default()
}

#[tokio::test(start_paused = true)]
async fn watch_lists_then_follows_and_relists_after_expiry() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    store.create(class("a")).await.unwrap();
    let cache = ObjectCache::new();
    let token = CancellationToken::new();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(watch(
        store.clone(),
        Kind::MachineClass,
        ListOptions::all(),
        cache.clone(),
        move |obj| {
            tx.send(obj.metadata().name.clone()).ok();
        },
        token.clone(),
    ));
    assert_eq!(next_name(&mut rx).await, "a");
    store.create(class("b")).await.unwrap();
    assert_eq!(next_name(&mut rx).await, "b");
    assert_eq!(cache.len(), 2);
    store
        .delete(Kind::MachineClass, "", "a", None)
        .await
        .unwrap();
    assert_eq!(next_name(&mut rx).await, "a");
    assert!(cache.get(&ObjectRef::new("", "a")).is_none());
    // Compaction ends the watch with Expired; the watcher relists and keeps following.
    store.create(class("c")).await.unwrap();
    assert_eq!(next_name(&mut rx).await, "c");
    let revision = store.revision().await.unwrap();
    store.compact(revision).await.unwrap();
    store.create(class("d")).await.unwrap();
    let mut seen = HashSet::new();
    while !seen.contains("d") {
        let name = next_name(&mut rx).await;
        assert!(!name.is_empty(), "watcher stopped delivering");
        seen.insert(name);
    }
    assert_eq!(cache.len(), 3);
    let _typed: MachineClass = store.get_typed("", "d").await.unwrap();
    token.cancel();
    task.await.ok();
}
