//! The mock `BucketRuntime`: buckets (PENDING → AVAILABLE with access), deletion phase, events,
//! bucket classes.

use std::sync::Arc;

use iri_spec::bucket::v1alpha1::{
    self as bucket, BucketState,
    bucket_runtime_server::{BucketRuntime, BucketRuntimeServer},
};
use tokio::time::Instant;
use tonic::{Request, Response, Status};

use crate::{
    Method, Mutant,
    core::{Core, EventLog, EventQuery, Store, Timers, invalid, labels_match, not_found},
    lock,
};

/// Stored buckets and bucket events.
#[derive(Debug)]
pub(crate) struct BucketStore {
    pub(crate) buckets: Store<bucket::Bucket>,
    pub(crate) events: EventLog,
}

impl BucketStore {
    pub(crate) fn new(event_capacity: usize) -> Self {
        BucketStore {
            buckets: Store::default(),
            events: EventLog::new(event_capacity),
        }
    }
}

impl Core {
    pub(crate) fn advance_buckets(&self, st: &mut BucketStore) {
        let now = Instant::now();
        let due = |t: Option<Instant>| t.is_some_and(|t| t <= now);
        for seq in st.buckets.due(now) {
            let Some(timers) = st.buckets.timers_by_seq(seq) else {
                continue;
            };
            if due(timers.gone) {
                if let Some(md) = st.buckets.remove_seq(seq).as_ref() {
                    let ev = self.event(md, "bucket", "Deleted", "Delete", "bucket deleted");
                    st.events.push(ev);
                }
                continue;
            }
            let Some(slot) = st.buckets.slot_by_seq_mut(seq) else {
                continue;
            };
            let id = slot
                .obj
                .metadata
                .as_ref()
                .map(|m| m.id.clone())
                .unwrap_or_default();
            if due(timers.ready) {
                slot.timers.ready = None;
                if !timers.deleting && !self.has(Mutant::BucketNeverAvailable) {
                    let access = if self.has(Mutant::BucketAccessMissing) {
                        None
                    } else {
                        Some(bucket::BucketAccess {
                            endpoint: format!("{id}.buckets.iri-mock.invalid"),
                            secret_data: [
                                (
                                    "AccessKeyID".to_owned(),
                                    id.as_bytes()[..20.min(id.len())].to_vec(),
                                ),
                                (
                                    "SecretAccessKey".to_owned(),
                                    format!("secret-{id}").into_bytes(),
                                ),
                            ]
                            .into_iter()
                            .collect(),
                        })
                    };
                    let status = slot.obj.status.get_or_insert_default();
                    status.state = BucketState::BucketAvailable as i32;
                    status.access = access;
                    if let Some(md) = slot.obj.metadata.clone() {
                        let ev = self.event(
                            &md,
                            "bucket",
                            "StateChanged",
                            "UpdateState",
                            "bucket available",
                        );
                        st.events.push(ev);
                    }
                }
            }
        }
    }

