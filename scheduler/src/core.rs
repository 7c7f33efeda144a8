//! The pure scheduling core: a snapshot of pools and bindings (the [`Cache`]) plus a request
//! in, a [`Decision`] out. No IO, no clock.
//!
//! **Capacity is counted once.** IronCore's scheduler takes the pool's `status.allocatable`
//! (which the poollet already reduced by the machines bound to the pool) and subtracts every
//! cached machine again, so a live pool fills at about half its capacity (reference §5.1,
//! §8.2). Here the headroom of a pool for a class is `status.capacity[class]` minus the demand
//! of every instance bound to or assumed on that pool — each machine counts exactly once.
//! A pool that publishes no `capacity` entry for a class but an `allocatable` one (hand-made
//! pools, as in IronCore's own scheduler tests) is read as having that allocatable as capacity.
//!
//! **Speed.** For every class the cache keeps the eligible (Ready) pools in a `BTreeSet`
//! ordered by (free desc, name asc), so a decision walks from the pool with the most headroom
//! and stops at the first one that passes the taint and selector filters: O(log pools) per
//! bind when filters pass, never a scan of all pools unless the request is unschedulable.

use std::{
    cmp::Reverse,
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    sync::Arc,
};

use irikit_api::meta::{Taint, Toleration, selector_matches, tolerates_all};
use serde::Serialize;

/// What the scheduler needs to know about a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolInfo {
    /// Pool name.
    pub name: String,
    /// Pool labels (matched by the object's pool selector).
    pub labels: BTreeMap<String, String>,
    /// Pool taints (all must be tolerated, regardless of effect).
    pub taints: Vec<Taint>,
    /// Whether the pool passes the Ready filter.
    pub ready: bool,
    /// Capacity per class name (count of machines, or bytes for volumes).
    pub capacity: BTreeMap<String, i128>,
}

/// An object to place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `namespace/name`, for messages.
    pub key: String,
    /// Object uid (the cache key of instances).
    pub uid: String,
    /// Class name.
    pub class: String,
    /// How much of the class capacity the object uses (1 per machine, bytes per volume).
    pub demand: i128,
    /// Equality selector on pool labels.
    pub selector: BTreeMap<String, String>,
    /// Tolerations.
    pub tolerations: Vec<Toleration>,
}

/// How many pools each filter removed (for OutOfCapacity messages and tests).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Filtered {
    /// Pools known.
    pub pools: usize,
    /// Removed by the Ready filter.
    pub not_ready: usize,
    /// Removed by taints.
    pub taints: usize,
    /// Removed by the pool selector.
    pub selector: usize,
    /// No capacity entry for the class.
    pub class_unsupported: usize,
    /// Not enough free capacity.
    pub insufficient: usize,
    /// Skipped because a bind to the pool is in flight (retried, no event).
    pub busy: usize,
    /// Not a candidate of [`Cache::schedule_among`] (in reservation mode: the pool serves
    /// reservations, so it is no best-effort candidate).
    #[serde(skip_serializing_if = "is_zero")]
    pub excluded: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// The outcome of one scheduling decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "decision")]
pub enum Decision {
    /// Bind to `pool`, which had `free` headroom for the class before this bind.
    Bind {
        /// Chosen pool.
        pool: String,
        /// Headroom before the bind.
        free: i128,
    },
    /// No pool fits.
    Unschedulable {
        /// IronCore's event message plus per-filter counts.
        message: String,
        /// Per-filter counts.
        filtered: Filtered,
    },
}

#[derive(Debug, Clone)]
struct Instance {
    pool: String,
    class: String,
    demand: i128,
    assumed: bool,
}

/// Pools ordered by (free desc, name asc).
type Headroom = BTreeSet<(Reverse<i128>, Arc<str>)>;

/// The scheduler's snapshot of pools and bindings, with a headroom index per class.
#[derive(Debug, Default)]
pub struct Cache {
    pools: HashMap<String, (Arc<str>, PoolInfo)>,
    /// pool → class → demand of bound + assumed instances.
    used: HashMap<String, HashMap<String, i128>>,
    instances: HashMap<String, Instance>,
    /// class → eligible pools ordered by (free desc, name asc).
    index: HashMap<String, Headroom>,
    /// Pools with a bind in flight (skipped until it completes).
    busy: HashSet<String>,
}

