//! `iri-mock-bench`: throughput of CreateMachine+DeleteMachine pairs against the mock over a unix
//! socket, beside a bare tonic server answering the same two RPCs trivially on the same kind of
//! socket (the ratio is the mock's efficiency; goal >= 0.7), and the memory per stored machine
//! at 100k machines (RSS delta; goal <= 2 KiB). Run it with `--release`.
// The figures on stdout are this command's output.
#![allow(clippy::print_stdout)]

use std::{collections::HashMap, path::Path, time::Instant};

use anyhow::Context as _;
use clap::Parser;
use iri_mock::MockRuntime;
use iri_spec::{
    endpoint::Endpoint,
    machine::v1alpha1::{
        self as machine,
        machine_runtime_client::MachineRuntimeClient,
        machine_runtime_server::{MachineRuntime, MachineRuntimeServer},
    },
    meta::v1alpha1 as meta,
};
use tonic::{Request, Response, Status, transport::Channel};

/// Benchmark the iri-mock runtime.
#[derive(Debug, Parser)]
#[command(name = "iri-mock-bench", version, about)]
struct Args {
    /// Create+Delete pairs per measured round.
    #[arg(long, default_value_t = 20_000)]
    pairs: usize,
    /// Concurrent client tasks.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Measured rounds; each runs both servers back to back (the median ratio counts).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Machines stored for the memory figure.
    #[arg(long, default_value_t = 100_000)]
    machines: usize,
    /// Call-log capacity of the mock in the throughput part (default: the mock's default, 100 000).
    #[arg(long)]
    call_log_capacity: Option<usize>,
    /// Run only one part.
    #[arg(long, value_enum)]
    only: Option<Part>,
    /// Also run a mock without the `:authority` rewrite (the `strict-authority` mutant) in the
    /// same rounds, and report both ratios to the echo (the rewrite's cost).
    #[arg(long)]
    compare_strict: bool,
    /// Events kept per service during the memory measurement (the mock's default is 10 000).
    #[arg(long, default_value_t = 10_000)]
    event_capacity: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Part {
    Throughput,
    Memory,
}

/// A realistic machine as a machinepoollet creates it: uid/namespace/name labels, generation
/// annotations, one remote volume, one NIC, no ignition.
fn poollet_machine(i: usize) -> machine::Machine {
    let s = |x: &str| x.to_owned();
    machine::Machine {
        metadata: Some(meta::ObjectMetadata {
            labels: HashMap::from([
                (
                    s(iri_spec::keys::MACHINE_UID_LABEL),
                    format!("3f1c1b9e-0d5a-4c1e-9d7a-{i:012}"),
                ),
                (s(iri_spec::keys::MACHINE_NAMESPACE_LABEL), s("default")),
                (
                    s(iri_spec::keys::MACHINE_NAME_LABEL),
                    format!("machine-{i}"),
                ),
            ]),
            annotations: HashMap::from([
                (s(iri_spec::keys::MACHINE_GENERATION_ANNOTATION), s("1")),
                (s(iri_spec::keys::IRI_MACHINE_GENERATION_ANNOTATION), s("0")),
            ]),
            ..Default::default()
        }),
        spec: Some(machine::MachineSpec {
            power: machine::Power::On as i32,
            class: s("x3-small"),
            volumes: vec![machine::Volume {
                name: s("root"),
                device: s("oda"),
                local_disk: None,
                connection: Some(machine::VolumeConnection {
                    driver: s("ceph"),
                    handle: format!("pool/volume-{i}"),
                    ..Default::default()
                }),
            }],
            network_interfaces: vec![machine::NetworkInterface {
                name: s("primary"),
                network_id: s("net-1"),
                ips: vec![s("10.0.0.5")],
                attributes: HashMap::new(),
            }],
            ..Default::default()
        }),
        status: None,
    }
}

/// One pair: creates poollet machine `i`, then deletes it by the id Create answered.
async fn create_delete(client: &mut MachineRuntimeClient<Channel>, i: usize) -> Result<(), Status> {
    let machine = Some(poollet_machine(i));
    let created = client
        .create_machine(machine::CreateMachineRequest { machine })
        .await?
        .into_inner();
    let machine_id = created
        .machine
        .and_then(|m| m.metadata)
        .map(|m| m.id)
        .unwrap_or_default();
    client
        .delete_machine(machine::DeleteMachineRequest { machine_id })
        .await?;
    Ok(())
}

/// The baseline: a bare tonic MachineRuntime answering Create and Delete trivially.
#[derive(Debug, Default)]
struct Echo;

/// `impl MachineRuntime for Echo`: the RPCs that answer (`rpc(Request) -> Response = |request|
/// response`), then every other RPC, answering `Unimplemented` (message types of `machine`).
macro_rules! echo_runtime {
    (
        answering { $($rpc:ident($req:ident) -> $resp:ident = |$r:pat_param| $answer:expr;)* }
        unimplemented { $($none:ident($none_req:ident) -> $none_resp:ident;)* }
    ) => {
        #[tonic::async_trait]
        impl MachineRuntime for Echo {
            $(
                async fn $rpc(
                    &self,
                    r: Request<machine::$req>,
                ) -> Result<Response<machine::$resp>, Status> {
                    let $r = r.into_inner();
                    Ok(Response::new($answer))
                }
            )*
            $(
                async fn $none(
                    &self,
                    _: Request<machine::$none_req>,
                ) -> Result<Response<machine::$none_resp>, Status> {
                    Err(Status::unimplemented("echo"))
                }
            )*
        }
    };
}

echo_runtime! {
    answering {
        version(VersionRequest) -> VersionResponse = |r| machine::VersionResponse {
            runtime_name: r.version,
            runtime_version: String::new(),
        };
        create_machine(CreateMachineRequest) -> CreateMachineResponse = |r| {
            machine::CreateMachineResponse { machine: r.machine }
        };
        delete_machine(DeleteMachineRequest) -> DeleteMachineResponse = |_| {
            machine::DeleteMachineResponse {}
        };
    }
    unimplemented {
        list_events(ListEventsRequest) -> ListEventsResponse;
        list_machines(ListMachinesRequest) -> ListMachinesResponse;
        update_machine_annotations(UpdateMachineAnnotationsRequest) -> UpdateMachineAnnotationsResponse;
        update_machine_power(UpdateMachinePowerRequest) -> UpdateMachinePowerResponse;
        attach_volume(AttachVolumeRequest) -> AttachVolumeResponse;
        detach_volume(DetachVolumeRequest) -> DetachVolumeResponse;
        update_volume(UpdateVolumeRequest) -> UpdateVolumeResponse;
        attach_network_interface(AttachNetworkInterfaceRequest) -> AttachNetworkInterfaceResponse;
        detach_network_interface(DetachNetworkInterfaceRequest) -> DetachNetworkInterfaceResponse;
        status(StatusRequest) -> StatusResponse;
        exec(ExecRequest) -> ExecResponse;
    }
}

/// CPU time (user + system) of this process in seconds, from /proc/self/stat. Clients and
/// server share the process, so the CPU time per pair is a second, contention-proof figure.
fn cpu_seconds() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").context("read /proc/self/stat")?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat
        .rsplit_once(')')
        .context("malformed /proc/self/stat")?
        .1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11).context("no utime")?.parse()?;
    let stime: u64 = fields.get(12).context("no stime")?.parse()?;
    // USER_HZ is 100 on every Linux ABI that matters here.
    #[allow(clippy::cast_precision_loss)]
    Ok((utime + stime) as f64 / 100.0)
}

