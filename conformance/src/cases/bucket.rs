//! Cases for `bucket.v1alpha1.BucketRuntime` (reference §1.6), run when a bucket endpoint is given.

use anyhow::{Context as _, ensure};
use iri_spec::bucket::v1alpha1::{self as b, BucketState};

use crate::{
    case::{Case, Service, pass},
    cases::shared::{
        delete_repeatedly, deleted, labelled, list_by_id, list_by_label, list_items_complete,
        list_unknown_id_empty, unknown_class_fails, version_set, with_unknown_class,
    },
    ctx::{Ctx, expect_ok, plausible_ns, unknown_id},
};

const AVAILABLE: i32 = BucketState::BucketAvailable as i32;

macro_rules! case {
    ($($case:tt)*) => { service_case!(Bucket, $($case)*) };
}

/// The bucket classes ListBucketClasses returns, which must be at least one.
async fn classes(ctx: &Ctx) -> anyhow::Result<Vec<b::BucketClass>> {
    let mut c = ctx.bc()?;
    let res = ctx.rpc(c.list_bucket_classes(b::ListBucketClassesRequest {}));
    let cls = expect_ok(res.await, "ListBucketClasses")?.bucket_classes;
    ensure!(!cls.is_empty(), "ListBucketClasses returned no classes");
    Ok(cls)
}

async fn available(ctx: &Ctx) -> anyhow::Result<String> {
    let (id, _) = ctx.create_bucket(ctx.bucket_spec(&[])?).await?;
    ctx.wait_bucket(&id, "to be AVAILABLE", |x| {
        x.and_then(|x| x.status.as_ref())
            .is_some_and(|s| s.state == AVAILABLE)
    })
    .await?;
    Ok(id)
}

/// All bucket cases.
#[allow(clippy::too_many_lines)]
pub(crate) fn cases() -> Vec<Case> {
    let mut v = Vec::new();

    check_cases! { v, Bucket;
        "bucket.version.name_and_version_set", "bucket Version returns a non-empty runtime_name and runtime_version",
        |ctx| { version_set(&ctx, Service::Bucket).await?; };
    }
    case!(
        v,
        "bucket.classes.listed",
        "ListBucketClasses returns at least one class with a non-empty, unique name",
        |ctx| {
            let cls = classes(&ctx).await?;
            let mut seen = std::collections::HashSet::new();
            for c in &cls {
                ensure!(
                    !c.name.is_empty() && seen.insert(c.name.clone()),
                    "empty or duplicate class {:?}",
                    c.name
                );
            }
            pass()
        }
    );
    case!(
        v,
        "bucket.classes.capabilities_set",
        "every bucket class has capabilities with tps and iops >= 0",
        |ctx| {
            let cls = classes(&ctx).await?;
            for c in cls {
                let caps = c
                    .capabilities
                    .with_context(|| format!("bucket class {:?} has no capabilities", c.name))?;
                ensure!(
                    caps.tps >= 0 && caps.iops >= 0,
                    "class {:?}: {caps:?}",
                    c.name
                );
            }
            pass()
        }
    );
    case!(
        v,
        "bucket.create.returns_id",
        "CreateBucket returns the bucket with an id, spec and status",
        |ctx| {
            let (_, bk) = ctx.create_bucket(ctx.bucket_spec(&[])?).await?;
            ensure!(
                bk.spec.is_some() && bk.status.is_some(),
                "response bucket lacks spec or status: {bk:?}"
            );
            pass()
        }
    );
    case!(
        v,
        "bucket.create.labels_preserved",
        "bucket labels are listed verbatim and created_at is in Unix ns",
        |ctx| {
            let (id, want) = labelled::<b::Bucket>(&ctx, &[("conformance.example/b", "1")]).await?;
            let md = ctx
                .get_bucket(&id)
                .await?
                .context("bucket not listed")?
                .metadata
                .context("no metadata")?;
            ensure!(md.labels == want, "labels differ: {:?}", md.labels);
            ensure!(
                plausible_ns(md.created_at, std::time::Duration::from_secs(600)),
                "created_at {} is not now in Unix ns",
                md.created_at
            );
            pass()
        }
    );
    check_cases! { v, Bucket;
        "bucket.create.unknown_class_fails", "CreateBucket with a class Status does not report fails (any code; the exact code is bucket.create.rejects_unknown_class)",
        |ctx| { unknown_class_fails::<b::Bucket>(&ctx).await?; };
    }
    code_cases! { v, Bucket;
        "bucket.create.rejects_unknown_class", "CreateBucket with an unknown class returns InvalidArgument",
        InvalidArgument, "CreateBucket unknown class",
        |ctx| ctx.try_create_bucket(with_unknown_class::<b::Bucket>(&ctx)?).await;
        "bucket.create.rejects_missing_spec", "CreateBucket without spec returns InvalidArgument",
        InvalidArgument, "CreateBucket without spec",
        |ctx| ctx.try_create_bucket(b::Bucket { metadata: Some(ctx.metadata(&[])), spec: None, status: None}).await;
    }
    check_cases! { v, Bucket;
        "bucket.state.becomes_available", "a bucket reaches AVAILABLE within the state budget",
        |ctx| { available(&ctx).await?; };
    }
    case!(
        v,
        "bucket.state.access_when_available",
        "an AVAILABLE bucket has access with an endpoint",
        |ctx| {
            let id = available(&ctx).await?;
            let bk = ctx.get_bucket(&id).await?.context("bucket not listed")?;
            let a = bk
                .status
                .and_then(|s| s.access)
                .context("AVAILABLE bucket has no access")?;
            ensure!(!a.endpoint.is_empty(), "access has an empty endpoint");
            pass()
        }
    );
    check_cases! { v, Bucket;
        "bucket.list.by_id", "ListBuckets with an id filter returns exactly that bucket",
        |ctx| { list_by_id::<b::Bucket>(&ctx).await?; };
        "bucket.list.by_label", "ListBuckets with a label selector returns exactly the matching buckets",
        |ctx| { list_by_label::<b::Bucket>(&ctx, &[("color", "red")], &[("color", "blue")]).await?; };
        "bucket.list.unknown_id_empty", "ListBuckets with an unknown id returns an empty list",
        |ctx| { ctx.create_bucket(ctx.bucket_spec(&[])?).await?; list_unknown_id_empty::<b::Bucket>(&ctx).await?; };
        "bucket.list.items_complete", "every listed bucket has metadata, spec and status",
        |ctx| { list_items_complete::<b::Bucket>(&ctx).await?; };
    }
    code_cases! { v, Bucket;
        "bucket.delete.unknown_id_not_found", "DeleteBucket of an unknown id returns NotFound",
        NotFound, "DeleteBucket unknown id",
        |ctx| ctx.delete_bucket(&unknown_id()).await;
    }
    case!(
        v,
        "bucket.delete.deleted_at_while_listed",
        "a bucket still listed after DeleteBucket has deleted_at set",
        |ctx| {
            let id = available(&ctx).await?;
            let bk = deleted::<b::Bucket>(&ctx, &id, "the deletion phase").await?;
            ensure!(
                bk.metadata.is_some_and(|m| m.deleted_at > 0),
                "deleted_at is 0 on a bucket being deleted"
            );
            pass()
        }
    );
    check_cases! { v, Bucket;
        "bucket.delete.idempotent", "repeated DeleteBucket calls return OK, or NotFound only once the bucket is gone; it ends up gone",
        |ctx| { let (id, _) = ctx.create_bucket(ctx.bucket_spec(&[])?).await?; delete_repeatedly::<b::Bucket>(&ctx, &id).await?; };
    }

    v
}