impl Cache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a cache from pools and bindings (`(uid, pool, class, demand)`).
    pub fn from_snapshot(
        pools: impl IntoIterator<Item = PoolInfo>,
        bindings: &[(&str, &str, &str, i128)],
    ) -> Self {
        let mut cache = Self::new();
        for pool in pools {
            cache.upsert_pool(pool);
        }
        for (uid, pool, class, demand) in bindings {
            cache.add_instance(uid, pool, class, *demand);
        }
        cache
    }

    fn free_of(&self, pool: &PoolInfo, class: &str) -> Option<i128> {
        let capacity = *pool.capacity.get(class)?;
        let used = self
            .used
            .get(pool.name.as_str())
            .and_then(|m| m.get(class))
            .copied()
            .unwrap_or(0);
        Some(capacity - used)
    }

    /// Headroom of `pool` for `class` (`None` if unknown pool or unsupported class).
    pub fn free(&self, pool: &str, class: &str) -> Option<i128> {
        self.free_of(&self.pools.get(pool)?.1, class)
    }

    fn unindex(&mut self, pool: &str, class: &str) {
        let Some((name, info)) = self.pools.get(pool) else {
            return;
        };
        let Some(free) = self.free_of(info, class) else {
            return;
        };
        let key = (Reverse(free), name.clone());
        if let Some(set) = self.index.get_mut(class) {
            set.remove(&key);
        }
    }

    fn reindex(&mut self, pool: &str, class: &str) {
        let Some((name, info)) = self.pools.get(pool) else {
            return;
        };
        if !info.ready {
            return;
        }
        let Some(free) = self.free_of(info, class) else {
            return;
        };
        let key = (Reverse(free), name.clone());
        match self.index.get_mut(class) {
            Some(set) => {
                set.insert(key);
            }
            None => {
                self.index.insert(class.to_string(), BTreeSet::from([key]));
            }
        }
    }

    fn classes_of(&self, name: &str) -> Vec<String> {
        self.pools
            .get(name)
            .map(|p| p.1.capacity.keys().cloned().collect())
            .unwrap_or_default()
    }

    fn unindex_pool(&mut self, name: &str) {
        for class in self.classes_of(name) {
            self.unindex(name, &class);
        }
    }

    fn reindex_pool(&mut self, name: &str) {
        for class in self.classes_of(name) {
            self.reindex(name, &class);
        }
    }

    /// Adds or replaces a pool. Returns whether anything that affects decisions changed.
    pub fn upsert_pool(&mut self, info: PoolInfo) -> bool {
        if self.pools.get(&info.name).is_some_and(|p| p.1 == info) {
            return false;
        }
        let name = info.name.clone();
        self.unindex_pool(&name);
        let arc: Arc<str> = Arc::from(name.as_str());
        self.pools.insert(name.clone(), (arc, info));
        self.reindex_pool(&name);
        true
    }

    /// Removes a pool (its instances stay counted until they are removed).
    pub fn remove_pool(&mut self, name: &str) {
        self.unindex_pool(name);
        self.pools.remove(name);
        self.busy.remove(name);
    }

    /// Number of pools.
    pub fn pool_count(&self) -> usize {
        self.pools.len()
    }

    fn add_used(&mut self, pool: &str, class: &str, delta: i128) {
        self.unindex(pool, class);
        if !self.used.contains_key(pool) {
            self.used.insert(pool.to_string(), HashMap::new());
        }
        if let Some(per_class) = self.used.get_mut(pool) {
            match per_class.get_mut(class) {
                Some(v) => *v += delta,
                None => {
                    per_class.insert(class.to_string(), delta);
                }
            }
        }
        self.reindex(pool, class);
    }

    fn insert_instance(&mut self, uid: &str, pool: &str, class: &str, demand: i128, assumed: bool) {
        self.remove_instance(uid);
        self.add_used(pool, class, demand);
        self.instances.insert(
            uid.to_string(),
            Instance {
                pool: pool.to_string(),
                class: class.to_string(),
                demand,
                assumed,
            },
        );
    }

    /// Records a bound instance (replaces an assumed one with the same uid).
    pub fn add_instance(&mut self, uid: &str, pool: &str, class: &str, demand: i128) {
        if let Some(existing) = self.instances.get_mut(uid)
            && existing.pool == pool
            && existing.class == class
            && existing.demand == demand
        {
            existing.assumed = false;
            return;
        }
        self.insert_instance(uid, pool, class, demand, false);
    }

    /// Assumes an instance on a pool before its bind is confirmed (stops bursts from
    /// overcommitting).
    pub fn assume(&mut self, uid: &str, pool: &str, class: &str, demand: i128) {
        self.insert_instance(uid, pool, class, demand, true);
    }

    /// Drops an assumed instance after a failed bind (bound instances are kept).
    pub fn forget(&mut self, uid: &str) {
        if self.instances.get(uid).is_some_and(|i| i.assumed) {
            self.remove_instance(uid);
        }
    }

    /// Removes an instance (object deleted).
    pub fn remove_instance(&mut self, uid: &str) {
        if let Some(old) = self.instances.remove(uid) {
            self.add_used(&old.pool, &old.class, -old.demand);
        }
    }

    /// Whether `uid` is known (bound or assumed).
    pub fn has_instance(&self, uid: &str) -> bool {
        self.instances.contains_key(uid)
    }

    /// Marks a pool busy (a bind is in flight) or not.
    pub fn set_busy(&mut self, pool: &str, busy: bool) {
        if busy {
            self.busy.insert(pool.to_string());
        } else {
            self.busy.remove(pool);
        }
    }

    /// Whether any pool is busy.
    pub fn any_busy(&self) -> bool {
        !self.busy.is_empty()
    }

    fn passes(&self, pool: &PoolInfo, req: &Request) -> bool {
        tolerates_all(&req.tolerations, &pool.taints)
            && selector_matches(&req.selector, &pool.labels)
    }

    /// Decides where `req` goes: the Ready pool that tolerates, matches and fits with the most
    /// free capacity; ties go to the smallest pool name.
    pub fn schedule(&self, req: &Request) -> Decision {
        self.pick(req, |_| true)
            .unwrap_or_else(|| self.explain(req))
    }

    /// The pool with the most free capacity for `req` that `allowed` accepts, is not busy and
    /// passes the filters (ties: smallest name); `None` when there is none.
    fn pick(&self, req: &Request, allowed: impl Fn(&str) -> bool) -> Option<Decision> {
        let set = self.index.get(&req.class)?;
        for (Reverse(free), name) in set {
            if *free < req.demand || *free <= 0 {
                break;
            }
            if !allowed(name) || (!self.busy.is_empty() && self.busy.contains(name.as_ref())) {
                continue;
            }
            let Some((_, pool)) = self.pools.get(name.as_ref()) else {
                continue;
            };
            if self.passes(pool, req) {
                return Some(Decision::Bind {
                    pool: name.to_string(),
                    free: *free,
                });
            }
        }
        None
    }

    /// The headroom of `pool` for `req`'s class when the pool is known, Ready, tolerated,
    /// matched by the selector and offers the class (`None` otherwise). Busy pools and pools
    /// without free capacity are included: reservation mode uses this for pools that already
    /// hold the capacity for the request.
    pub fn eligible(&self, pool: &str, req: &Request) -> Option<i128> {
        let (_, info) = self.pools.get(pool)?;
        if !info.ready || !self.passes(info, req) {
            return None;
        }
        self.free_of(info, &req.class)
    }

    /// Like [`Cache::schedule`], among the pools `allowed` accepts only.
    pub fn schedule_among(&self, req: &Request, allowed: impl Fn(&str) -> bool) -> Decision {
        self.pick(req, &allowed)
            .unwrap_or_else(|| self.explain_among(req, &allowed))
    }

    fn explain(&self, req: &Request) -> Decision {
        self.explain_among(req, &|_: &str| true)
    }

    fn explain_among(&self, req: &Request, allowed: &dyn Fn(&str) -> bool) -> Decision {
        let mut filtered = Filtered {
            pools: self.pools.len(),
            ..Filtered::default()
        };
        for (_, pool) in self.pools.values() {
            if !allowed(&pool.name) {
                filtered.excluded += 1;
            } else if !pool.ready {
                filtered.not_ready += 1;
            } else if !tolerates_all(&req.tolerations, &pool.taints) {
                filtered.taints += 1;
            } else if !selector_matches(&req.selector, &pool.labels) {
                filtered.selector += 1;
            } else {
                match self.free_of(pool, &req.class) {
                    None => filtered.class_unsupported += 1,
                    Some(free) if free < req.demand || free <= 0 => filtered.insufficient += 1,
                    Some(_) => filtered.busy += 1,
                }
            }
        }
        let message = if filtered.pools == 0 {
            format!("No nodes available to schedule {} on", req.key)
        } else {
            let mut reasons = Vec::new();
            for (n, what) in [
                (filtered.not_ready, "not ready"),
                (filtered.taints, "had untolerated taints"),
                (filtered.selector, "did not match the pool selector"),
                (filtered.class_unsupported, "do not offer the class"),
                (filtered.insufficient, "had insufficient capacity"),
                (filtered.busy, "were busy"),
                (filtered.excluded, "serve reservations"),
            ] {
                if n > 0 {
                    reasons.push(format!("{n} {what}"));
                }
            }
            format!(
                "No nodes available after filtering to schedule {} on: 0/{} pools available for class {:?}: {}",
                req.key,
                filtered.pools,
                req.class,
                reasons.join(", ")
            )
        };
        Decision::Unschedulable { message, filtered }
    }
}