/// Pairs per wall-clock second and per CPU second.
#[derive(Debug, Clone, Copy, Default)]
struct Rate {
    wall: f64,
    cpu: f64,
}

/// Runs `pairs` Create+Delete pairs over `concurrency` tasks.
async fn pairs_per_second(
    channel: &Channel,
    pairs: usize,
    concurrency: usize,
) -> anyhow::Result<Rate> {
    let start = Instant::now();
    let cpu_start = cpu_seconds()?;
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..concurrency {
        let mut client = MachineRuntimeClient::new(channel.clone());
        let n = pairs / concurrency + usize::from(worker < pairs % concurrency);
        tasks.spawn(async move {
            for i in 0..n {
                create_delete(&mut client, worker * 1_000_000 + i).await?;
            }
            Ok::<_, Status>(())
        });
    }
    while let Some(res) = tasks.join_next().await {
        res.context("client task")?.context("rpc")?;
    }
    let cpu = (cpu_seconds()? - cpu_start).max(0.01);
    #[allow(clippy::cast_precision_loss)]
    let pairs = pairs as f64;
    Ok(Rate {
        wall: pairs / start.elapsed().as_secs_f64(),
        cpu: pairs / cpu,
    })
}

async fn echo_server(path: &Path) -> anyhow::Result<Channel> {
    let listener = iri_mock::bind_unix(path)?;
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(MachineRuntimeServer::new(Echo))
            .serve_with_incoming(incoming),
    );
    Ok(iri_spec::endpoint::connect(&Endpoint::Unix(path.to_owned())).await?)
}

