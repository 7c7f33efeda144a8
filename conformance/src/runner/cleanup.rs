//! What a run leaves on the runtime: leftovers of earlier runs found at start, and the final
//! cleanup that deletes every object of the run (by run-id label and by recorded id) within a
//! budget, typed by object kind.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use iri_spec::{
    bucket::v1alpha1 as bucket, machine::v1alpha1 as machine, volume::v1alpha1 as volume,
};
use tokio::task::JoinSet;
use tonic::{Code, Status};

use crate::{
    ctx::{Clients, Created, RUN_ID_LABEL, RuntimeKind},
    report::CleanupReport,
};

/// One object a run (or an earlier one) left on the runtime, typed by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum ObjectKind {
    Bucket,
    Machine,
    Reservation,
    Volume,
    VolumeSnapshot,
}

impl ObjectKind {
    /// The kind in leftover and cleanup reports.
    pub(super) fn slug(self) -> &'static str {
        match self {
            ObjectKind::Bucket => bucket::Bucket::SLUG,
            ObjectKind::Machine => machine::Machine::SLUG,
            ObjectKind::Reservation => "reservation",
            ObjectKind::Volume => volume::Volume::SLUG,
            ObjectKind::VolumeSnapshot => volume::VolumeSnapshot::SLUG,
        }
    }

    /// Deletes object `id` of this kind (OK where the runtime has no endpoint for it).
    pub(super) async fn delete(
        self,
        clients: &Clients,
        id: String,
        d: Duration,
    ) -> Result<(), Status> {
        async fn delete<T: RuntimeKind>(
            clients: &Clients,
            id: String,
            d: Duration,
        ) -> Result<(), Status> {
            if T::served(clients) {
                T::delete(clients, d, id).await
            } else {
                Ok(())
            }
        }
        match self {
            ObjectKind::Bucket => delete::<bucket::Bucket>(clients, id, d).await,
            ObjectKind::Machine => delete::<machine::Machine>(clients, id, d).await,
            ObjectKind::Volume => delete::<volume::Volume>(clients, id, d).await,
            ObjectKind::VolumeSnapshot => delete::<volume::VolumeSnapshot>(clients, id, d).await,
            ObjectKind::Reservation => match clients.reservation.clone() {
                Some(mut c) => match tokio::time::timeout(d, c.delete(&id)).await {
                    Ok(res) => res.map(|_| ()),
                    Err(_) => Err(Status::deadline_exceeded("DeleteReservation")),
                },
                None => Ok(()),
            },
        }
    }
}

/// Every listed `T` (none where the runtime has no endpoint for it or the list fails), with
/// its id and run-id label.
async fn listed<T: RuntimeKind>(
    clients: &Clients,
    filter: Option<T::Filter>,
    d: Duration,
) -> Vec<(String, Option<String>)> {
    if !T::served(clients) {
        return Vec::new();
    }
    T::list(clients, d, filter)
        .await
        .unwrap_or_default()
        .iter()
        .filter(|obj| obj.metadata().is_some())
        .map(|obj| {
            (
                obj.id().to_owned(),
                obj.label(RUN_ID_LABEL).map(str::to_owned),
            )
        })
        .collect()
}

/// Lists every object carrying the run-id label key with a value other than `current`.
pub(super) async fn scan_leftovers(
    clients: &Clients,
    current: &str,
    d: Duration,
) -> Vec<(ObjectKind, String, String)> {
    async fn of<T: RuntimeKind>(
        clients: &Clients,
        kind: ObjectKind,
        d: Duration,
    ) -> impl Iterator<Item = (ObjectKind, String, String)> {
        listed::<T>(clients, None, d)
            .await
            .into_iter()
            .filter_map(move |(id, run)| run.map(|run| (kind, id, run)))
    }
    let mut out = Vec::new();
    out.extend(of::<machine::Machine>(clients, ObjectKind::Machine, d).await);
    out.extend(of::<volume::VolumeSnapshot>(clients, ObjectKind::VolumeSnapshot, d).await);
    out.extend(of::<volume::Volume>(clients, ObjectKind::Volume, d).await);
    out.extend(of::<bucket::Bucket>(clients, ObjectKind::Bucket, d).await);
    out.retain(|(_, _, run)| run != current);
    out
}

