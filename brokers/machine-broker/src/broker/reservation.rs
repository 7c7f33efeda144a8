//! The broker's ReservationRuntime (irikit's IEP-11 extension): IRI reservations as lower
//! Reservations in the broker's namespace, their state from the lower pools' answers, and the
//! hold a machine create consumes.

use std::{
    sync::{Mutex, PoisonError},
    time::Instant,
};

use futures::StreamExt as _;
use irikit_api::store::EventType;
use tracing::debug;

use super::*;

/// Whether lower pool `p` serves reservations (its poollet's annotation).
fn supports_reservations(p: &MachinePool) -> bool {
    p.metadata
        .annotations
        .get(api_rsv::RESERVATION_SUPPORTED_ANNOTATION)
        .map(String::as_str)
        == Some("true")
}

/// The broker's open asks of some pools, counted while it lives.
struct Asking<'a> {
    counts: &'a Mutex<HashMap<String, usize>>,
    pools: Vec<String>,
}

impl<'a> Asking<'a> {
    fn new(counts: &'a Mutex<HashMap<String, usize>>, pools: &[String]) -> Self {
        let mut map = counts.lock().unwrap_or_else(PoisonError::into_inner);
        for p in pools {
            *map.entry(p.clone()).or_default() += 1;
        }
        Asking {
            counts,
            pools: pools.to_vec(),
        }
    }
}

impl Drop for Asking<'_> {
    fn drop(&mut self) {
        let mut map = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        for p in &self.pools {
            if let Some(n) = map.get_mut(p) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    map.remove(p);
                }
            }
        }
    }
}