fn rss_kib() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status").context("read /proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS in /proc/self/status")?;
    line.split_whitespace()
        .nth(1)
        .context("malformed VmRSS")?
        .parse()
        .context("malformed VmRSS")
}

/// The median of `values` (the mean of the middle two for an even count); 0 when empty.
fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => f64::midpoint(sorted[n / 2 - 1], sorted[n / 2]),
    }
}

async fn throughput(args: &Args) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut builder = MockRuntime::builder();
    if let Some(n) = args.call_log_capacity {
        builder = builder.call_log_capacity(n);
    }
    let strict = if args.compare_strict {
        Some(
            builder
                .clone()
                .mutant(iri_mock::Mutant::StrictAuthority)
                .start_unix(dir.path().join("strict.sock"))
                .await?,
        )
    } else {
        None
    };
    let mock = builder.start_unix(dir.path().join("mock.sock")).await?;
    let mock_channel =
        iri_spec::endpoint::connect(&mock.endpoint().context("unix endpoint")?).await?;
    let strict_channel = match &strict {
        Some(s) => {
            Some(iri_spec::endpoint::connect(&s.endpoint().context("unix endpoint")?).await?)
        }
        None => None,
    };
    let echo_channel = echo_server(&dir.path().join("echo.sock")).await?;
    // Warm up both.
    pairs_per_second(&mock_channel, 2_000, args.concurrency).await?;
    pairs_per_second(&echo_channel, 2_000, args.concurrency).await?;
    if let Some(c) = &strict_channel {
        pairs_per_second(c, 2_000, args.concurrency).await?;
    }
    let (mut strict_wall_ratios, mut strict_cpu_ratios) = (Vec::new(), Vec::new());
    // Rounds interleave the two servers, alternating which goes first, so load drift on a
    // shared machine hits both sides alike; each round's ratio compares neighbouring runs.
    let (mut wall_ratios, mut cpu_ratios) = (Vec::new(), Vec::new());
    let (mut mock_rates, mut echo_rates) = (Vec::new(), Vec::new());
    for round in 1..=args.rounds {
        // The strict mock runs first in odd rounds and last in even ones (the echo the other
        // way round), so drift hits both mocks alike.
        let mut strict_rate = None;
        if let Some(c) = strict_channel.as_ref().filter(|_| round % 2 == 1) {
            strict_rate = Some(pairs_per_second(c, args.pairs, args.concurrency).await?);
        }
        let (m, e) = if round % 2 == 1 {
            let e = pairs_per_second(&echo_channel, args.pairs, args.concurrency).await?;
            let m = pairs_per_second(&mock_channel, args.pairs, args.concurrency).await?;
            (m, e)
        } else {
            let m = pairs_per_second(&mock_channel, args.pairs, args.concurrency).await?;
            let e = pairs_per_second(&echo_channel, args.pairs, args.concurrency).await?;
            (m, e)
        };
        println!(
            "round {round}: mock {:>7.0} pairs/s ({:>7.0}/cpu-s)   echo {:>7.0} pairs/s ({:>7.0}/cpu-s)   ratio {:.2} (cpu {:.2})",
            m.wall,
            m.cpu,
            e.wall,
            e.cpu,
            m.wall / e.wall,
            m.cpu / e.cpu
        );
        if let Some(c) = strict_channel.as_ref().filter(|_| round % 2 == 0) {
            strict_rate = Some(pairs_per_second(c, args.pairs, args.concurrency).await?);
        }
        if let Some(s) = strict_rate {
            println!(
                "         strict (no rewrite) {:>7.0} pairs/s ({:>7.0}/cpu-s)   ratio {:.2} (cpu {:.2})",
                s.wall,
                s.cpu,
                s.wall / e.wall,
                s.cpu / e.cpu
            );
            strict_wall_ratios.push(s.wall / e.wall);
            strict_cpu_ratios.push(s.cpu / e.cpu);
        }
        wall_ratios.push(m.wall / e.wall);
        cpu_ratios.push(m.cpu / e.cpu);
        mock_rates.push(m);
        echo_rates.push(e);
    }
    let best = |rates: &[Rate], f: fn(&Rate) -> f64| rates.iter().map(f).fold(0f64, f64::max);
    let (mock_wall, echo_wall) = (best(&mock_rates, |r| r.wall), best(&echo_rates, |r| r.wall));
    let (mock_cpu, echo_cpu) = (best(&mock_rates, |r| r.cpu), best(&echo_rates, |r| r.cpu));
    println!(
        "create+delete over unix socket ({} pairs x {} interleaved rounds, {} concurrent clients):",
        args.pairs, args.rounds, args.concurrency
    );
    println!("  best round        pairs/s     pairs/cpu-s");
    println!("  iri-mock          {mock_wall:>9.0}   {mock_cpu:>9.0}");
    println!("  bare tonic echo   {echo_wall:>9.0}   {echo_cpu:>9.0}");
    println!(
        "  ratio of bests    {:>9.2}   {:>9.2}",
        mock_wall / echo_wall,
        mock_cpu / echo_cpu
    );
    println!(
        "  median ratio      {:>9.2}   {:>9.2}   (goal >= 0.70)",
        median(&wall_ratios),
        median(&cpu_ratios)
    );
    if let Some(strict) = strict {
        println!(
            "  median ratio without the :authority rewrite (strict-authority) {:>6.2}   {:>6.2}",
            median(&strict_wall_ratios),
            median(&strict_cpu_ratios)
        );
        println!(
            "  cost of the rewrite (strict - with)                           {:>6.2}   {:>6.2}   (goal <= 0.03)",
            median(&strict_wall_ratios) - median(&wall_ratios),
            median(&strict_cpu_ratios) - median(&cpu_ratios)
        );
        strict.shutdown().await?;
    }
    mock.shutdown().await?;
    Ok(())
}

