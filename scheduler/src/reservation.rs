//! The machine scheduler's reservation mode (IronCore IEP-11, reference §6.3): instead of
//! trusting the pools' aggregated capacity, the scheduler asks the pools to hold the Machine's
//! resources and binds only where a pool said yes.
//!
//! For every unbound Machine:
//!
//! 1. **Its Reservation.** A Machine annotated `reservation.irikit.dev/name` uses that
//!    Reservation (same namespace; whoever created it owns it: the scheduler never creates or
//!    deletes it). Any other Machine gets a Reservation of its own, named after it, with a
//!    controller owner reference to it, the label `reservation.irikit.dev/machine=<name>`,
//!    `spec.pools: []` (every pool; with a [`ReservationConfig::fanout`] of N, the N best
//!    pools to ask, and the next N when all of them rejected) and `spec.resources` = `class/machine.<class>: 1`, the
//!    class's `cpu` and `memory` (when the MachineClass is known) and `localStorage` = the
//!    bytes of the Machine's local disks (the `sizeLimit`s of its `emptyDisk` and `localDisk`
//!    volumes; none when 0).
//! 2. **Wait** up to [`ReservationConfig::timeout`] (from when the scheduler first sees the
//!    Reservation) while a pool that serves reservations (MachinePool annotation
//!    `reservation.irikit.dev/supported: "true"`), is asked, and passes the Machine's filters
//!    (Ready, taints, pool selector, offers the class) has not answered Accepted or Rejected.
//! 3. **Bind** to the Accepted pool (among those passing the filters) with the most free
//!    capacity (ties: smallest name): `spec.machinePoolRef` and the annotation
//!    `reservation.irikit.dev/name` in one write with the Machine's resourceVersion as the
//!    precondition. The machinepoollet then creates the machine against the pool's hold.
//! 4. **No pool accepted** (all answered Rejected, or the timeout passed): the pools whose
//!    runtime has no reservations (annotation not `"true"`) are best-effort candidates, chosen
//!    as the best-effort scheduler chooses (most free capacity), and the bind also writes the
//!    pool like the best-effort scheduler's does. None fits: the Machine stays unbound, an
//!    `OutOfCapacity` Event is recorded, the Machine's own Reservation is deleted and the
//!    Machine is retried after a backoff ([`ReservationConfig::retry`] doubling up to
//!    [`ReservationConfig::max_retry`]), with a new Reservation.
//! 5. **Narrow.** Once the bind is written, a Reservation for one machine (own or named) gets
//!    `spec.pools: [<the pool>]`: the other pools' poollets release their holds at once
//!    instead of when the Reservation is deleted, so Machines scheduled at the same time do
//!    not find capacity held for a Machine that is already placed.
//! 6. **Clean up.** A Machine's own Reservation is deleted once the chosen pool reports it
//!    `Bound` (the runtime created the machine against it), at once when the Machine was bound
//!    best-effort, and when the Machine is deleted (the store has no garbage collector). After
//!    a restart the list finds them again.
//!
//! The same list → watch → decide loop as the best-effort [`crate::Scheduler`], but with one
//! Machine per write (a reservation bind needs no pool write; capacity is held by the pool's
//! runtime, not counted here).

use std::{
    cmp::Reverse,
    collections::{BTreeSet, HashMap, HashSet},
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use futures::StreamExt;
use irikit_api::{
    Kind, ListOptions, Object, Resource, Store, StoreExt,
    compute::{Machine, MachineClass},
    reservation::{RESERVATION_NAME_ANNOTATION, Reservation, ReservationState},
    store::{self, EventType, KnownUpdate},
};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::{
    controller::{Error, Stats, out_of_capacity_event, relist_loop},
    core::{Cache, Decision, Request},
    flavor::{BIND_ANNOTATION, Flavor, MachineFlavor},
};

/// Settings of the reservation mode.
#[derive(Debug, Clone)]
pub struct ReservationConfig {
    /// How long to wait for the asked pools to answer before falling back (`--reservation-timeout`).
    pub timeout: Duration,
    /// First retry delay after no pool accepted and none fitted best-effort.
    pub retry: Duration,
    /// Longest retry delay (the delay doubles per attempt up to this).
    pub max_retry: Duration,
    /// Store writes in flight at once.
    pub concurrency: usize,
    /// Whether to store OutOfCapacity events.
    pub emit_events: bool,
    /// How many pools a Machine's own Reservation asks at once (`--reservation-fanout`; 0:
    /// every pool, `spec.pools: []`). The pools are asked most free first (free capacity
    /// less the Reservations this scheduler is asking them right now; pools that rejected
    /// in the last second after the others); when every asked pool rejected, `spec.pools`
    /// moves on to the next ones. Fewer asks mean fewer holds that block other Machines
    /// while a decision travels (IEP-11 through brokers).
    pub fanout: usize,
}

impl Default for ReservationConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            retry: Duration::from_secs(1),
            max_retry: Duration::from_secs(60),
            concurrency: 64,
            emit_events: true,
            fanout: 0,
        }
    }
}

