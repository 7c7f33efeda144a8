//! Benchmark mode: for each RPC, N calls with C in flight; latency p50/p90/p99, mean, max and
//! throughput, plus each RPC's p50 as a ratio of `Version`'s (the no-op baseline measured in the
//! same run). Measures with its defaults (200 × 4), unlike critest's benchmark mode. Objects it
//! creates carry the run-id label and are deleted at the end.

use std::{
    fmt::Write as _,
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use futures::StreamExt as _;
use iri_spec::{
    bucket::v1alpha1 as bucket, machine::v1alpha1 as machine, volume::v1alpha1 as volume,
};
use regex::Regex;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::{
    case::Service,
    ctx::{Created, Ctx, Params, Resolved},
    runner::{self, Targets},
};

/// Benchmark settings.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Calls per RPC.
    pub iterations: usize,
    /// Calls in flight per RPC.
    pub concurrency: usize,
    /// Only RPCs whose name matches.
    pub focus: Option<Regex>,
    /// Classes, sizes and deadlines.
    pub params: Params,
    /// A fixed run id (default: generated).
    pub run_id: Option<String>,
}

impl Default for BenchConfig {
    fn default() -> Self {
        BenchConfig {
            iterations: 200,
            concurrency: 4,
            focus: None,
            params: Params::default(),
            run_id: None,
        }
    }
}

/// Figures of one RPC.
#[derive(Debug, Clone, Serialize)]
pub struct RpcStats {
    /// The RPC, e.g. `CreateMachine`.
    pub rpc: String,
    /// Its service.
    pub service: Service,
    /// Calls made.
    pub calls: usize,
    /// Calls that failed.
    pub errors: usize,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 90th percentile, ms.
    pub p90_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Mean, ms.
    pub mean_ms: f64,
    /// Max, ms.
    pub max_ms: f64,
    /// Calls per second over the RPC's wall time.
    pub throughput_per_s: f64,
    /// p50 divided by Version's p50 on the same service (the in-run baseline).
    pub p50_vs_version: Option<f64>,
    /// First error message, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
}

/// The benchmark result.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Run id of the created objects.
    pub run_id: String,
    /// Calls per RPC.
    pub iterations: usize,
    /// Calls in flight.
    pub concurrency: usize,
    /// Per RPC.
    pub rpcs: Vec<RpcStats>,
    /// Failed calls in total.
    pub errors: usize,
    /// Wall seconds (including setup and cleanup).
    pub duration_s: f64,
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1].as_secs_f64() * 1e3
}

/// Latency statistics of a set of samples.
pub fn stats(
    rpc: &str,
    service: Service,
    samples: &[(Duration, Result<(), Status>)],
    wall: Duration,
) -> RpcStats {
    let mut lat: Vec<Duration> = samples.iter().map(|(d, _)| *d).collect();
    lat.sort();
    let errors = samples.iter().filter(|(_, r)| r.is_err()).count();
    let first_error = samples
        .iter()
        .find_map(|(_, r)| r.as_ref().err())
        .map(|s| format!("{:?}: {}", s.code(), s.message()));
    #[allow(clippy::cast_precision_loss)]
    let n = lat.len().max(1) as f64;
    RpcStats {
        rpc: rpc.to_owned(),
        service,
        calls: samples.len(),
        errors,
        p50_ms: percentile(&lat, 50.0),
        p90_ms: percentile(&lat, 90.0),
        p99_ms: percentile(&lat, 99.0),
        mean_ms: lat.iter().map(Duration::as_secs_f64).sum::<f64>() * 1e3 / n,
        max_ms: lat.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
        #[allow(clippy::cast_precision_loss)]
        throughput_per_s: samples.len() as f64 / wall.as_secs_f64().max(1e-9),
        p50_vs_version: None,
        first_error,
    }
}