async fn memory(args: &Args) -> anyhow::Result<()> {
    // No call log: it would keep every request; events are a bounded ring (default 10 000).
    let mock = MockRuntime::builder()
        .call_log_capacity(0)
        .event_capacity(args.event_capacity)
        .start_in_process()
        .await?;
    let mut client = MachineRuntimeClient::new(mock.machine_channel());
    // Warm up the transport and allocator pools, leave nothing stored.
    for i in 0..1_000 {
        create_delete(&mut client, i).await?;
    }
    anyhow::ensure!(mock.machine_count() == 0, "warm-up left machines behind");
    let before = rss_kib()?;
    for i in 0..args.machines {
        client
            .create_machine(machine::CreateMachineRequest {
                machine: Some(poollet_machine(i)),
            })
            .await?;
    }
    let stored = mock.machine_count();
    let after = rss_kib()?;
    anyhow::ensure!(
        stored == args.machines,
        "stored {stored} of {}",
        args.machines
    );
    #[allow(clippy::cast_precision_loss)]
    let per_machine = (after.saturating_sub(before) * 1024) as f64 / stored as f64;
    println!(
        "memory: {stored} stored machines, RSS {before} KiB -> {after} KiB: {per_machine:.0} bytes per machine (goal <= 2048)"
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.only != Some(Part::Memory) {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(throughput(&args))?;
    }
    if args.only != Some(Part::Throughput) {
        // A single-threaded runtime keeps allocations in one malloc arena for a cleaner RSS delta.
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(memory(&args))?;
    }
    Ok(())
}