    fn create_bucket(
        &self,
        req: bucket::CreateBucketRequest,
    ) -> Result<bucket::CreateBucketResponse, Status> {
        let lax = self.has(Mutant::BucketMissingSpecAccepted);
        let first_class = || bucket::BucketSpec {
            class: self
                .config
                .bucket_classes
                .first()
                .map(|c| c.name.clone())
                .unwrap_or_default(),
        };
        let mut b = match req.bucket {
            Some(b) => b,
            None if lax => bucket::Bucket::default(),
            None => return Err(invalid("bucket is required")),
        };
        let spec = match b.spec.take() {
            Some(spec) => spec,
            None if lax => first_class(),
            None => return Err(invalid("bucket.spec is required")),
        };
        if self.bucket_class(&spec.class).is_none() && !self.has(Mutant::BucketUnknownClassAccepted)
        {
            return Err(invalid(format!("unknown bucket class {:?}", spec.class)));
        }
        let mut md = b.metadata.take().unwrap_or_default();
        if self.has(Mutant::BucketLabelsDropped) {
            md.labels.clear();
        }
        let id = self.new_id();
        md.id = id.clone();
        md.generation = 0;
        md.deleted_at = 0;
        md.created_at = self.clock.unix_nanos();
        let stored = bucket::Bucket {
            metadata: Some(md),
            spec: Some(spec),
            status: Some(bucket::BucketStatus {
                state: BucketState::BucketPending as i32,
                access: None,
            }),
        };
        let mut st = lock(&self.buckets);
        self.advance_buckets(&mut st);
        let at = Instant::now() + self.config.delays.provision;
        st.buckets.insert(
            &id,
            stored.clone(),
            Timers {
                ready: Some(at),
                ..Timers::default()
            },
        );
        if let Some(md) = stored.metadata.as_ref() {
            let ev = self.event(md, "bucket", "Created", "Create", "bucket created");
            st.events.push(ev);
        }
        tracing::info!(bucket.id = %id, "bucket created");
        let mut stored = stored;
        if self.has(Mutant::BucketNoStatus) {
            stored.status = None;
        }
        Ok(bucket::CreateBucketResponse {
            bucket: Some(stored),
        })
    }

    fn delete_bucket(&self, id: &str) -> Result<(), Status> {
        if id.is_empty() {
            return Err(invalid("bucket_id is required"));
        }
        let mut st = lock(&self.buckets);
        self.advance_buckets(&mut st);
        let Some(timers) = st.buckets.timers(id) else {
            if self.has(Mutant::BucketDeleteUnknownOk) {
                return Ok(());
            }
            return Err(not_found("bucket", id));
        };
        if timers.deleting {
            if self.has(Mutant::BucketDeleteTwiceNotFound) {
                return Err(not_found("bucket", id));
            }
            return Ok(());
        }
        if self.has(Mutant::BucketDeleteImmediate) {
            st.buckets.remove(id);
            return Ok(());
        }
        let at = Instant::now() + self.config.delays.terminate;
        let md = {
            let Some(slot) = st.buckets.get_mut(id) else {
                return Err(not_found("bucket", id));
            };
            slot.timers.deleting = true;
            slot.timers.gone = Some(at);
            slot.obj.metadata.get_or_insert_default().deleted_at = self.clock.unix_nanos();
            slot.obj.metadata.clone().unwrap_or_default()
        };
        st.buckets.wake_at(id, at);
        let ev = self.event(
            &md,
            "bucket",
            "Deleting",
            "Delete",
            "bucket is being deleted",
        );
        st.events.push(ev);
        Ok(())
    }

    pub(crate) fn list_buckets(&self, filter: Option<bucket::BucketFilter>) -> Vec<bucket::Bucket> {
        let filter = filter.unwrap_or_default();
        let mut st = lock(&self.buckets);
        self.advance_buckets(&mut st);
        let by_id = !filter.id.is_empty() && !self.has(Mutant::BucketIdFilterIgnored);
        st.buckets
            .iter()
            .filter(|obj| !by_id || obj.metadata.as_ref().is_some_and(|m| m.id == filter.id))
            .filter(|obj| {
                self.has(Mutant::BucketLabelSelectorIgnored)
                    || labels_match(&filter.label_selector, obj.metadata.as_ref())
            })
            .map(|mut b| {
                if self.has(Mutant::BucketNoStatus) {
                    b.status = None;
                }
                b
            })
            .collect()
    }

    pub(crate) fn seed_bucket(&self, mut b: bucket::Bucket) -> String {
        let md = b.metadata.get_or_insert_default();
        if md.id.is_empty() {
            md.id = self.new_id();
        }
        if md.created_at == 0 {
            md.created_at = self.clock.unix_nanos();
        }
        let id = md.id.clone();
        b.spec.get_or_insert_default();
        b.status.get_or_insert_default();
        lock(&self.buckets)
            .buckets
            .insert(&id, b, Timers::default());
        id
    }