async fn measure<F, Fut>(rpc: &str, service: Service, n: usize, c: usize, f: F) -> RpcStats
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<(), Status>>,
{
    let start = Instant::now();
    let samples: Vec<(Duration, Result<(), Status>)> = futures::stream::iter(0..n)
        .map(|i| {
            let fut = f(i);
            async move {
                let t = Instant::now();
                let r = fut.await;
                (t.elapsed(), r)
            }
        })
        .buffer_unordered(c)
        .collect()
        .await;
    stats(rpc, service, &samples, start.elapsed())
}

/// The fixed table header and one row per RPC.
pub fn table(r: &BenchReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<8} {:<26} {:>6} {:>5} {:>9} {:>9} {:>9} {:>9} {:>10} {:>8}",
        "SERVICE",
        "RPC",
        "CALLS",
        "ERR",
        "P50 ms",
        "P90 ms",
        "P99 ms",
        "MAX ms",
        "CALLS/s",
        "xVERSION"
    );
    for s in &r.rpcs {
        let _ = writeln!(
            out,
            "{:<8} {:<26} {:>6} {:>5} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>10.0} {:>8}",
            s.service.name(),
            s.rpc,
            s.calls,
            s.errors,
            s.p50_ms,
            s.p90_ms,
            s.p99_ms,
            s.max_ms,
            s.throughput_per_s,
            s.p50_vs_version
                .map_or("-".to_owned(), |x| format!("{x:.2}"))
        );
    }
    let _ = writeln!(
        out,
        "\n{} RPCs x {} calls, {} in flight, {} errors, {:.3}s (run id {})",
        r.rpcs.len(),
        r.iterations,
        r.concurrency,
        r.errors,
        r.duration_s,
        r.run_id
    );
    out
}

fn ignore<T>(r: Result<T, Status>) -> Result<(), Status> {
    r.map(|_| ())
}

/// Runs the benchmark.
#[allow(clippy::too_many_lines)]
pub async fn run(
    cfg: &BenchConfig,
    targets: &Targets,
    cancel: CancellationToken,
) -> anyhow::Result<BenchReport> {
    let start = Instant::now();
    let run_id = cfg.run_id.clone().unwrap_or_else(runner::new_run_id);
    let created = Arc::new(Created::default());
    let resolved = Resolved {
        machine_class: cfg.params.machine_class.clone().ok_or_else(String::new),
        volume_class: cfg.params.volume_class.clone().ok_or_else(String::new),
        bucket_class: cfg.params.bucket_class.clone().ok_or_else(String::new),
    };
    let resolved = resolve(targets, resolved, cfg.params.rpc_timeout).await;
    let ids = (run_id.as_str(), "bench");
    let ctx = runner::base_ctx(targets, &cfg.params, resolved, ids, created.clone());
    let body = bench_all(cfg, &ctx);
    let rpcs = tokio::select! {
        r = body => r,
        () = cancel.cancelled() => Err(anyhow::anyhow!("interrupted")),
    };
    let cleanup = runner::cleanup(
        &targets.clients,
        &run_id,
        &created,
        cfg.params.rpc_timeout,
        Duration::from_secs(60),
    )
    .await;
    if !cleanup.remaining.is_empty() {
        tracing::warn!(
            remaining = cleanup.remaining.len(),
            "bench objects still listed after cleanup"
        );
    }
    let mut rpcs = rpcs?;
    for svc in Service::ALL {
        let base = rpcs
            .iter()
            .find(|s| s.service == svc && s.rpc == "Version")
            .map(|s| s.p50_ms);
        if let Some(base) = base.filter(|b| *b > 0.0) {
            for s in rpcs.iter_mut().filter(|s| s.service == svc) {
                s.p50_vs_version = Some(s.p50_ms / base);
            }
        }
    }
    Ok(BenchReport {
        run_id,
        iterations: cfg.iterations,
        concurrency: cfg.concurrency,
        errors: rpcs.iter().map(|s| s.errors).sum(),
        rpcs,
        duration_s: start.elapsed().as_secs_f64(),
    })
}