/// The machine scheduler in reservation mode (see the module documentation).
pub struct ReservationScheduler {
    store: Arc<dyn Store>,
    config: ReservationConfig,
    stats: Arc<Stats>,
}

fn split(key: &str) -> (&str, &str) {
    key.split_once('/').unwrap_or(("", key))
}

/// One unbound Machine's progress.
#[derive(Debug)]
struct Waiting {
    /// When the scheduler first saw the Machine unbound (bind latency).
    since: Instant,
    /// Fall back after this (set when the Reservation is first seen).
    deadline: Option<Instant>,
    /// Retry not before this (after no pool accepted and none fitted).
    retry_at: Option<Instant>,
    attempt: u32,
    /// The pools its own Reservation asked in this attempt (with a fanout).
    asked: Vec<String>,
}

/// A finished store write (one value per write, moved once: the size difference between the
/// variants does not matter).
#[allow(clippy::large_enum_variant)]
enum Done {
    Created {
        key: String,
        result: store::Result<Object>,
        /// The existing object after AlreadyExists.
        existing: Option<store::Result<Object>>,
    },
    Bound {
        key: String,
        uid: String,
        pool: String,
        /// The Reservation (key) the Machine was bound with.
        reservation: Option<String>,
        reserved: bool,
        result: store::Result<Vec<Object>>,
        fresh: Vec<store::Result<Object>>,
    },
    Deleted {
        rkey: String,
        result: store::Result<Option<Object>>,
    },
    /// `spec.pools` moved on to the next pools (fanout).
    Asked {
        key: String,
        result: store::Result<Object>,
    },
    Event,
}

#[derive(Default)]
struct State {
    cache: Cache,
    pools: HashMap<String, Object>,
    classes: HashMap<String, MachineClass>,
    /// Every Machine's uid and whether it is bound (for orphan clean-up).
    machine_uids: HashMap<String, String>,
    /// Unbound Machines by key.
    unbound: HashMap<String, Object>,
    /// Reservations by key.
    reservations: HashMap<String, Reservation>,
    /// Own Reservations of bound Machines: deleted once the pool reports them Bound.
    bound_own: HashMap<String, String>,
    waiting: HashMap<String, Waiting>,
    /// Reservation key → Machines waiting for it.
    by_reservation: HashMap<String, HashSet<String>>,
    dirty: BTreeSet<String>,
    /// Machine keys with a create or bind in flight.
    inflight: HashSet<String>,
    /// Reservation keys with a delete in flight.
    deleting: HashSet<String>,
    timers: BTreeSet<(Instant, String)>,
    /// Pool → own Reservations asking it right now (fanout).
    asking: HashMap<String, usize>,
    /// Pool → when it last rejected a Reservation.
    rejected_at: HashMap<String, Instant>,
}

impl State {
    fn mark_all_waiting(&mut self) {
        let keys: Vec<String> = self.waiting.keys().cloned().collect();
        self.dirty.extend(keys);
    }
}

impl ReservationScheduler {
    /// A reservation-mode machine scheduler over `store`.
    pub fn new(store: Arc<dyn Store>, config: ReservationConfig) -> Self {
        Self {
            store,
            config,
            stats: Arc::new(Stats::default()),
        }
    }

