//! The IEP-11 experiment on a [`Hierarchy`]: a fragmented hierarchy where aggregated capacity
//! says "fits" although no leaf can host the Machine, a batch of Machines applied to the upper
//! plane, and what became of them (bound where they run, bound where they are stuck, unbound),
//! with time to Running and binds per second. The acceptance test and `reservation-bench` run
//! it.
//!
//! The fragmentation is in the dimension aggregated capacity cannot express (reference §6.3):
//! local storage per machine. Every leaf offers plenty of machine slots, but only the "big"
//! leaves have the local disk a Machine needs; "small" leaves have more free slots (so
//! most-free scheduling prefers them) and too little disk, and one broker has small leaves
//! only, so its aggregated capacity is the largest of all while it can host nothing.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use futures::StreamExt as _;
use iri_mock::classes::MachineClassConfig;
use irikit_api::{
    ListOptions, Resource as _, StoreExt as _,
    compute::{self, Machine},
    meta::{LocalObjectReference, ObjectMeta},
    quantity::{Format, Quantity},
};

use crate::plane::{BrokerNodeConfig, Hierarchy, LeafConfig};

/// The class every Machine of the experiment uses.
pub const CLASS: &str = "m1";
/// Local disk each Machine needs (40 GiB).
pub const DISK_BYTES: i64 = 40 << 30;
/// Local storage of a big leaf: room for two Machines (100 GiB).
pub const BIG_LEAF_BYTES: i64 = 100 << 30;
/// Local storage of a small leaf: room for none (10 GiB).
pub const SMALL_LEAF_BYTES: i64 = 10 << 30;

fn class(quantity: i64) -> MachineClassConfig {
    MachineClassConfig::new(CLASS, 1, 1 << 30).quantity(quantity)
}

fn leaf(pool: String, quantity: i64, local_storage_bytes: i64) -> LeafConfig {
    LeafConfig {
        classes: vec![class(quantity)],
        local_storage_bytes,
        // Leaves refuse what does not fit, as a real host does.
        enforce_capacity: true,
        ..LeafConfig::new(pool)
    }
}

/// The fragmented hierarchy: `hosting` brokers, each with `big_per_broker` big leaves (2
/// Machine slots, room for 2 Machines) and two small leaves (8 slots, room for none), plus
/// one broker (`b-small`) of three small leaves. Returns the brokers and how many Machines
/// the hierarchy can host.
pub fn fragmented(hosting: usize, big_per_broker: usize) -> (Vec<BrokerNodeConfig>, usize) {
    let mut nodes = Vec::new();
    for b in 0..hosting {
        let mut leaves: Vec<LeafConfig> = (0..big_per_broker)
            .map(|i| leaf(format!("b{b}-big-{i}"), 2, BIG_LEAF_BYTES))
            .collect();
        leaves.extend((0..2).map(|i| leaf(format!("b{b}-small-{i}"), 8, SMALL_LEAF_BYTES)));
        nodes.push(BrokerNodeConfig {
            pool: format!("b{b}"),
            leaves,
        });
    }
    // More free slots than any hosting broker (2 per big leaf + 16), so that most-free
    // scheduling on aggregated capacity prefers it.
    let small_total = big_per_broker * 2 + 16 + 6;
    let per_leaf = i64::try_from(small_total.div_ceil(3)).unwrap_or(8);
    nodes.push(BrokerNodeConfig {
        pool: "b-small".to_owned(),
        leaves: (0..3)
            .map(|i| leaf(format!("bs-small-{i}"), per_leaf, SMALL_LEAF_BYTES))
            .collect(),
    });
    (nodes, hosting * big_per_broker * 2)
}

/// An upper Machine of the experiment: class [`CLASS`], one local disk of [`DISK_BYTES`].
pub fn machine(namespace: &str, name: &str) -> Machine {
    Machine {
        metadata: ObjectMeta::namespaced(namespace, name),
        spec: compute::MachineSpec {
            machine_class_ref: LocalObjectReference::new(CLASS),
            volumes: vec![compute::Volume {
                name: "root".to_owned(),
                device: Some("oda".to_owned()),
                local_disk: Some(compute::LocalDisk {
                    size_limit: Some(Quantity::from_int(DISK_BYTES, Format::BinarySI)),
                    image: String::new(),
                }),
                ..compute::Volume::default()
            }],
            ..compute::MachineSpec::default()
        },
        ..Machine::default()
    }
}

/// The `q` quantile (0..=1) of sorted `samples`, nearest rank.
fn quantile(samples: &[Duration], q: f64) -> Option<Duration> {
    let n = samples.len();
    if n == 0 {
        return None;
    }
    let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
    Some(samples[rank - 1])
}