async fn resolve(targets: &Targets, mut r: Resolved, d: Duration) -> Resolved {
    if r.machine_class.is_err()
        && let Some(mut c) = targets.clients.machine.clone()
        && let Ok(Ok(s)) = tokio::time::timeout(d, c.status(machine::StatusRequest {})).await
    {
        r.machine_class = s
            .into_inner()
            .machine_class_status
            .into_iter()
            .find_map(|c| c.machine_class.map(|c| c.name))
            .ok_or_else(|| "no machine class".to_owned());
    }
    if r.volume_class.is_err()
        && let Some(mut c) = targets.clients.volume.clone()
        && let Ok(Ok(s)) = tokio::time::timeout(d, c.status(volume::StatusRequest {})).await
    {
        r.volume_class = s
            .into_inner()
            .volume_class_status
            .into_iter()
            .find_map(|c| c.volume_class.map(|c| c.name))
            .ok_or_else(|| "no volume class".to_owned());
    }
    if r.bucket_class.is_err()
        && let Some(mut c) = targets.clients.bucket.clone()
        && let Ok(Ok(s)) = tokio::time::timeout(
            d,
            c.list_bucket_classes(bucket::ListBucketClassesRequest {}),
        )
        .await
    {
        r.bucket_class = s
            .into_inner()
            .bucket_classes
            .into_iter()
            .map(|c| c.name)
            .next()
            .ok_or_else(|| "no bucket class".to_owned());
    }
    r
}