    /// The live counters (`binds` counts reservation and best-effort binds, `fallbacks` the
    /// best-effort ones, `reservations` the Reservations created).
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Runs until `cancel` fires. Expired watches relist; other store errors are retried
    /// with backoff.
    pub async fn run(self, cancel: CancellationToken) -> Result<(), Error> {
        relist_loop(COMPONENT, &self.stats, &cancel, || self.run_once(&cancel)).await
    }

    async fn run_once(&self, cancel: &CancellationToken) -> store::Result<()> {
        let started = Instant::now();
        let mut st = State::default();
        let all = ListOptions::all();
        let machines = self.store.list(Kind::Machine, &all).await?;
        let pools = self.store.list(Kind::MachinePool, &all).await?;
        let classes = self.store.list(Kind::MachineClass, &all).await?;
        let reservations = self.store.list(Kind::Reservation, &all).await?;
        let mut tasks: JoinSet<Done> = JoinSet::new();
        for obj in pools.items {
            self.apply_pool(&mut st, obj, false);
        }
        for obj in classes.items {
            Self::apply_class(&mut st, obj, false);
        }
        for obj in reservations.items {
            self.apply_reservation(&mut st, obj, false, &mut tasks);
        }
        for obj in machines.items {
            self.apply_machine(&mut st, obj, false, &mut tasks);
        }
        // Own Reservations whose Machine is gone (deleted while the scheduler was down).
        let orphans: Vec<String> = st
            .reservations
            .iter()
            .filter(|(key, r)| {
                is_own(r)
                    && st
                        .machine_uids
                        .get(&format!("{}/{}", split(key).0, owner_name(r)))
                        .is_none_or(|uid| !owned_by(r, &owner_name(r), uid))
            })
            .map(|(key, _)| key.clone())
            .collect();
        for rkey in orphans {
            self.delete_reservation(&mut st, &rkey, &mut tasks);
        }
        let mut stream = self.store.watch(None, machines.revision).await?;
        let sync_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.stats.sync_us.store(sync_us, Ordering::Relaxed);
        info!(
            component = COMPONENT,
            pools = st.pools.len(),
            unbound = st.unbound.len(),
            "reservation scheduler synced"
        );
        let concurrency = self.config.concurrency.max(1);
        loop {
            let now = Instant::now();
            while let Some((at, _)) = st.timers.first() {
                if *at > now {
                    break;
                }
                if let Some((_, key)) = st.timers.pop_first() {
                    st.dirty.insert(key);
                }
            }
            for key in std::mem::take(&mut st.dirty) {
                if tasks.len() >= concurrency {
                    st.dirty.insert(key);
                    continue;
                }
                self.evaluate(&mut st, &key, now, &mut tasks);
            }
            let next = st.timers.first().map(|(at, _)| *at);
            tokio::select! {
                biased;
                () = cancel.cancelled() => {
                    while let Some(done) = tasks.join_next().await {
                        if let Ok(done) = done { self.finish(&mut st, done, &mut tasks); }
                    }
                    return Ok(());
                }
                Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                    if let Ok(done) = done {
                        self.finish(&mut st, done, &mut tasks);
                    }
                }
                ev = stream.next() => {
                    let Some(ev) = ev else {
                        return Err(store::Error::Backend("watch ended".into()));
                    };
                    let ev = ev?;
                    let deleted = ev.type_ == EventType::Deleted;
                    match ev.object.kind() {
                        Kind::Machine => self.apply_machine(&mut st, ev.object, deleted, &mut tasks),
                        Kind::MachinePool => self.apply_pool(&mut st, ev.object, deleted),
                        Kind::MachineClass => Self::apply_class(&mut st, ev.object, deleted),
                        Kind::Reservation => self.apply_reservation(&mut st, ev.object, deleted, &mut tasks),
                        _ => {}
                    }
                }
                () = sleep_until(next) => {}
            }
        }
    }

    fn apply_pool(&self, st: &mut State, obj: Object, deleted: bool) {
        let name = obj.metadata().name.clone();
        if deleted {
            st.cache.remove_pool(&name);
            st.pools.remove(&name);
            return;
        }
        if st
            .pools
            .get(&name)
            .is_some_and(|known| known.revision() > obj.revision())
        {
            return;
        }
        let supported_changed = st.pools.get(&name).is_none_or(|known| {
            pool_supports_reservations(known) != pool_supports_reservations(&obj)
        });
        let Some(info) = MachineFlavor::pool_info(&obj) else {
            return;
        };
        st.pools.insert(name, obj);
        if st.cache.upsert_pool(info) || supported_changed {
            st.mark_all_waiting();
        }
    }

    fn apply_class(st: &mut State, obj: Object, deleted: bool) {
        let name = obj.metadata().name.clone();
        if deleted {
            st.classes.remove(&name);
        } else if let Some(class) = MachineClass::from_object(obj) {
            st.classes.insert(name, class);
        }
    }

    fn apply_reservation(
        &self,
        st: &mut State,
        obj: Object,
        deleted: bool,
        tasks: &mut JoinSet<Done>,
    ) {
        let rkey = obj.key();
        let revision = obj.revision();
        if st
            .reservations
            .get(&rkey)
            .is_some_and(|known| known.metadata.resource_version.parse().unwrap_or(0) > revision)
        {
            return;
        }
        if let Some(waiters) = st.by_reservation.get(&rkey) {
            let waiters: Vec<String> = waiters.iter().cloned().collect();
            st.dirty.extend(waiters);
        }
        if deleted {
            st.reservations.remove(&rkey);
            st.bound_own.remove(&rkey);
            return;
        }
        let Some(r) = Reservation::from_object(obj) else {
            return;
        };
        let now = Instant::now();
        for p in &r.status.pools {
            if p.state == ReservationState::Rejected
                && st
                    .reservations
                    .get(&rkey)
                    .and_then(|k| k.pool_state(&p.name))
                    != Some(ReservationState::Rejected)
            {
                st.rejected_at.insert(p.name.clone(), now);
            }
        }
        let bound_here = st
            .bound_own
            .get(&rkey)
            .is_some_and(|pool| r.pool_state(pool) == Some(ReservationState::Bound));
        st.reservations.insert(rkey.clone(), r);
        if bound_here {
            debug!(component = COMPONENT, reservation = %rkey, "bound where reserved; deleting");
            self.delete_reservation(st, &rkey, tasks);
        }
    }

    fn apply_machine(&self, st: &mut State, obj: Object, deleted: bool, tasks: &mut JoinSet<Done>) {
        let key = obj.key();
        let uid = obj.metadata().uid.clone();
        let Some(m) = Machine::from_object(obj.clone()) else {
            return;
        };
        let own_rkey = format!("{}/{}", m.metadata.namespace, m.metadata.name);
        // Whether the Machine's own Reservation is known.
        let has_own = |st: &State| {
            st.reservations
                .get(&own_rkey)
                .is_some_and(|r| owned_by(r, &m.metadata.name, &uid))
        };
        if deleted {
            if st.machine_uids.get(&key) == Some(&uid) {
                st.machine_uids.remove(&key);
            }
            if st.cache.has_instance(&uid) {
                st.cache.remove_instance(&uid);
                st.mark_all_waiting();
            }
            self.forget_machine(st, &key);
            if has_own(st) {
                self.delete_reservation(st, &own_rkey, tasks);
            }
            return;
        }
        if st
            .unbound
            .get(&key)
            .is_some_and(|known| known.revision() > obj.revision())
        {
            return;
        }
        st.machine_uids.insert(key.clone(), uid.clone());
        if let Some((pool, class, demand)) = MachineFlavor::bound(&obj) {
            st.cache.add_instance(&uid, &pool, &class, demand);
            self.forget_machine(st, &key);
            let own = has_own(st);
            if own {
                let reserved_here = m
                    .metadata
                    .annotations
                    .get(RESERVATION_NAME_ANNOTATION)
                    .is_some_and(|n| *n == m.metadata.name);
                let state = st
                    .reservations
                    .get(&own_rkey)
                    .and_then(|r| r.pool_state(&pool));
                if reserved_here && state != Some(ReservationState::Bound) {
                    st.bound_own.insert(own_rkey, pool);
                } else {
                    self.delete_reservation(st, &own_rkey, tasks);
                }
            }
            return;
        }
        if m.metadata.is_deleting() {
            self.forget_machine(st, &key);
            if has_own(st) {
                self.delete_reservation(st, &own_rkey, tasks);
            }
            return;
        }
        st.unbound.insert(key.clone(), obj);
        st.dirty.insert(key);
    }

    fn forget_machine(&self, st: &mut State, key: &str) {
        st.unbound.remove(key);
        st.unask(key);
        st.waiting.remove(key);
        for waiters in st.by_reservation.values_mut() {
            waiters.remove(key);
        }
        st.by_reservation.retain(|_, w| !w.is_empty());
    }

    /// Decides for the unbound Machine `key` (see the module documentation).
    fn evaluate(&self, st: &mut State, key: &str, now: Instant, tasks: &mut JoinSet<Done>) {
        if st.inflight.contains(key) {
            return;
        }
        let Some(obj) = st.unbound.get(key).cloned() else {
            return;
        };
        let (Some(req), Some(m)) = (
            MachineFlavor::request(&obj),
            Machine::from_object(obj.clone()),
        ) else {
            return;
        };
        if st.cache.has_instance(&req.uid) {
            return;
        }
        let w = st.waiting.entry(key.to_owned()).or_insert_with(|| Waiting {
            since: now,
            deadline: None,
            retry_at: None,
            attempt: 0,
            asked: Vec::new(),
        });
        if let Some(at) = w.retry_at {
            if now < at {
                return;
            }
            w.retry_at = None;
        }
        let given = m
            .metadata
            .annotations
            .get(RESERVATION_NAME_ANNOTATION)
            .cloned();
        let own = given.is_none();
        let rname = given.unwrap_or_else(|| m.metadata.name.clone());
        let rkey = format!("{}/{}", m.metadata.namespace, rname);
        st.by_reservation
            .entry(rkey.clone())
            .or_default()
            .insert(key.to_owned());
        if st.deleting.contains(&rkey) {
            return;
        }
        let Some(r) = st.reservations.get(&rkey) else {
            if own {
                self.create_reservation(st, key, &m, &req, now, tasks);
            }
            return;
        };
        if own && !owned_by(r, &m.metadata.name, &m.metadata.uid) {
            // Left over from an earlier Machine of that name: replace it.
            self.delete_reservation(st, &rkey, tasks);
            return;
        }
        let deadline = match st.waiting.get_mut(key) {
            Some(w) => *w.deadline.get_or_insert(now + self.config.timeout),
            None => now + self.config.timeout,
        };
        // Accepted pools that pass the Machine's filters: most free first, then by name.
        let best = r
            .status
            .pools
            .iter()
            .filter(|p| p.state == ReservationState::Accepted && r.targets(&p.name))
            .filter_map(|p| Some((st.cache.eligible(&p.name, &req)?, p.name.clone())))
            .min_by_key(|(free, name)| (Reverse(*free), name.clone()));
        if let Some((_, pool)) = best {
            self.bind(st, key, &obj, &req, &pool, Some(rname), tasks);
            return;
        }
        let deciding = st.pools.iter().any(|(name, pool)| {
            pool_supports_reservations(pool)
                && r.targets(name)
                && st.cache.eligible(name, &req).is_some()
                && matches!(r.pool_state(name), None | Some(ReservationState::Pending))
        });
        if deciding && now < deadline {
            st.timers.insert((deadline, key.to_owned()));
            return;
        }
        if own && self.config.fanout > 0 && !r.spec.pools.is_empty() {
            // Every asked pool answered Rejected (or the time is up): ask the next ones.
            let asked = st
                .waiting
                .get(key)
                .map(|w| w.asked.clone())
                .unwrap_or_default();
            let mut skip = asked.clone();
            skip.extend(r.status.pools.iter().map(|p| p.name.clone()));
            let next = st.pools_to_ask(&req, self.config.fanout, &skip, now);
            if !next.is_empty() {
                // Pools still deciding (the time is up) stay asked; the rejecting ones go.
                let mut pools: Vec<String> = asked
                    .into_iter()
                    .filter(|p| {
                        r.targets(p)
                            && matches!(r.pool_state(p), None | Some(ReservationState::Pending))
                    })
                    .collect();
                pools.extend(next);
                st.ask(key, pools.clone());
                if let Some(w) = st.waiting.get_mut(key) {
                    w.deadline = None;
                }
                self.ask_next(st, key, &rkey, pools, tasks);
                return;
            }
        }
        let states: Vec<String> = r
            .status
            .pools
            .iter()
            .map(|p| format!("{}={}", p.name, p.state))
            .collect();
        let pools = &st.pools;
        let decision = st.cache.schedule_among(&req, |p| {
            pools.get(p).is_some_and(|o| !pool_supports_reservations(o))
        });
        match decision {
            Decision::Bind { pool, .. } => {
                info!(component = COMPONENT, machine = %key, %pool, "no pool accepted the reservation; binding best-effort to a pool without reservations");
                self.stats.fallbacks.fetch_add(1, Ordering::Relaxed);
                self.bind(st, key, &obj, &req, &pool, None, tasks);
            }
            Decision::Unschedulable { message, filtered } => {
                if filtered.busy > 0 {
                    st.timers
                        .insert((now + Duration::from_millis(50), key.to_owned()));
                    return;
                }
                let message = format!(
                    "no pool accepted Reservation {rkey} ({}) and no pool without reservations fits: {message}",
                    if states.is_empty() {
                        "no pool answered".to_owned()
                    } else {
                        states.join(", ")
                    }
                );
                self.stats.unschedulable.fetch_add(1, Ordering::Relaxed);
                info!(component = COMPONENT, machine = %key, %message, "OutOfCapacity");
                if self.config.emit_events {
                    let store = self.store.clone();
                    let event = out_of_capacity_event::<MachineFlavor>(&obj, message);
                    tasks.spawn(async move {
                        if let Err(err) = store.create(event).await {
                            warn!(component = COMPONENT, error = %err, "could not store event");
                        }
                        Done::Event
                    });
                }
                if own {
                    self.delete_reservation(st, &rkey, tasks);
                }
                if let Some(w) = st.waiting.get_mut(key) {
                    let delay = self
                        .config
                        .retry
                        .saturating_mul(1 << w.attempt.min(16))
                        .min(self.config.max_retry);
                    w.attempt = w.attempt.saturating_add(1);
                    w.deadline = None;
                    w.retry_at = Some(now + delay);
                    st.timers.insert((now + delay, key.to_owned()));
                }
            }
        }
    }

    fn create_reservation(
        &self,
        st: &mut State,
        key: &str,
        m: &Machine,
        req: &Request,
        now: Instant,
        tasks: &mut JoinSet<Done>,
    ) {
        let mut r = reservation_for(m, st.classes.get(&m.spec.machine_class_ref.name));
        if self.config.fanout > 0 {
            let pools = st.pools_to_ask(req, self.config.fanout, &[], now);
            if !pools.is_empty() {
                r.spec.pools.clone_from(&pools);
                st.ask(key, pools);
            }
        }
        st.inflight.insert(key.to_owned());
        self.stats.reservations.fetch_add(1, Ordering::Relaxed);
        let store = self.store.clone();
        let key = key.to_owned();
        tasks.spawn(async move {
            let (namespace, name) = (r.metadata.namespace.clone(), r.metadata.name.clone());
            let result = store.create(r.into_object()).await;
            let existing = match &result {
                Err(store::Error::AlreadyExists { .. }) => {
                    Some(store.get(Kind::Reservation, &namespace, &name).await)
                }
                _ => None,
            };
            Done::Created {
                key,
                result,
                existing,
            }
        });
    }

    /// Moves Machine `key`'s own Reservation `rkey` on to `pools` (fanout: every pool it asked
    /// rejected). The rejected pools are dropped from `spec.pools`.
    fn ask_next(
        &self,
        st: &mut State,
        key: &str,
        rkey: &str,
        pools: Vec<String>,
        tasks: &mut JoinSet<Done>,
    ) {
        let Some(r) = st.reservations.get(rkey) else {
            return;
        };
        let mut desired = r.clone();
        desired.spec.pools = pools;
        desired.metadata.resource_version.clear();
        debug!(component = COMPONENT, reservation = %rkey, pools = ?desired.spec.pools, "asked pools rejected; asking the next");
        st.inflight.insert(key.to_owned());
        let store = self.store.clone();
        let key = key.to_owned();
        tasks.spawn(async move {
            let result = store.update(desired.into_object()).await;
            Done::Asked { key, result }
        });
    }

    fn delete_reservation(&self, st: &mut State, rkey: &str, tasks: &mut JoinSet<Done>) {
        if !st.deleting.insert(rkey.to_owned()) {
            return;
        }
        st.bound_own.remove(rkey);
        let store = self.store.clone();
        let rkey = rkey.to_owned();
        tasks.spawn(async move {
            let (namespace, name) = split(&rkey);
            let result = store.delete(Kind::Reservation, namespace, name, None).await;
            Done::Deleted { rkey, result }
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn bind(
        &self,
        st: &mut State,
        key: &str,
        obj: &Object,
        req: &Request,
        pool: &str,
        reservation: Option<String>,
        tasks: &mut JoinSet<Done>,
    ) {
        let mut desired = MachineFlavor::bind(obj, pool);
        let reserved = reservation.is_some();
        let (namespace, _) = split(key);
        let rkey = reservation
            .as_ref()
            .map(|name| format!("{namespace}/{name}"));
        if let Some(name) = reservation {
            desired
                .metadata_mut()
                .annotations
                .insert(RESERVATION_NAME_ANNOTATION.to_owned(), name);
        }
        let mut updates = vec![KnownUpdate::new(obj.clone(), desired)];
        if !reserved && let Some(pool_obj) = st.pools.get(pool) {
            // Best-effort: claim the pool as the best-effort scheduler does, so that two
            // schedulers counting its capacity conflict instead of overcommitting.
            let mut claimed = pool_obj.clone();
            claimed
                .metadata_mut()
                .annotations
                .insert(BIND_ANNOTATION.to_owned(), key.to_owned());
            updates.push(KnownUpdate::new(pool_obj.clone(), claimed));
            st.cache.set_busy(pool, true);
        }
        st.cache.assume(&req.uid, pool, &req.class, req.demand);
        st.inflight.insert(key.to_owned());
        debug!(component = COMPONENT, machine = %key, %pool, reserved, "binding");
        let store = self.store.clone();
        let (key, uid, pool) = (key.to_owned(), req.uid.clone(), pool.to_owned());
        tasks.spawn(async move {
            let result = store.update_many_from(updates).await;
            let mut fresh = Vec::new();
            if result.is_err() {
                let (namespace, name) = split(&key);
                fresh.push(store.get(Kind::Machine, namespace, name).await);
                if !reserved {
                    fresh.push(store.get(Kind::MachinePool, "", &pool).await);
                }
            }
            Done::Bound {
                key,
                uid,
                pool,
                reservation: rkey,
                reserved,
                result,
                fresh,
            }
        });
    }

    /// After a Machine was bound to `pool` with the one-machine Reservation `rkey`: its
    /// `spec.pools` becomes `[pool]`, so the other pools' poollets release their holds at once
    /// (they hold nothing the Machine can use any more) instead of when the Reservation is
    /// deleted, after `Bound` has travelled up. A Reservation for more than one machine is left
    /// as it is (other Machines may still bind with it elsewhere).
    fn narrow_reservation(&self, st: &State, rkey: &str, pool: &str, tasks: &mut JoinSet<Done>) {
        let Some(r) = st.reservations.get(rkey) else {
            return;
        };
        let machines: i128 = r.class_counts().iter().map(|(_, n)| *n).sum();
        if machines != 1 || r.spec.pools == [pool] {
            return;
        }
        let store = self.store.clone();
        let (rkey, pool) = (rkey.to_owned(), pool.to_owned());
        tasks.spawn(async move {
            let (namespace, name) = split(&rkey);
            for _ in 0..5 {
                let current = match store.get_typed::<Reservation>(namespace, name).await {
                    Ok(current) => current,
                    Err(_) => break,
                };
                if current.spec.pools == [pool.as_str()] {
                    break;
                }
                let mut desired = current;
                desired.spec.pools = vec![pool.clone()];
                match store.update(desired.into_object()).await {
                    Err(store::Error::Conflict { .. }) => {}
                    Ok(_) => {
                        debug!(component = COMPONENT, reservation = %rkey, %pool, "narrowed to the bound pool");
                        break;
                    }
                    Err(err) => {
                        warn!(component = COMPONENT, reservation = %rkey, error = %err, "could not narrow the reservation");
                        break;
                    }
                }
            }
            Done::Event
        });
    }

    fn finish(&self, st: &mut State, done: Done, tasks: &mut JoinSet<Done>) {
        match done {
            Done::Event => {}
            Done::Created {
                key,
                result,
                existing,
            } => {
                st.inflight.remove(&key);
                match (result, existing) {
                    (Ok(obj), _) | (Err(_), Some(Ok(obj))) => {
                        self.apply_reservation(st, obj, false, tasks);
                    }
                    (Err(err), _) => {
                        warn!(component = COMPONENT, machine = %key, error = %err, "could not create the reservation; retrying");
                        st.timers
                            .insert((Instant::now() + self.config.retry, key.clone()));
                    }
                }
                st.dirty.insert(key);
            }
            Done::Asked { key, result } => {
                st.inflight.remove(&key);
                match result {
                    Ok(obj) => self.apply_reservation(st, obj, false, tasks),
                    Err(err) => {
                        warn!(component = COMPONENT, machine = %key, error = %err, "could not ask the next pools; retrying");
                        st.timers
                            .insert((Instant::now() + self.config.retry, key.clone()));
                    }
                }
                st.dirty.insert(key);
            }
            Done::Deleted { rkey, result } => {
                st.deleting.remove(&rkey);
                match result {
                    Ok(_) | Err(store::Error::NotFound { .. }) => {
                        st.reservations.remove(&rkey);
                        st.bound_own.remove(&rkey);
                    }
                    Err(err) => {
                        warn!(component = COMPONENT, reservation = %rkey, error = %err, "could not delete the reservation");
                    }
                }
                if let Some(waiters) = st.by_reservation.get(&rkey) {
                    let waiters: Vec<String> = waiters.iter().cloned().collect();
                    st.dirty.extend(waiters);
                }
            }
            Done::Bound {
                key,
                uid,
                pool,
                reservation,
                reserved,
                result,
                fresh,
            } => {
                st.inflight.remove(&key);
                if !reserved {
                    st.cache.set_busy(&pool, false);
                }
                match result {
                    Ok(objs) => {
                        self.stats.binds.fetch_add(1, Ordering::Relaxed);
                        if let Some(w) = st.waiting.get(&key)
                            && let Ok(mut lat) = self.stats.latencies_us.lock()
                        {
                            lat.push(
                                u64::try_from(w.since.elapsed().as_micros()).unwrap_or(u64::MAX),
                            );
                        }
                        info!(component = COMPONENT, machine = %key, %pool, reserved, "bound");
                        if let Some(rkey) = &reservation {
                            self.narrow_reservation(st, rkey, &pool, tasks);
                        }
                        for obj in objs {
                            match obj.kind() {
                                Kind::Machine => self.apply_machine(st, obj, false, tasks),
                                Kind::MachinePool => self.apply_pool(st, obj, false),
                                _ => {}
                            }
                        }
                    }
                    Err(err) => {
                        st.cache.forget(&uid);
                        if matches!(err, store::Error::Conflict { .. }) {
                            self.stats.conflicts.fetch_add(1, Ordering::Relaxed);
                        } else {
                            warn!(component = COMPONENT, machine = %key, error = %err, "bind failed");
                        }
                        for obj in fresh.into_iter().flatten() {
                            match obj.kind() {
                                Kind::Machine => self.apply_machine(st, obj, false, tasks),
                                Kind::MachinePool => self.apply_pool(st, obj, false),
                                _ => {}
                            }
                        }
                        st.dirty.insert(key);
                    }
                }
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

/// The event source component (the machine scheduler's).
const COMPONENT: &str = MachineFlavor::COMPONENT;

mod fanout;
mod spec;

pub use fanout::{REJECTED_LATELY, ask_order, ranked_asks};

use spec::{is_own, owned_by, owner_name};
pub use spec::{local_storage_bytes, pool_supports_reservations, reservation_for};
