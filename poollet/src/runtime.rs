//! The runtime side both poollets share, written once over [`Flavor`] and
//! [`iri_spec::kind::IriKind`]: the connect check, the runtime view that the `Status` probe
//! keeps (classes and probe result), the probe loop, the ListEvents → Event mapper, the
//! periodic runtime relist that turns list differences into queue keys, and the reduction of
//! the runtime objects listed for one ironcore name (orphans and duplicates deleted, the
//! oldest kept).

use std::{
    collections::BTreeMap,
    future::Future,
    sync::{Arc, PoisonError, RwLock},
    time::Duration,
};

use iri_spec::kind::IriKind;
use irikit_api::{Store, store::now_rfc3339};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    controller::ObjectRef,
    error::{Result, runtime_connected},
    events,
    flavor::Flavor,
    lease::PoolLease,
};

/// Calls `Version` and checks the answer (see [`runtime_connected`]); returns the runtime's
/// name, used in every `<runtime>://<id>` the poollet writes.
pub async fn connect<F: Flavor>(
    client: &F::Client,
    timeout: Duration,
    pool: &str,
) -> Result<String> {
    let (name, version) = F::version(client, timeout).await?;
    runtime_connected(F::NAME, &name, &version, pool)?;
    Ok(name)
}

/// A periodic loop that a token stops: a tick every period, the first at once (a missed tick
/// delays the next one).
pub(crate) struct Ticks {
    ticker: tokio::time::Interval,
    token: CancellationToken,
}

impl Ticks {
    /// Ticks every `period` until `token` is cancelled.
    pub(crate) fn new(period: Duration, token: CancellationToken) -> Self {
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self { ticker, token }
    }

    /// Waits for the next tick; `false` once the token is cancelled.
    pub(crate) async fn tick(&mut self) -> bool {
        tokio::select! {
            () = self.token.cancelled() => false,
            _ = self.ticker.tick() => true,
        }
    }

    /// Runs `work`, or `None` when the token is cancelled first.
    pub(crate) async fn run<T>(&self, work: impl Future<Output = T>) -> Option<T> {
        tokio::select! {
            () = self.token.cancelled() => None,
            out = work => Some(out),
        }
    }
}

/// The outcome of the last `Status` probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// `Err(message)` when the runtime did not answer Status.
    pub result: std::result::Result<(), String>,
    /// When the probe finished (RFC 3339).
    pub at: String,
}

#[derive(Debug)]
struct ViewInner<C> {
    classes: Option<Vec<C>>,
    probe: Option<Probe>,
}

/// The runtime as last seen by the `Status` probe: its classes and the probe result. Shared by
/// the pool and object reconcilers (cheap to clone).
#[derive(Debug)]
pub struct RuntimeView<C> {
    inner: Arc<RwLock<ViewInner<C>>>,
}

impl<C> Clone for RuntimeView<C> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<C> Default for RuntimeView<C> {
    fn default() -> Self {
        Self {
            inner: Arc::new(RwLock::new(ViewInner {
                classes: None,
                probe: None,
            })),
        }
    }
}

impl<C: Clone + PartialEq> RuntimeView<C> {
    /// The runtime classes of the last successful Status (`None` before the first one).
    pub fn classes(&self) -> Option<Vec<C>> {
        self.inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .classes
            .clone()
    }

    /// The last probe.
    pub fn probe(&self) -> Option<Probe> {
        self.inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .probe
            .clone()
    }

    /// Records a probe (and, on success, the classes it returned; a failure keeps the last
    /// classes). Returns whether the classes changed.
    pub fn record(&self, result: std::result::Result<Vec<C>, String>) -> bool {
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        let (result, changed) = match result {
            Ok(classes) => {
                let changed = inner.classes.as_ref() != Some(&classes);
                inner.classes = Some(classes);
                (Ok(()), changed)
            }
            Err(message) => (Err(message), false),
        };
        inner.probe = Some(Probe {
            result,
            at: now_rfc3339(),
        });
        changed
    }
}

/// Calls `Status` once with `timeout` and records the result in `view`; returns whether the
/// classes changed.
pub async fn probe_once<F: Flavor>(
    client: &F::Client,
    timeout: Duration,
    view: &RuntimeView<F::RuntimeClass>,
) -> bool {
    let result = F::status(client, timeout)
        .await
        .map_err(|err| err.to_string());
    if let Err(message) = &result {
        warn!(error = %message, "{} runtime status probe failed", F::NAME);
    }
    view.record(result)
}

/// Probes the runtime now and then every `interval` until `token` is cancelled; after each
/// probe, whether or not it worked, renews `lease` (if any), then calls `on_probe` with whether
/// the runtime's classes changed.
pub async fn heartbeat<F: Flavor>(
    client: F::Client,
    interval: Duration,
    timeout: Duration,
    view: RuntimeView<F::RuntimeClass>,
    lease: Option<PoolLease>,
    on_probe: impl Fn(bool) + Send,
    token: CancellationToken,
) {
    let mut ticks = Ticks::new(interval, token);
    while ticks.tick().await {
        let Some(changed) = ticks.run(probe_once::<F>(&client, timeout, &view)).await else {
            return;
        };
        if let Some(lease) = &lease {
            let Some(res) = ticks.run(lease.renew()).await else {
                return;
            };
            if let Err(err) = res {
                warn!(error = %err, "renewing the {} pool lease failed", F::NAME);
            }
        }
        on_probe(changed);
    }
}