/// Objects of `run_id`: by label, plus the recorded ids that are still listed.
async fn run_objects(
    clients: &Clients,
    run_id: &str,
    created: &Created,
    d: Duration,
) -> Vec<(ObjectKind, String)> {
    /// The listed `T` of the run: labelled with it, or recorded at creation.
    async fn of<T: RuntimeKind>(
        clients: &Clients,
        run_id: &str,
        created: &Created,
        d: Duration,
    ) -> Vec<String> {
        let recorded = created.ids::<T>();
        listed::<T>(clients, None, d)
            .await
            .into_iter()
            .filter(|(id, run)| run.as_deref() == Some(run_id) || recorded.contains(id))
            .map(|(id, _)| id)
            .collect()
    }
    let sel: HashMap<String, String> = [(RUN_ID_LABEL.to_owned(), run_id.to_owned())].into();
    let mut out: Vec<(ObjectKind, String)> = Vec::new();
    if machine::Machine::served(clients) {
        // A runtime that ignores selectors returns everything: check the label ourselves.
        let by_label =
            listed::<machine::Machine>(clients, Some(machine::Machine::filter("", sel.clone())), d)
                .await;
        out.extend(
            by_label
                .into_iter()
                .filter(|(_, run)| run.as_deref() == Some(run_id))
                .map(|(id, _)| (ObjectKind::Machine, id)),
        );
        let recorded = created.ids::<machine::Machine>();
        out.extend(
            listed::<machine::Machine>(clients, None, d)
                .await
                .into_iter()
                .filter(|(id, _)| recorded.contains(id))
                .map(|(id, _)| (ObjectKind::Machine, id)),
        );
    }
    // irikit's reservation extension: the run's reservations (none where it is not served).
    if let Some(mut c) = clients.reservation.clone() {
        let filter = iri_spec::irikit::reservation::v1alpha1::ReservationFilter {
            id: String::new(),
            label_selector: sel.clone(),
        };
        if let Ok(Ok(list)) = tokio::time::timeout(d, c.list(Some(filter))).await {
            out.extend(list.iter().filter_map(|r| {
                let md = r.metadata.as_ref()?;
                (md.labels.get(RUN_ID_LABEL)? == run_id)
                    .then(|| (ObjectKind::Reservation, md.id.clone()))
            }));
        }
    }
    let snapshots = of::<volume::VolumeSnapshot>(clients, run_id, created, d).await;
    out.extend(
        snapshots
            .into_iter()
            .map(|id| (ObjectKind::VolumeSnapshot, id)),
    );
    let volumes = of::<volume::Volume>(clients, run_id, created, d).await;
    out.extend(volumes.into_iter().map(|id| (ObjectKind::Volume, id)));
    let buckets = of::<bucket::Bucket>(clients, run_id, created, d).await;
    out.extend(buckets.into_iter().map(|id| (ObjectKind::Bucket, id)));
    out.sort();
    out.dedup();
    out
}

/// Counts the objects of `run_id` still listed (by label, plus `created` ids).
pub async fn count_run_objects(
    clients: &Clients,
    run_id: &str,
    created: &Created,
    d: Duration,
) -> usize {
    run_objects(clients, run_id, created, d).await.len()
}

/// Deletes every object of `run_id` (snapshots first) and waits until none is listed.
pub async fn cleanup(
    clients: &Clients,
    run_id: &str,
    created: &Created,
    rpc_timeout: Duration,
    budget: Duration,
) -> CleanupReport {
    let start = Instant::now();
    let mut report = CleanupReport::default();
    let mut deleted_once: std::collections::HashSet<(ObjectKind, String)> = Default::default();
    let mut interval = Duration::from_millis(1);
    let deadline = start + budget;
    let out_of_budget = |report: &mut CleanupReport, what: &str| {
        report.errors.push(format!(
            "the cleanup budget of {budget:?} ran out while {what}"
        ));
    };
    loop {
        // Every step is bounded by what is left of the budget: a hanging runtime (whose
        // methods the breaker has not opened yet) cannot hold the run beyond it.
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(objects) =
            tokio::time::timeout(left, run_objects(clients, run_id, created, rpc_timeout)).await
        else {
            out_of_budget(&mut report, "listing the run's objects");
            break;
        };
        if objects.is_empty() {
            report.remaining.clear();
            break;
        }
        // Delete whatever was not deleted yet (repeat deletes are OK while terminating).
        let mut set = JoinSet::new();
        for (kind, id) in &objects {
            if deleted_once.insert((*kind, id.clone())) {
                let clients = clients.clone();
                let (kind, id) = (*kind, id.clone());
                set.spawn(async move {
                    let res = kind.delete(&clients, id.clone(), rpc_timeout).await;
                    (kind, id, res)
                });
            }
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let joined = match tokio::time::timeout(left, set.join_next()).await {
                Ok(Some(joined)) => joined,
                Ok(None) => break,
                Err(_) => {
                    set.abort_all();
                    out_of_budget(&mut report, "deleting");
                    break;
                }
            };
            if let Ok((kind, id, res)) = joined {
                match res {
                    Ok(()) => report.deleted += 1,
                    Err(st) if st.code() == Code::NotFound => {}
                    Err(st) => report.errors.push(format!(
                        "delete {} {id}: {:?}: {}",
                        kind.slug(),
                        st.code(),
                        st.message()
                    )),
                }
            }
        }
        if start.elapsed() >= budget {
            report.remaining = objects
                .into_iter()
                .map(|(kind, id)| format!("{}/{id}", kind.slug()))
                .collect();
            break;
        }
        tokio::time::sleep(interval).await;
        interval = (interval * 2).min(Duration::from_millis(20));
    }
    report.duration = start.elapsed();
    report
}