#[allow(clippy::too_many_lines)]
async fn bench_all(cfg: &BenchConfig, ctx: &Ctx) -> anyhow::Result<Vec<RpcStats>> {
    let (n, c) = (cfg.iterations, cfg.concurrency);
    let want = |rpc: &str| cfg.focus.as_ref().is_none_or(|r| r.is_match(rpc));
    let mut out = Vec::new();

    if let Some(mc) = ctx.clients.machine.clone() {
        let s = Service::Machine;
        if want("Version") {
            out.push(
                measure("Version", s, n, c, |_| {
                    let mut mc = mc.clone();
                    async move {
                        ignore(
                            ctx.rpc(mc.version(machine::VersionRequest::default()))
                                .await,
                        )
                    }
                })
                .await,
            );
        }
        if want("Status") {
            out.push(
                measure("Status", s, n, c, |_| {
                    let mut mc = mc.clone();
                    async move { ignore(ctx.rpc(mc.status(machine::StatusRequest {})).await) }
                })
                .await,
            );
        }
        if ctx.machine_class().is_ok() {
            // Machines for the per-machine RPCs: one per in-flight slot.
            let mut ids = Vec::new();
            for _ in 0..c {
                ids.push(
                    ctx.new_machine()
                        .await
                        .context("bench setup: CreateMachine")?,
                );
            }
            let ids = &ids;
            if want("CreateMachine") {
                out.push(
                    measure("CreateMachine", s, n, c, |_| async move {
                        let spec = ctx
                            .machine_spec(&[])
                            .map_err(|e| Status::internal(e.to_string()))?;
                        ignore(ctx.try_create_machine(spec).await)
                    })
                    .await,
                );
            }
            if want("ListMachines") {
                out.push(
                    measure("ListMachines", s, n, c, |_| async move {
                        ignore(ctx.list_machines(None).await)
                    })
                    .await,
                );
            }
            if want("ListMachinesById") {
                out.push(
                    measure("ListMachinesById", s, n, c, |i| async move {
                        ignore(
                            ctx.list_machines(Some(machine::MachineFilter {
                                id: ids[i % ids.len()].clone(),
                                ..Default::default()
                            }))
                            .await,
                        )
                    })
                    .await,
                );
            }
            if want("UpdateMachineAnnotations") {
                out.push(
                    measure("UpdateMachineAnnotations", s, n, c, |i| async move {
                        let a = [("bench".to_owned(), i.to_string())].into_iter().collect();
                        crate::cases::machine_annotate(ctx, &ids[i % ids.len()], a).await
                    })
                    .await,
                );
            }
            if want("UpdateMachinePower") {
                out.push(
                    measure("UpdateMachinePower", s, n, c, |i| async move {
                        let p = if (i / ids.len()) % 2 == 0 {
                            machine::Power::Off
                        } else {
                            machine::Power::On
                        };
                        crate::cases::machine_power(ctx, &ids[i % ids.len()], p as i32).await
                    })
                    .await,
                );
            }
            if want("AttachVolume") {
                out.push(
                    measure("AttachVolume", s, n, c, |i| async move {
                        crate::cases::machine_attach_volume(
                            ctx,
                            &ids[i % ids.len()],
                            Some(ctx.local_disk(&format!("b{i}"))),
                        )
                        .await
                    })
                    .await,
                );
            }
            if want("AttachNetworkInterface") {
                out.push(
                    measure("AttachNetworkInterface", s, n, c, |i| async move {
                        crate::cases::machine_attach_nic(
                            ctx,
                            &ids[i % ids.len()],
                            Some(ctx.nic(&format!("n{i}"))),
                        )
                        .await
                    })
                    .await,
                );
            }
            if want("ListEvents") {
                out.push(
                    measure("ListEvents", s, n, c, |_| {
                        let mut mc = mc.clone();
                        async move {
                            ignore(
                                ctx.rpc(
                                    mc.list_events(machine::ListEventsRequest { filter: None }),
                                )
                                .await,
                            )
                        }
                    })
                    .await,
                );
            }
            if want("Exec") {
                out.push(
                    measure("Exec", s, n, c, |i| {
                        let mut mc = mc.clone();
                        async move {
                            ignore(
                                ctx.rpc(mc.exec(machine::ExecRequest {
                                    machine_id: ids[i % ids.len()].clone(),
                                }))
                                .await,
                            )
                        }
                    })
                    .await,
                );
            }
            if want("DeleteMachine") {
                let mut victims = Vec::new();
                for _ in 0..n {
                    victims.push(
                        ctx.new_machine()
                            .await
                            .context("bench setup: CreateMachine")?,
                    );
                }
                let victims = &victims;
                out.push(
                    measure("DeleteMachine", s, n, c, |i| async move {
                        ctx.delete_machine(&victims[i]).await
                    })
                    .await,
                );
            }
        }
    }

    if let Some(vc) = ctx.clients.volume.clone() {
        let s = Service::Volume;
        if want("Version") {
            out.push(measure("Version", s, n, c, |_| { let mut vc = vc.clone(); async move { ignore(ctx.rpc(vc.version(volume::VersionRequest::default())).await) } }).await);
        }
        if want("Status") {
            out.push(
                measure("Status", s, n, c, |_| {
                    let mut vc = vc.clone();
                    async move { ignore(ctx.rpc(vc.status(volume::StatusRequest {})).await) }
                })
                .await,
            );
        }
        if ctx.volume_class().is_ok() {
            let mut ids = Vec::new();
            for _ in 0..c {
                ids.push(
                    ctx.new_volume()
                        .await
                        .context("bench setup: CreateVolume")?,
                );
            }
            let ids = &ids;
            if want("CreateVolume") {
                out.push(
                    measure("CreateVolume", s, n, c, |_| async move {
                        let spec = ctx
                            .volume_spec(&[])
                            .map_err(|e| Status::internal(e.to_string()))?;
                        ignore(ctx.try_create_volume(spec).await)
                    })
                    .await,
                );
            }
            if want("ListVolumes") {
                out.push(
                    measure("ListVolumes", s, n, c, |_| async move {
                        ignore(ctx.list_volumes(None).await)
                    })
                    .await,
                );
            }
            if want("ExpandVolume") {
                // One size per volume, grown under its lock: calls on one volume run one after
                // another, each asking 1 MiB more than the last (with `c` calls in flight, a
                // size computed from the call's index could reach the volume after a larger
                // one and ask it to shrink).
                let sizes: Vec<tokio::sync::Mutex<i64>> = ids
                    .iter()
                    .map(|_| tokio::sync::Mutex::new(ctx.params.volume_size))
                    .collect();
                let sizes = &sizes;
                out.push(
                    measure("ExpandVolume", s, n, c, |i| async move {
                        let mut size = sizes[i % ids.len()].lock().await;
                        *size += 1 << 20;
                        ctx.expand_volume(&ids[i % ids.len()], *size).await
                    })
                    .await,
                );
            }
            if want("CreateVolumeSnapshot") {
                out.push(
                    measure("CreateVolumeSnapshot", s, n, c, |i| async move {
                        ignore(ctx.try_create_snapshot(&ids[i % ids.len()]).await)
                    })
                    .await,
                );
            }
            if want("ListVolumeSnapshots") {
                out.push(
                    measure("ListVolumeSnapshots", s, n, c, |_| async move {
                        ignore(ctx.list_snapshots(None).await)
                    })
                    .await,
                );
            }
            if want("ListEvents") {
                out.push(
                    measure("ListEvents", s, n, c, |_| {
                        let mut vc = vc.clone();
                        async move {
                            ignore(
                                ctx.rpc(vc.list_events(volume::ListEventsRequest { filter: None }))
                                    .await,
                            )
                        }
                    })
                    .await,
                );
            }
            if want("DeleteVolumeSnapshot") {
                let mut snaps = Vec::new();
                for i in 0..n {
                    let sn = ctx
                        .try_create_snapshot(&ids[i % ids.len()])
                        .await
                        .map_err(|s| anyhow::anyhow!("bench setup: CreateVolumeSnapshot: {s}"))?;
                    snaps.push(sn.metadata.map(|m| m.id).unwrap_or_default());
                }
                let snaps = &snaps;
                out.push(
                    measure("DeleteVolumeSnapshot", s, n, c, |i| async move {
                        ctx.delete_snapshot(&snaps[i]).await
                    })
                    .await,
                );
            }
            if want("DeleteVolume") {
                let mut victims = Vec::new();
                for _ in 0..n {
                    victims.push(
                        ctx.new_volume()
                            .await
                            .context("bench setup: CreateVolume")?,
                    );
                }
                let victims = &victims;
                out.push(
                    measure("DeleteVolume", s, n, c, |i| async move {
                        ctx.delete_volume(&victims[i]).await
                    })
                    .await,
                );
            }
        }
    }

    if let Some(bc) = ctx.clients.bucket.clone() {
        let s = Service::Bucket;
        if want("Version") {
            out.push(measure("Version", s, n, c, |_| { let mut bc = bc.clone(); async move { ignore(ctx.rpc(bc.version(bucket::VersionRequest::default())).await) } }).await);
        }
        if want("ListBucketClasses") {
            out.push(
                measure("ListBucketClasses", s, n, c, |_| {
                    let mut bc = bc.clone();
                    async move {
                        ignore(
                            ctx.rpc(bc.list_bucket_classes(bucket::ListBucketClassesRequest {}))
                                .await,
                        )
                    }
                })
                .await,
            );
        }
        if ctx.bucket_class().is_ok() {
            if want("CreateBucket") {
                out.push(
                    measure("CreateBucket", s, n, c, |_| async move {
                        let spec = ctx
                            .bucket_spec(&[])
                            .map_err(|e| Status::internal(e.to_string()))?;
                        ignore(ctx.try_create_bucket(spec).await)
                    })
                    .await,
                );
            }
            if want("ListBuckets") {
                out.push(
                    measure("ListBuckets", s, n, c, |_| async move {
                        ignore(ctx.list_buckets(None).await)
                    })
                    .await,
                );
            }
            if want("DeleteBucket") {
                let mut victims = Vec::new();
                for _ in 0..n {
                    victims.push(
                        ctx.create_bucket(ctx.bucket_spec(&[])?)
                            .await
                            .context("bench setup: CreateBucket")?
                            .0,
                    );
                }
                let victims = &victims;
                out.push(
                    measure("DeleteBucket", s, n, c, |i| async move {
                        ctx.delete_bucket(&victims[i]).await
                    })
                    .await,
                );
            }
        }
    }
    Ok(out)
}