impl Broker {
    pub(super) async fn reservation(&self, id: &str) -> Result<Reservation> {
        required(id, "reservation_id")?;
        match self.store.get_typed::<Reservation>(self.ns(), id).await {
            // A Machine's own reservation (reserve_unreserved) is no IRI reservation.
            Ok(r)
                if managed(&r.metadata)
                    && !r.metadata.labels.contains_key(convert::MACHINE_LABEL) =>
            {
                Ok(r)
            }
            Ok(_) => Err(invalid(format!("reservation {id:?} isn't managed"))),
            Err(e) if is_not_found(&e) => {
                Err(Error::NotFound(format!("reservation {id:?} not found")))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The IRI state of lower Reservation `r`: any pool Bound → BOUND, else any pool it still
    /// asks Accepted → ACCEPTED (a pool dropped from `spec.pools` released its hold, whatever
    /// its last answer says), else every candidate pool (selected, asked, serving reservations)
    /// Rejected → REJECTED (also when there is no candidate at all), else PENDING.
    pub fn reservation_state(r: &Reservation, pools: &[MachinePool]) -> rsv::ReservationState {
        if r.status
            .pools
            .iter()
            .any(|p| p.state == ReservationState::Bound)
        {
            return rsv::ReservationState::ReservationBound;
        }
        if r.status
            .pools
            .iter()
            .any(|p| p.state == ReservationState::Accepted && r.targets(&p.name))
        {
            return rsv::ReservationState::ReservationAccepted;
        }
        if pools
            .iter()
            .filter(|p| r.targets(&p.metadata.name) && supports_reservations(p))
            .all(|p| r.pool_state(&p.metadata.name) == Some(ReservationState::Rejected))
        {
            return rsv::ReservationState::ReservationRejected;
        }
        rsv::ReservationState::ReservationPending
    }

    fn iri_reservation(r: &Reservation, pools: &[MachinePool]) -> rsv::Reservation {
        let mut spec = r.spec.to_iri().unwrap_or_default();
        spec.machine_classes.retain(|_, n| *n > 0);
        rsv::Reservation {
            metadata: Some(convert::iri_metadata(&r.metadata)),
            spec: Some(spec),
            status: Some(rsv::ReservationStatus {
                state: Self::reservation_state(r, pools) as i32,
            }),
        }
    }

    /// The lower Machines placed against lower Reservation `r` (deleting ones excluded).
    async fn consumers(&self, r: &Reservation) -> Result<Vec<Machine>> {
        let (machines, _) = self
            .store
            .list_typed::<Machine>(&self.managed_list())
            .await?;
        Ok(machines
            .into_iter()
            .filter(|m| !m.metadata.is_deleting())
            .filter(|m| {
                m.metadata
                    .annotations
                    .get(api_rsv::RESERVATION_NAME_ANNOTATION)
                    == Some(&r.metadata.name)
            })
            .collect())
    }

    /// A CreateMachine may consume reservation `r` only while it is ACCEPTED and has machines
    /// left (its class counts minus the Machines already placed against it), as a leaf's.
    pub(super) async fn check_consumable(&self, r: &Reservation) -> Result<()> {
        let pools = self.pools().await?;
        let state = Self::reservation_state(r, &pools);
        if state != rsv::ReservationState::ReservationAccepted {
            return Err(Error::FailedPrecondition(format!(
                "reservation {:?} is {}, not RESERVATION_ACCEPTED",
                r.metadata.name,
                state.as_str_name()
            )));
        }
        let total: i128 = r.class_counts().iter().map(|(_, n)| *n).sum();
        if total > 0 {
            let used = self.consumers(r).await?.len();
            if i128::try_from(used).unwrap_or(i128::MAX) >= total {
                return Err(Error::FailedPrecondition(format!(
                    "reservation {:?} holds no more machines ({used} of {total} placed)",
                    r.metadata.name
                )));
            }
        }
        Ok(())
    }

    /// The pool a Machine against lower Reservation `r` goes to: the pool of an earlier
    /// Machine of the same reservation that the pool still accepts (a reservation of several
    /// machines is consumed on one pool), else the first pool that accepted; `None` (the
    /// lower scheduler decides) when no pool accepted yet.
    pub(super) async fn pick_pool(&self, r: &Reservation) -> Result<Option<String>> {
        let accepted: Vec<&str> = r
            .status
            .pools
            .iter()
            .filter(|p| p.state == ReservationState::Accepted && r.targets(&p.name))
            .map(|p| p.name.as_str())
            .collect();
        if accepted.is_empty() {
            return Ok(None);
        }
        let siblings = self.consumers(r).await?;
        let sibling_pool = siblings
            .iter()
            .filter_map(|m| m.spec.machine_pool_ref.as_ref())
            .map(|p| p.name.as_str())
            .find(|p| accepted.contains(p));
        Ok(Some(sibling_pool.unwrap_or(accepted[0]).to_owned()))
    }

    /// Reserves one machine of `spec` for the lower Machine `name` (see
    /// [`BrokerConfig::reserve_unreserved`]): the accepted lower Reservation, `None` when no
    /// selected pool serves reservations or none decided in time (the Machine is then placed
    /// best-effort), `ResourceExhausted` when every pool rejected.
    pub(super) async fn reserve_for(
        &self,
        name: &str,
        spec: &machine::MachineSpec,
    ) -> Result<Option<Reservation>> {
        let pools = self.pools().await?;
        let supported = pools.iter().any(supports_reservations);
        if !supported {
            return Ok(None);
        }
        let mut resources = irikit_api::ResourceList::new();
        resources.insert(
            compute::class_resource(&spec.class),
            Quantity::from_int(1, Format::DecimalSI),
        );
        let local: i64 = spec
            .volumes
            .iter()
            .filter_map(|v| v.local_disk.as_ref())
            .map(|d| d.size_bytes.max(0))
            .fold(0, i64::saturating_add);
        if local > 0 {
            resources.insert(
                api_rsv::LOCAL_STORAGE_RESOURCE.to_owned(),
                Quantity::from_int(local, Format::BinarySI),
            );
        }
        let mut md = convert::dependent_meta(self.ns(), name, &format!("{name}-r"));
        md.annotations.insert(
            convert::CREATED_AT_ANNOTATION.to_owned(),
            convert::now_nanos().to_string(),
        );
        let mut lower = Reservation {
            metadata: md,
            ..Reservation::default()
        };
        lower.spec.resources = resources;
        let (r, state) = self.reserve_lower(lower, &pools).await?;
        match state {
            rsv::ReservationState::ReservationAccepted => Ok(Some(r)),
            rsv::ReservationState::ReservationRejected => {
                self.delete_lower_reservation(&r.metadata.name).await?;
                Err(Error::ResourceExhausted(format!(
                    "no lower pool can host a {:?} machine",
                    spec.class
                )))
            }
            _ => {
                self.delete_lower_reservation(&r.metadata.name).await?;
                Ok(None)
            }
        }
    }

    pub(super) async fn delete_lower_reservation(&self, name: &str) -> Result<()> {
        match self
            .store
            .delete(Kind::Reservation, self.ns(), name, None)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Creates lower Reservation `lower` and waits, up to the decision timeout, for the lower
    /// pools to decide (see [`BrokerConfig::reservation_fanout`]): asks the most free
    /// candidates first and the next ones when all asked rejected, and keeps only the first
    /// pool that accepted. Returns the Reservation's last version and its state.
    pub(super) async fn reserve_lower(
        &self,
        mut lower: Reservation,
        pools: &[MachinePool],
    ) -> Result<(Reservation, rsv::ReservationState)> {
        let deadline = tokio::time::Instant::now() + self.config.reservation_decision_timeout;
        let selected = !self.config.pool_selector.is_empty();
        let held = self.held().await?;
        let (candidates, promising) = self.spread(&lower, pools, &held);
        let fanout = self.config.reservation_fanout;
        // In turns (fanout) unless no pool looks able to accept: then all at once.
        let mut next = if fanout > 0 && candidates.len() > fanout && promising > 0 {
            lower.spec.pools = candidates[..fanout].to_vec();
            fanout
        } else {
            if selected {
                lower.spec.pools = pools.iter().map(|p| p.metadata.name.clone()).collect();
            }
            candidates.len()
        };
        if lower.spec.pools.is_empty() && selected {
            // No selected pool: nobody could answer; an empty list would ask every pool.
            lower.spec.pools.push("no-pool-selected".to_owned());
        }
        let asked = if lower.spec.pools.is_empty() {
            &candidates
        } else {
            &lower.spec.pools
        };
        let mut asking = vec![Asking::new(&self.asking, asked)];
        let created = self.store.create_typed(lower).await?;
        let name = created.metadata.name.clone();
        let mut events = self
            .store
            .watch(
                Some(Kind::Reservation),
                created.metadata.resource_version.parse().unwrap_or(0),
            )
            .await?;
        let mut current = created;
        loop {
            self.note_rejections(&current);
            let state = Self::reservation_state(&current, pools);
            match state {
                rsv::ReservationState::ReservationAccepted => {
                    return Ok((self.keep_first_accepted(current).await?, state));
                }
                rsv::ReservationState::ReservationRejected if next < candidates.len() => {
                    // In turns while pools look free; the ones that look full or rejected
                    // lately all in one last turn.
                    let width = if next < promising {
                        fanout.max(1)
                    } else {
                        candidates.len()
                    };
                    let ask: Vec<String> = candidates[next..].iter().take(width).cloned().collect();
                    next += ask.len();
                    debug!(reservation = %name, pools = ?ask, "all asked pools rejected; asking the next");
                    asking.push(Asking::new(&self.asking, &ask));
                    current = self.set_pools(current, ask).await?;
                    continue;
                }
                rsv::ReservationState::ReservationPending => {}
                _ => return Ok((current, state)),
            }
            // The lower poollets' answers arrive as writes to the Reservation.
            let event = tokio::time::timeout_at(deadline, events.next()).await;
            match event {
                Err(_) => return Ok((current, state)),
                Ok(None) => {
                    return Err(irikit_api::store::Error::Backend(
                        "lower store watch ended".into(),
                    )
                    .into());
                }
                Ok(Some(Err(e))) => return Err(e.into()),
                Ok(Some(Ok(ev))) => {
                    let obj = &ev.object;
                    if obj.metadata().name != name || obj.metadata().namespace != self.ns() {
                        continue;
                    }
                    if ev.type_ == EventType::Deleted {
                        return Err(Error::NotFound(format!("reservation {name:?} not found")));
                    }
                    if let Some(r) = Reservation::from_object(obj.clone()) {
                        current = r;
                    }
                }
            }
        }
    }

    /// Remembers when the pools asked by `r` rejected it.
    fn note_rejections(&self, r: &Reservation) {
        let now = Instant::now();
        let mut rejected = self
            .rejected_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for p in &r.status.pools {
            if p.state == ReservationState::Rejected && r.targets(&p.name) {
                rejected.insert(p.name.clone(), now);
            }
        }
    }

    /// Lower pool → the broker's lower Reservations it holds now (Accepted there, not yet
    /// Bound, not deleting). A pool's allocatable counts the Machines bound to it but not the
    /// holds: a leaf whose every slot is held looks free until its Machines arrive, and
    /// Reservations asked one pool at a time would walk through every such leaf.
    async fn held(&self) -> Result<HashMap<String, usize>> {
        let (reservations, _) = self
            .store
            .list_typed::<Reservation>(&self.managed_list())
            .await?;
        let mut held: HashMap<String, usize> = HashMap::new();
        for r in reservations.iter().filter(|r| !r.metadata.is_deleting()) {
            for p in &r.status.pools {
                if p.state == ReservationState::Accepted && r.targets(&p.name) {
                    *held.entry(p.name.clone()).or_default() += 1;
                }
            }
        }
        Ok(held)
    }

    /// The pools lower Reservation `r` may ask, in the order to ask them: serving
    /// reservations, among those `r` targets; those that rejected a reservation in the last
    /// second after the others; most allocatable machines of `r`'s classes less the
    /// broker's open asks and the holds there (`held`) first; then by name.
    /// Also returns how many of the first look able to accept
    /// ([`scheduler::reservation::ranked_asks`]).
    fn spread(
        &self,
        r: &Reservation,
        pools: &[MachinePool],
        held: &HashMap<String, usize>,
    ) -> (Vec<String>, usize) {
        let rejected = self
            .rejected_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut asking = self
            .asking
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for (pool, n) in held {
            *asking.entry(pool.clone()).or_default() += n;
        }
        let classes = r.class_counts();
        let candidates = pools
            .iter()
            .filter(|p| supports_reservations(p) && r.targets(&p.metadata.name))
            .map(|p| {
                let free = classes
                    .iter()
                    .map(|(class, _)| {
                        p.status
                            .allocatable
                            .get(&compute::class_resource(class))
                            .map_or(0, |q| q.value())
                    })
                    .min()
                    .unwrap_or(0);
                (p.metadata.name.as_str(), free)
            });
        scheduler::reservation::ranked_asks(candidates, &asking, &rejected, Instant::now())
    }

    /// Narrows accepted lower Reservation `r` to its first accepted pool (by name), so that
    /// the other asked pools release their holds now.
    async fn keep_first_accepted(&self, r: Reservation) -> Result<Reservation> {
        let Some(pool) = r
            .status
            .pools
            .iter()
            .filter(|p| p.state == ReservationState::Accepted && r.targets(&p.name))
            .map(|p| p.name.clone())
            .min()
        else {
            return Ok(r);
        };
        if r.spec.pools == [pool.as_str()] {
            return Ok(r);
        }
        self.set_pools(r, vec![pool]).await
    }

    /// Sets `spec.pools` of lower Reservation `r` (the poollets' status writes in between are
    /// kept: a spec update leaves the status alone).
    async fn set_pools(&self, r: Reservation, pools: Vec<String>) -> Result<Reservation> {
        let mut desired = r;
        desired.spec.pools = pools;
        desired.metadata.resource_version.clear();
        Ok(self.store.update_typed(desired).await?)
    }

    /// `CreateReservation`: a lower Reservation (all selected pools asked); waits up to the
    /// decision timeout for the lower pools to decide.
    pub async fn create_reservation(
        &self,
        r: Option<rsv::Reservation>,
    ) -> Result<rsv::Reservation> {
        let r = r.ok_or_else(|| invalid("reservation is required"))?;
        let spec = r
            .spec
            .as_ref()
            .ok_or_else(|| invalid("reservation.spec is required"))?;
        let classes = self.classes().await?;
        iri_spec::reservation::ledger::validate_spec(spec, |c| classes.contains_key(c))
            .map_err(|e| invalid(e.to_string()))?;
        let mut resources = irikit_api::ResourceList::new();
        for (class, n) in &spec.machine_classes {
            resources.insert(
                compute::class_resource(class),
                Quantity::from_int(*n, Format::DecimalSI),
            );
        }
        if spec.cpu_millis > 0 {
            resources.insert(
                api_rsv::CPU_RESOURCE.to_owned(),
                Quantity::from_milli(spec.cpu_millis),
            );
        }
        if spec.memory_bytes > 0 {
            resources.insert(
                api_rsv::MEMORY_RESOURCE.to_owned(),
                Quantity::from_int(spec.memory_bytes, Format::BinarySI),
            );
        }
        if spec.local_storage_bytes_per_machine > 0 {
            resources.insert(
                api_rsv::LOCAL_STORAGE_RESOURCE.to_owned(),
                Quantity::from_int(spec.local_storage_bytes_per_machine, Format::BinarySI),
            );
        }
        let md = r.metadata.unwrap_or_default();
        let name = convert::new_id();
        let mut lower = Reservation {
            metadata: convert::lower_meta(self.ns(), &name, &md),
            ..Reservation::default()
        };
        lower.spec.resources = resources;
        let pools = self.pools().await?;
        let (current, _) = self.reserve_lower(lower, &pools).await?;
        info!(reservation.id = %name, "reservation created");
        let pools = self.pools().await?;
        Ok(Self::iri_reservation(&current, &pools))
    }

    /// `ListReservations`.
    pub async fn list_reservations(
        &self,
        filter: Option<rsv::ReservationFilter>,
    ) -> Result<Vec<rsv::Reservation>> {
        let filter = filter.unwrap_or_default();
        let items = self
            .list_or_get(&filter.id, || self.reservation(&filter.id))
            .await?;
        let pools = self.pools().await?;
        Ok(items
            .iter()
            .filter(|r| !r.metadata.labels.contains_key(convert::MACHINE_LABEL))
            .map(|r| Self::iri_reservation(r, &pools))
            .filter(|r| {
                let labels = r.metadata.as_ref().map(|md| &md.labels);
                filter
                    .label_selector
                    .iter()
                    .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
            })
            .collect())
    }

    /// `DeleteReservation`.
    pub async fn delete_reservation(&self, id: &str) -> Result<()> {
        self.reservation(id).await?;
        match self
            .store
            .delete(Kind::Reservation, self.ns(), id, None)
            .await
        {
            Ok(_) => {
                info!(reservation.id = %id, "reservation deleted");
                Ok(())
            }
            Err(e) if is_not_found(&e) => {
                Err(Error::NotFound(format!("reservation {id:?} not found")))
            }
            Err(e) => Err(e.into()),
        }
    }
}