/// Every `period`, ListEvents for the window since the last call and writes an Event object on
/// the involved object for each event that carries the flavour's labels (§3.8, IronCore's
/// `mem` and its volume twin; the window and dedupe scheme are described in
/// [`crate::events`]).
pub async fn event_mapper<F: Flavor>(
    store: Arc<dyn Store>,
    client: F::Client,
    period: Duration,
    timeout: Duration,
    token: CancellationToken,
) {
    events::run_windows(period, token, |from, to| {
        let store = Arc::clone(&store);
        let client = client.clone();
        async move {
            let listed = F::list_events(&client, timeout, from, to).await?;
            events::record_runtime_events(store.as_ref(), &listed, F::INVOLVED, F::EVENT_SOURCE)
                .await
        }
    })
    .await;
}

/// The label keys that name the ironcore object of a runtime object.
#[derive(Debug, Clone, Copy)]
pub struct NameLabels {
    /// The namespace label key.
    pub namespace: &'static str,
    /// The name label key.
    pub name: &'static str,
}

impl NameLabels {
    /// The key of the ironcore object `obj` is labelled with.
    pub fn key_of<K: IriKind>(self, obj: &K) -> Option<ObjectRef> {
        Some(ObjectRef::new(
            obj.label(self.namespace)?,
            obj.label(self.name)?,
        ))
    }
}

/// Lists every runtime object of kind `K` every `period` (with `list`) and calls `on_key` with
/// the key and id of each one that appeared, changed or disappeared (IronCore's generators).
/// This drives status propagation and finds orphans.
pub async fn relist<K, L, Fut>(
    list: L,
    labels: NameLabels,
    period: Duration,
    on_key: impl Fn(ObjectRef, &str) + Send,
    token: CancellationToken,
) where
    K: IriKind,
    L: Fn() -> Fut + Send,
    Fut: Future<Output = Result<Vec<K>>> + Send,
{
    let mut last: BTreeMap<String, K> = BTreeMap::new();
    let mut ticks = Ticks::new(period, token);
    while ticks.tick().await {
        let Some(listed) = ticks.run(list()).await else {
            return;
        };
        let listed = match listed {
            Ok(listed) => listed,
            Err(err) => {
                warn!(error = %err, "{} runtime relist failed", K::NAME);
                continue;
            }
        };
        let mut now = BTreeMap::new();
        for obj in listed {
            let id = obj.id().to_string();
            if last.get(&id) != Some(&obj)
                && let Some(key) = labels.key_of(&obj)
            {
                on_key(key, &id);
            }
            now.insert(id, obj);
        }
        for (id, obj) in &last {
            if !now.contains_key(id)
                && let Some(key) = labels.key_of(obj)
            {
                on_key(key, id);
            }
        }
        last = now;
    }
}

/// `Ok(true)` if the runtime accepted a delete, `Ok(false)` if the object was already gone.
pub(crate) fn not_found_is_gone<T>(res: Result<T>) -> Result<bool> {
    match res {
        Ok(_) => Ok(true),
        Err(err) if err.code() == Some(tonic::Code::NotFound) => Ok(false),
        Err(err) => Err(err),
    }
}

/// Of the runtime objects listed for one ironcore name: deletes (with `delete`) those whose
/// `uid_label` is not `uid` ("delete gone": the object is gone or was re-created) and all but
/// the oldest of the others (duplicates, say after a crash between create and status write;
/// no panic); returns the oldest.
pub(crate) async fn reduce<K, D, Fut>(
    listed: Vec<K>,
    uid_label: &str,
    uid: Option<&str>,
    delete: D,
) -> Result<Option<K>>
where
    K: IriKind,
    D: Fn(String) -> Fut,
    Fut: Future<Output = Result<bool>>,
{
    let (mut mine, orphans): (Vec<_>, Vec<_>) = listed
        .into_iter()
        .partition(|obj| uid.is_some() && obj.label(uid_label) == uid);
    for orphan in &orphans {
        let id = orphan.id().to_string();
        if delete(id.clone()).await? {
            info!(id = %id, "deleted orphaned runtime {}", K::NAME);
        }
    }
    mine.sort_by(|a, b| {
        let created = |o: &K| o.metadata().map_or(0, |m| m.created_at);
        (created(a), a.id()).cmp(&(created(b), b.id()))
    });
    let mut mine = mine.into_iter();
    let oldest = mine.next();
    for duplicate in mine {
        let id = duplicate.id().to_string();
        warn!(id = %id, "deleting a duplicate runtime {} for one uid", K::NAME);
        delete(id).await?;
    }
    Ok(oldest)
}
