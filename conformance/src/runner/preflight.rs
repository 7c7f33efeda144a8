//! The preflight of a run: each service's Version, and the classes cases use (given, or the
//! first the runtime's Status or ListBucketClasses offers).

use std::collections::BTreeMap;

use futures::TryFutureExt as _;
use iri_spec::{
    bucket::v1alpha1 as bucket, machine::v1alpha1 as machine, volume::v1alpha1 as volume,
};

use tonic::Status;

use crate::{
    case::Service,
    ctx::{Clients, Params, Resolved, objects::call},
    report::RuntimeVersion,
};

pub(super) async fn preflight(
    clients: &Clients,
    params: &Params,
) -> (BTreeMap<Service, Result<RuntimeVersion, String>>, Resolved) {
    let d = params.rpc_timeout;
    let mut versions = BTreeMap::new();
    let no_endpoint = |s: &str| Err(format!("no {s} runtime endpoint"));
    let mut resolved = Resolved {
        machine_class: no_endpoint("machine"),
        volume_class: no_endpoint("volume"),
        bucket_class: no_endpoint("bucket"),
    };
    // One service: `$client` of `clients` answers Version and the classes `$offered` lists (the
    // RPC `$rpc` names), which resolve the `$class` of `params`.
    macro_rules! ask {
        ($client:ident, $m:ident, $service:ident, $class:ident, $rpc:literal, |$b:ident| $offered:expr) => {
            if let Some(mut a) = clients.$client.clone() {
                let mut $b = a.clone();
                let version = call(d, a.version($m::VersionRequest::default()))
                    .map_ok(|v| (v.runtime_name, v.runtime_version));
                let what = (Service::$service.name(), $rpc);
                let (v, class) = ask(version, $offered, &params.$class, what).await;
                versions.insert(Service::$service, v);
                resolved.$class = class;
            }
        };
    }
    ask! { machine, machine, Machine, machine_class, "machine Status",
        |b| call(d, b.status(machine::StatusRequest::default())).map_ok(|s| {
            s.machine_class_status.into_iter().filter_map(|c| c.machine_class.map(|c| c.name)).collect()
        })
    }
    ask! { volume, volume, Volume, volume_class, "volume Status",
        |b| call(d, b.status(volume::StatusRequest::default())).map_ok(|s| {
            s.volume_class_status.into_iter().filter_map(|c| c.volume_class.map(|c| c.name)).collect()
        })
    }
    ask! { bucket, bucket, Bucket, bucket_class, "ListBucketClasses",
        |b| call(d, b.list_bucket_classes(bucket::ListBucketClassesRequest {}))
            .map_ok(|s| s.bucket_classes.into_iter().map(|c| c.name).collect())
    }
    (versions, resolved)
}

/// One service's preflight: its Version (name, version) and the class to use: `explicit`, or
/// the first that `offered` (the RPC `what.1` names) lists for `what.0` objects.
async fn ask(
    version: impl Future<Output = Result<(String, String), Status>>,
    offered: impl Future<Output = Result<Vec<String>, Status>>,
    explicit: &Option<String>,
    what: (&str, &str),
) -> (Result<RuntimeVersion, String>, Result<String, String>) {
    let (v, offered) = tokio::join!(version, offered);
    let version = v
        .map(|(name, version)| RuntimeVersion { name, version })
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()));
    let class = match (explicit, offered) {
        (Some(c), _) => Ok(c.clone()),
        (None, Ok(offered)) => offered.into_iter().find(|n| !n.is_empty()).ok_or_else(|| {
            format!(
                "the runtime offers no {} class (pass one explicitly)",
                what.0
            )
        }),
        (None, Err(e)) => Err(format!(
            "{} failed: {:?}: {}",
            what.1,
            e.code(),
            e.message()
        )),
    };
    (version, class)
}
