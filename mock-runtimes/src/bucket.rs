//! The mock `BucketRuntime`: buckets (PENDING → AVAILABLE with access), deletion phase, events,
//! bucket classes.

use std::sync::{Arc, Mutex};

use iri_spec::{
    bucket::v1alpha1::{
        self as bucket, BucketState,
        bucket_runtime_server::{BucketRuntime, BucketRuntimeServer},
    },
    kind::{IriKind, Service},
};
use tokio::time::Instant;
use tonic::{Request, Response, Status};

use crate::{
    Method, Mutant,
    core::{Core, invalid},
    events::EventQuery,
    objects::{Due, KindMutants, MockKind, fresh_meta},
    store::{Store, Timers},
};

impl MockKind for bucket::Bucket {
    const MUTANTS: KindMutants = KindMutants {
        id_filter_ignored: Some(Mutant::BucketIdFilterIgnored),
        label_selector_ignored: Some(Mutant::BucketLabelSelectorIgnored),
        delete_unknown_ok: Some(Mutant::BucketDeleteUnknownOk),
        delete_twice_not_found: Some(Mutant::BucketDeleteTwiceNotFound),
        delete_immediate: Some(Mutant::BucketDeleteImmediate),
        ..KindMutants::NONE
    };
    const ID_FIELD: &'static str = "bucket_id";

    fn store(core: &Core) -> &Mutex<Store<Self>> {
        &core.buckets
    }

    fn set_state(&mut self, state: i32) {
        self.status.get_or_insert_default().state = state;
    }

    /// PENDING → AVAILABLE with access.
    fn transition(core: &Core, b: &mut Self, timers: &Timers, due: Due) -> Option<String> {
        if !due.ready || timers.deleting || core.has(Mutant::BucketNeverAvailable) {
            return None;
        }
        let id = b.id().to_owned();
        let access = (!core.has(Mutant::BucketAccessMissing)).then(|| bucket::BucketAccess {
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
        });
        let status = b.status.get_or_insert_default();
        status.state = BucketState::BucketAvailable as i32;
        status.access = access;
        Some("bucket available".to_owned())
    }

    fn listed(core: &Core, mut b: Self) -> Self {
        if core.has(Mutant::BucketNoStatus) {
            b.status = None;
        }
        b
    }
}

impl Core {
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
        fresh_meta(&mut md, &self.new_id(), self.clock.unix_nanos());
        let stored = bucket::Bucket {
            metadata: Some(md),
            spec: Some(spec),
            status: Some(bucket::BucketStatus {
                state: BucketState::BucketPending as i32,
                access: None,
            }),
        };
        let timers = Timers {
            ready: Some(Instant::now() + self.config.delays.provision),
            ..Timers::default()
        };
        let stored = self.insert_new(stored, timers);
        Ok(bucket::CreateBucketResponse {
            bucket: Some(MockKind::listed(self, stored)),
        })
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
        self.core.settle::<bucket::Bucket>();
        call.finish(Ok(bucket::ListEventsResponse {
            events: self.core.events(Service::Bucket, &q),
        }))
    }

    async fn list_buckets(
        &self,
        request: Request<bucket::ListBucketsRequest>,
    ) -> R<bucket::ListBucketsResponse> {
        let (call, req) = self.core.begin(Method::ListBuckets, request).await?;
        let filter = req.filter.unwrap_or_default();
        let res = self.core.list(&filter.id, &filter.label_selector);
        call.finish(res.map(|buckets| bucket::ListBucketsResponse { buckets }))
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
        let res = self.core.delete::<bucket::Bucket>(&req.bucket_id);
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
