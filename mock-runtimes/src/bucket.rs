//! The mock `BucketRuntime`: buckets (PENDING → AVAILABLE with access), deletion phase, events,
//! bucket classes.

use iri_spec::{
    bucket::v1alpha1::{
        self as bucket, BucketState,
        bucket_runtime_server::{BucketRuntime, BucketRuntimeServer},
    },
    kind::{IriKind, Service},
};
use tokio::time::Instant;
use tonic::Status;

use crate::{
    Mutant,
    core::{Core, invalid, rpc_service},
    objects::{Due, KindMutants, MockKind, fresh_meta, kept_in, take_spec},
    store::Timers,
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

    kept_in!(buckets);

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
    /// The bucket classes, as ListBucketClasses answers them.
    fn bucket_classes(&self) -> Vec<bucket::BucketClass> {
        if self.has(Mutant::BucketClassesEmpty) {
            return Vec::new();
        }
        self.config
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
        let (mut b, spec) = take_spec(req.bucket, lax)?;
        let spec = spec.unwrap_or_else(first_class);
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

rpc_service! {
    /// The `BucketRuntime` gRPC service of a mock.
    BucketService: BucketRuntime, BucketRuntimeServer {
        @common(bucket, BucketVersion, BucketListEvents, Service::Bucket, [bucket::Bucket]);
        list_buckets(ListBuckets, bucket::ListBucketsRequest) -> bucket::ListBucketsResponse = |core, req| {
            let filter = req.filter.unwrap_or_default();
            let buckets = core.list(&filter.id, &filter.label_selector);
            buckets.map(|buckets| bucket::ListBucketsResponse { buckets })
        };
        create_bucket(CreateBucket, bucket::CreateBucketRequest) -> bucket::CreateBucketResponse = |core, req| {
            core.create_bucket(req)
        };
        delete_bucket(DeleteBucket, bucket::DeleteBucketRequest) -> bucket::DeleteBucketResponse = |core, req| {
            core.delete::<bucket::Bucket>(&req.bucket_id).map(|()| bucket::DeleteBucketResponse {})
        };
        list_bucket_classes(ListBucketClasses, bucket::ListBucketClassesRequest)
            -> bucket::ListBucketClassesResponse = |core, _req| {
            Ok(bucket::ListBucketClassesResponse { bucket_classes: core.bucket_classes() })
        };
    }
}
