//! The preflight of a run: each service's Version, and the classes cases use (given, or the
//! first the runtime's Status or ListBucketClasses offers).

use std::collections::BTreeMap;

use iri_spec::{
    bucket::v1alpha1 as bucket, machine::v1alpha1 as machine, volume::v1alpha1 as volume,
};

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
    let pick = |explicit: &Option<String>, offered: Vec<String>, what: &str| match explicit {
        Some(c) => Ok(c.clone()),
        None => offered
            .into_iter()
            .find(|n| !n.is_empty())
            .ok_or_else(|| format!("the runtime offers no {what} class (pass one explicitly)")),
    };
    if let Some(c) = clients.machine.clone() {
        let (mut a, mut b) = (c.clone(), c);
        let (v, s) = tokio::join!(
            call(d, a.version(machine::VersionRequest::default())),
            call(d, b.status(machine::StatusRequest::default()))
        );
        versions.insert(
            Service::Machine,
            v.map(|v| RuntimeVersion {
                name: v.runtime_name,
                version: v.runtime_version,
            })
            .map_err(|s| format!("{:?}: {}", s.code(), s.message())),
        );
        resolved.machine_class = match s {
            Ok(s) => pick(
                &params.machine_class,
                s.machine_class_status
                    .into_iter()
                    .filter_map(|c| c.machine_class.map(|c| c.name))
                    .collect(),
                "machine",
            ),
            Err(e) => params
                .machine_class
                .clone()
                .ok_or_else(|| format!("machine Status failed: {:?}: {}", e.code(), e.message())),
        };
    }
    if let Some(c) = clients.volume.clone() {
        let (mut a, mut b) = (c.clone(), c);
        let (v, s) = tokio::join!(
            call(d, a.version(volume::VersionRequest::default())),
            call(d, b.status(volume::StatusRequest::default()))
        );
        versions.insert(
            Service::Volume,
            v.map(|v| RuntimeVersion {
                name: v.runtime_name,
                version: v.runtime_version,
            })
            .map_err(|s| format!("{:?}: {}", s.code(), s.message())),
        );
        resolved.volume_class = match s {
            Ok(s) => pick(
                &params.volume_class,
                s.volume_class_status
                    .into_iter()
                    .filter_map(|c| c.volume_class.map(|c| c.name))
                    .collect(),
                "volume",
            ),
            Err(e) => params
                .volume_class
                .clone()
                .ok_or_else(|| format!("volume Status failed: {:?}: {}", e.code(), e.message())),
        };
    }
    if let Some(c) = clients.bucket.clone() {
        let (mut a, mut b) = (c.clone(), c);
        let (v, s) = tokio::join!(
            call(d, a.version(bucket::VersionRequest::default())),
            call(
                d,
                b.list_bucket_classes(bucket::ListBucketClassesRequest {})
            )
        );
        versions.insert(
            Service::Bucket,
            v.map(|v| RuntimeVersion {
                name: v.runtime_name,
                version: v.runtime_version,
            })
            .map_err(|s| format!("{:?}: {}", s.code(), s.message())),
        );
        resolved.bucket_class = match s {
            Ok(s) => pick(
                &params.bucket_class,
                s.bucket_classes.into_iter().map(|c| c.name).collect(),
                "bucket",
            ),
            Err(e) => params.bucket_class.clone().ok_or_else(|| {
                format!("ListBucketClasses failed: {:?}: {}", e.code(), e.message())
            }),
        };
    }
    (versions, resolved)
}