    pub(crate) fn force_bucket_state(&self, id: &str, state: BucketState) -> bool {
        let mut st = lock(&self.buckets);
        self.advance_buckets(&mut st);
        let Some(slot) = st.buckets.get_mut(id) else {
            return false;
        };
        slot.timers.ready = None;
        slot.obj.status.get_or_insert_default().state = state as i32;
        true
    }

    pub(crate) fn bucket_events(&self, q: &EventQuery) -> Vec<iri_spec::event::v1alpha1::Event> {
        let mut st = lock(&self.buckets);
        self.advance_buckets(&mut st);
        self.filter_events(&st.events, q)
    }
}

/// The `BucketRuntime` gRPC service of a mock.
#[derive(Debug, Clone)]
pub struct BucketService {
    pub(crate) core: Arc<Core>,
}

impl BucketService {
    /// The tonic server for this service.
    pub fn into_server(self) -> BucketRuntimeServer<Self> {
        BucketRuntimeServer::new(self)
    }
}

type R<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl BucketRuntime for BucketService {
    async fn version(
        &self,
        request: Request<bucket::VersionRequest>,
    ) -> R<bucket::VersionResponse> {
        let (call, _req) = self.core.begin(Method::BucketVersion, request).await?;
        let (runtime_name, runtime_version) = self.core.version();
        call.finish(Ok(bucket::VersionResponse {
            runtime_name,
            runtime_version,
        }))
    }

    async fn list_events(
        &self,
        request: Request<bucket::ListEventsRequest>,
    ) -> R<bucket::ListEventsResponse> {
        let (call, req) = self.core.begin(Method::BucketListEvents, request).await?;
        let f = req.filter.unwrap_or_default();
        let q = EventQuery {
            id: f.id,
            labels: f.label_selector,
            from: f.events_from_time,
            to: f.events_to_time,
        };
        call.finish(Ok(bucket::ListEventsResponse {
            events: self.core.bucket_events(&q),
        }))
    }

    async fn list_buckets(
        &self,
        request: Request<bucket::ListBucketsRequest>,
    ) -> R<bucket::ListBucketsResponse> {
        let (call, req) = self.core.begin(Method::ListBuckets, request).await?;
        call.finish(Ok(bucket::ListBucketsResponse {
            buckets: self.core.list_buckets(req.filter),
        }))
    }

    async fn create_bucket(
        &self,
        request: Request<bucket::CreateBucketRequest>,
    ) -> R<bucket::CreateBucketResponse> {
        let (call, req) = self.core.begin(Method::CreateBucket, request).await?;
        let res = self.core.create_bucket(req);
        call.finish(res)
    }

    async fn delete_bucket(
        &self,
        request: Request<bucket::DeleteBucketRequest>,
    ) -> R<bucket::DeleteBucketResponse> {
        let (call, req) = self.core.begin(Method::DeleteBucket, request).await?;
        let res = self.core.delete_bucket(&req.bucket_id);
        call.finish(res.map(|()| bucket::DeleteBucketResponse {}))
    }

    async fn list_bucket_classes(
        &self,
        request: Request<bucket::ListBucketClassesRequest>,
    ) -> R<bucket::ListBucketClassesResponse> {
        let (call, _req) = self.core.begin(Method::ListBucketClasses, request).await?;
        let bucket_classes = if self.core.has(Mutant::BucketClassesEmpty) {
            Vec::new()
        } else {
            self.core
                .config
                .bucket_classes
                .iter()
                .map(|c| bucket::BucketClass {
                    name: c.name.clone(),
                    capabilities: Some(bucket::BucketClassCapabilities {
                        tps: c.tps,
                        iops: c.iops,
                    }),
                })
                .collect()
        };
        call.finish(Ok(bucket::ListBucketClassesResponse { bucket_classes }))
    }
}