/// What became of the Machines of one run.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Machines applied.
    pub machines: usize,
    /// Bound and Running.
    pub running: usize,
    /// Bound to a pool but not Running at the end: placed where they cannot run (stuck or
    /// failed).
    pub misplaced: usize,
    /// Not bound at the end (no pool accepted them).
    pub unbound: usize,
    /// Bound machines per upper pool.
    pub per_pool: BTreeMap<String, usize>,
    /// Time from apply to Running, per running Machine, sorted.
    pub time_to_running: Vec<Duration>,
    /// Time from apply to the bind, per bound Machine, sorted.
    pub time_to_bind: Vec<Duration>,
    /// From the first apply to the last bind.
    pub bind_span: Duration,
    /// Wall time of the run.
    pub wall: Duration,
}

impl Outcome {
    /// The `q` quantile (0..=1) of time to Running (`None` when nothing ran).
    pub fn ttr_quantile(&self, q: f64) -> Option<Duration> {
        quantile(&self.time_to_running, q)
    }

    /// The `q` quantile (0..=1) of time to the bind (`None` when nothing was bound).
    pub fn ttb_quantile(&self, q: f64) -> Option<Duration> {
        quantile(&self.time_to_bind, q)
    }

    /// Running Machines per second (those Running over the time the last one took).
    pub fn running_per_sec(&self) -> f64 {
        let secs = self
            .time_to_running
            .last()
            .map_or(0.0, Duration::as_secs_f64);
        if secs > 0.0 {
            self.running as f64 / secs
        } else {
            0.0
        }
    }

    /// Binds per second (bound Machines over the bind span).
    pub fn binds_per_sec(&self) -> f64 {
        let bound = self.running + self.misplaced;
        let secs = self.bind_span.as_secs_f64();
        if secs > 0.0 { bound as f64 / secs } else { 0.0 }
    }
}

/// Applies `n` Machines to the upper plane of `hierarchy` at once and watches them until all
/// are Running or `settle` has passed since the last change.
pub async fn run(
    hierarchy: &Hierarchy,
    namespace: &str,
    n: usize,
    settle: Duration,
    deadline: Duration,
) -> anyhow::Result<Outcome> {
    let store = hierarchy.upper().store().clone();
    // The observer watches the upper store from before the first apply, so that every bind
    // and every Running is timed when it is written, not when a poll happens to see it.
    let from = store.revision().await?;
    let mut events = store
        .watch(Some(Machine::KIND), from)
        .await
        .context("watching the upper Machines")?;
    let start = Instant::now();
    let mut applied = BTreeMap::new();
    for i in 0..n {
        let name = format!("vm-{i:04}");
        store
            .create(machine(namespace, &name).into_object())
            .await
            .with_context(|| format!("creating Machine {name}"))?;
        applied.insert(name, start.elapsed());
    }
    let mut running_at: BTreeMap<String, Duration> = BTreeMap::new();
    let mut bound_at: BTreeMap<String, Duration> = BTreeMap::new();
    let mut last_change = Instant::now();
    while running_at.len() < n && start.elapsed() < deadline {
        let quiet = settle.saturating_sub(last_change.elapsed());
        let left = deadline.saturating_sub(start.elapsed());
        let event = match tokio::time::timeout(quiet.min(left), events.next()).await {
            Err(_) => break,
            Ok(None) => anyhow::bail!("the upper store's Machine watch ended"),
            Ok(Some(event)) => event.context("watching the upper Machines")?,
        };
        let now = start.elapsed();
        let Some(m) = Machine::from_object(event.object) else {
            continue;
        };
        if m.metadata.namespace != namespace {
            continue;
        }
        let name = &m.metadata.name;
        if m.spec.machine_pool_ref.is_some() && !bound_at.contains_key(name) {
            bound_at.insert(name.clone(), now);
            last_change = Instant::now();
        }
        if m.status.state == "Running" && !running_at.contains_key(name) {
            running_at.insert(name.clone(), now);
            last_change = Instant::now();
        }
    }
    let (last, _) = store
        .list_typed::<Machine>(&ListOptions::default().in_namespace(namespace))
        .await?;
    let mut outcome = Outcome {
        machines: n,
        wall: start.elapsed(),
        ..Outcome::default()
    };
    for m in &last {
        match &m.spec.machine_pool_ref {
            Some(pool) => {
                *outcome.per_pool.entry(pool.name.clone()).or_default() += 1;
                if m.status.state == "Running" {
                    outcome.running += 1;
                } else {
                    outcome.misplaced += 1;
                }
            }
            None => outcome.unbound += 1,
        }
    }
    outcome.time_to_running = running_at
        .iter()
        .filter_map(|(name, at)| applied.get(name).map(|t0| at.saturating_sub(*t0)))
        .collect();
    outcome.time_to_running.sort();
    outcome.time_to_bind = bound_at
        .iter()
        .filter_map(|(name, at)| applied.get(name).map(|t0| at.saturating_sub(*t0)))
        .collect();
    outcome.time_to_bind.sort();
    outcome.bind_span = bound_at.values().max().copied().unwrap_or_default();
    Ok(outcome)
}
