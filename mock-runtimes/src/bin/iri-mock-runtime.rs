//! `iri-mock-runtime`: the iri-mock machine, volume and bucket runtimes as a standalone gRPC
//! server on unix sockets, for out-of-process users (Go poollets, irictl, the conformance CLI).

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context as _;
use clap::Parser;
use iri_mock::{
    Delays, FaultRule, Method, MockRuntime, Mutant, Trigger,
    classes::{self, ClassSet},
    standalone,
};
use iri_spec::endpoint::RuntimeKind;
use irikit_bootstrap::{LogFormat, Signals};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// Serve in-memory IRI runtimes (machine, volume, bucket) on unix sockets.
#[derive(Debug, Parser)]
#[command(name = "iri-mock-runtime", version, about, long_about = None)]
struct Args {
    /// Unix socket for the MachineRuntime (a path or unix:///path).
    #[arg(long, env = "IRI_MOCK_MACHINE_SOCKET", value_name = "PATH")]
    machine_socket: Option<String>,
    /// Unix socket for the VolumeRuntime.
    #[arg(long, env = "IRI_MOCK_VOLUME_SOCKET", value_name = "PATH")]
    volume_socket: Option<String>,
    /// Unix socket for the BucketRuntime.
    #[arg(long, env = "IRI_MOCK_BUCKET_SOCKET", value_name = "PATH")]
    bucket_socket: Option<String>,
    /// YAML file with MachineClass/VolumeClass/BucketClass documents (IronCore shape).
    #[arg(long, env = "IRI_MOCK_CLASSES", value_name = "FILE")]
    classes: Option<PathBuf>,
    /// A machine class, NAME:cpu=4,memory=16Gi[,quantity=10]; repeatable; replaces file/default machine classes.
    #[arg(
        long = "machine-class",
        env = "IRI_MOCK_MACHINE_CLASSES",
        value_delimiter = ';',
        value_name = "SPEC"
    )]
    machine_classes: Vec<String>,
    /// A volume class, NAME:tps=100Mi,iops=1000[,quantity=1Ti]; repeatable.
    #[arg(
        long = "volume-class",
        env = "IRI_MOCK_VOLUME_CLASSES",
        value_delimiter = ';',
        value_name = "SPEC"
    )]
    volume_classes: Vec<String>,
    /// A bucket class, NAME:tps=100Mi,iops=1000; repeatable.
    #[arg(
        long = "bucket-class",
        env = "IRI_MOCK_BUCKET_CLASSES",
        value_delimiter = ';',
        value_name = "SPEC"
    )]
    bucket_classes: Vec<String>,
    /// PENDING → RUNNING/AVAILABLE/READY delay.
    #[arg(long, env = "IRI_MOCK_PROVISION_DELAY", value_parser = humantime::parse_duration, default_value = "0s")]
    provision_delay: Duration,
    /// Delay until a spec change (attach, detach, expand) is applied.
    #[arg(long, env = "IRI_MOCK_APPLY_DELAY", value_parser = humantime::parse_duration, default_value = "0s")]
    apply_delay: Duration,
    /// Delay until a power change reaches the machine state.
    #[arg(long, env = "IRI_MOCK_POWER_DELAY", value_parser = humantime::parse_duration, default_value = "0s")]
    power_delay: Duration,
    /// How long deleted objects stay listed (terminating).
    #[arg(long, env = "IRI_MOCK_TERMINATE_DELAY", value_parser = humantime::parse_duration, default_value = "0s")]
    terminate_delay: Duration,
    /// Turn on a mutant (a deliberate contract violation); repeatable. See --list-mutants.
    #[arg(
        long = "mutant",
        env = "IRI_MOCK_MUTANTS",
        value_delimiter = ',',
        value_name = "NAME"
    )]
    mutants: Vec<Mutant>,
    /// Inject a fault: METHOD:TRIGGER:EFFECT, e.g. CreateMachine:first=2:error=unavailable,
    /// ListMachines:always:delay=200ms, Exec:nth=3:hang, DeleteMachine:p=0.5,seed=7:drop. Repeatable.
    #[arg(
        long = "fault",
        env = "IRI_MOCK_FAULTS",
        value_delimiter = ';',
        value_name = "RULE"
    )]
    faults: Vec<String>,
    /// Report powered-off machines as MACHINE_STOPPED (5) instead of MACHINE_TERMINATED.
    #[arg(long, env = "IRI_MOCK_POWER_OFF_STOPPED")]
    power_off_stopped: bool,
    /// runtime_name answered by Version.
    #[arg(long, env = "IRI_MOCK_RUNTIME_NAME", default_value = "iri-mock")]
    runtime_name: String,
    /// Exec answers this prefix followed by the machine id (default: empty URL).
    #[arg(long, env = "IRI_MOCK_EXEC_URL_PREFIX")]
    exec_url_prefix: Option<String>,
    /// Serve a scripted console (v5.channel.k8s.io over WebSocket on loopback TCP) behind Exec
    #[arg(long, env = "IRI_MOCK_CONSOLE")]
    console: bool,
    /// Seed for reproducible ids.
    #[arg(long, env = "IRI_MOCK_SEED")]
    seed: Option<u64>,
    /// Log format.
    #[arg(long, env = "IRI_MOCK_LOG_FORMAT", value_parser = LogFormat::plain_parser(), default_value = "text")]
    log_format: LogFormat,
    /// Print the mutants with their descriptions and exit.
    #[arg(long)]
    list_mutants: bool,
}

fn socket_path(s: &str) -> anyhow::Result<PathBuf> {
    if s.contains("://") || s.starts_with("unix:") {
        match s.parse::<iri_spec::endpoint::Endpoint>()? {
            iri_spec::endpoint::Endpoint::Unix(path) => Ok(path),
            other => anyhow::bail!("{other} is not a unix socket"),
        }
    } else {
        Ok(PathBuf::from(s))
    }
}

fn parse_code(s: &str) -> anyhow::Result<tonic::Code> {
    let normalized = s.to_ascii_lowercase().replace(['_', '-'], "");
    let codes = [
        tonic::Code::Cancelled,
        tonic::Code::Unknown,
        tonic::Code::InvalidArgument,
        tonic::Code::DeadlineExceeded,
        tonic::Code::NotFound,
        tonic::Code::AlreadyExists,
        tonic::Code::PermissionDenied,
        tonic::Code::ResourceExhausted,
        tonic::Code::FailedPrecondition,
        tonic::Code::Aborted,
        tonic::Code::OutOfRange,
        tonic::Code::Unimplemented,
        tonic::Code::Internal,
        tonic::Code::Unavailable,
        tonic::Code::DataLoss,
        tonic::Code::Unauthenticated,
    ];
    if let Ok(n) = normalized.parse::<i32>() {
        return Ok(tonic::Code::from_i32(n));
    }
    codes
        .into_iter()
        .find(|c| format!("{c:?}").to_ascii_lowercase() == normalized)
        .with_context(|| format!("unknown gRPC code {s:?}"))
}

/// Parses `METHOD:TRIGGER:EFFECT` (see `--fault`).
fn parse_fault(spec: &str) -> anyhow::Result<FaultRule> {
    let mut parts = spec.splitn(3, ':');
    let (Some(method), Some(trigger), Some(effect)) = (parts.next(), parts.next(), parts.next())
    else {
        anyhow::bail!("fault {spec:?} is not METHOD:TRIGGER:EFFECT");
    };
    let trigger = match trigger.split_once('=') {
        None if trigger == "always" => Trigger::Always,
        Some(("nth", n)) => Trigger::Nth(n.parse().context("nth=N")?),
        Some(("first", n)) => Trigger::FirstN(n.parse().context("first=N")?),
        Some(("p", rest)) => {
            let (p, seed) = match rest.split_once(",seed=") {
                Some((p, seed)) => (p, seed.parse().context("seed=N")?),
                None => (rest, 0),
            };
            Trigger::Probability {
                p: p.parse().context("p=0.5")?,
                seed,
            }
        }
        _ => {
            anyhow::bail!("unknown trigger {trigger:?}: use always, nth=N, first=N or p=P[,seed=S]")
        }
    };
    let effect = match effect.split_once('=') {
        None if effect == "hang" => iri_mock::Effect::Hang,
        None if effect == "drop" => iri_mock::Effect::DropConnection,
        Some(("delay", d)) => iri_mock::Effect::Delay(humantime::parse_duration(d)?),
        Some(("error", code)) => {
            let (code, message) = code.split_once(',').unwrap_or((code, "injected fault"));
            iri_mock::Effect::error(parse_code(code)?, message)
        }
        _ => anyhow::bail!(
            "unknown effect {effect:?}: use delay=D, error=CODE[,message], hang or drop"
        ),
    };
    if method == "*" {
        return Ok(FaultRule::any_method(trigger, effect));
    }
    Ok(FaultRule::new(method.parse::<Method>()?, trigger, effect))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let sockets: Vec<(RuntimeKind, PathBuf)> = [
        (RuntimeKind::Machine, &args.machine_socket),
        (RuntimeKind::Volume, &args.volume_socket),
        (RuntimeKind::Bucket, &args.bucket_socket),
    ]
    .into_iter()
    .filter_map(|(kind, s)| s.as_deref().map(|s| socket_path(s).map(|p| (kind, p))))
    .collect::<anyhow::Result<_>>()?;
    if sockets.is_empty() {
        anyhow::bail!(
            "nothing to serve: pass --machine-socket, --volume-socket and/or --bucket-socket"
        );
    }

    let mut builder = MockRuntime::builder()
        .delays(Delays {
            provision: args.provision_delay,
            apply: args.apply_delay,
            power: args.power_delay,
            terminate: args.terminate_delay,
        })
        .runtime_name(args.runtime_name)
        .power_off_stopped(args.power_off_stopped)
        .mutants(args.mutants.iter().copied())
        // A long-running server keeps a bounded log.
        .call_log_capacity(10_000);
    if let Some(prefix) = args.exec_url_prefix {
        builder = builder.exec_url_prefix(prefix);
    }
    if args.console {
        let console = iri_mock::console::ConsoleServer::start().await?;
        tracing::info!(
            url = console.base_url(),
            "serving a scripted console behind Exec"
        );
        builder = builder.console(console);
    }
    if let Some(seed) = args.seed {
        builder = builder.seed(seed);
    }
    if let Some(path) = &args.classes {
        let set = ClassSet::from_file(path)?;
        if !set.machine.is_empty() {
            builder = builder.machine_classes(set.machine);
        }
        if !set.volume.is_empty() {
            builder = builder.volume_classes(set.volume);
        }
        if !set.bucket.is_empty() {
            builder = builder.bucket_classes(set.bucket);
        }
    }
    if !args.machine_classes.is_empty() {
        builder = builder.machine_classes(
            args.machine_classes
                .iter()
                .map(|s| classes::parse_machine_class_flag(s))
                .collect::<Result<Vec<_>, _>>()?,
        );
    }
    if !args.volume_classes.is_empty() {
        builder = builder.volume_classes(
            args.volume_classes
                .iter()
                .map(|s| classes::parse_volume_class_flag(s))
                .collect::<Result<Vec<_>, _>>()?,
        );
    }
    if !args.bucket_classes.is_empty() {
        builder = builder.bucket_classes(
            args.bucket_classes
                .iter()
                .map(|s| classes::parse_bucket_class_flag(s))
                .collect::<Result<Vec<_>, _>>()?,
        );
    }
    for spec in &args.faults {
        builder = builder.fault(parse_fault(spec).with_context(|| format!("--fault {spec:?}"))?);
    }
    let handle = builder.build();

    let token = CancellationToken::new();
    let tracker = TaskTracker::new();
    let mut bound = Vec::new();
    for (kind, path) in &sockets {
        let listener = iri_mock::bind_unix(path)?;
        bound.push(path.clone());
        tracing::info!(runtime = %kind, socket = %path.display(), "serving");
        let (handle, token) = (handle.clone(), token.clone());
        let kind = *kind;
        tracker.spawn(async move {
            if let Err(err) = standalone::serve_unix(&handle, kind, listener, token.clone()).await {
                tracing::error!(runtime = %kind, "server failed: {:#}", anyhow::Error::from(err));
                token.cancel();
            }
        });
    }
    tracker.close();
    if !args.mutants.is_empty() {
        tracing::warn!(mutants = ?args.mutants.iter().map(|m| m.name()).collect::<Vec<_>>(), "mutants on: this runtime violates the IRI contract on purpose");
    }

    let mut signals = Signals::try_register().context("install SIGTERM handler")?;
    tokio::select! {
        signal = signals.next() => tracing::info!("{}: shutting down", signal.name()),
        () = token.cancelled() => {}
    }
    token.cancel();
    let forced = !signals.drain(tracker.wait(), Duration::from_secs(10)).await;
    for path in &bound {
        let _ = std::fs::remove_file(path);
    }
    if forced {
        tracing::warn!("forced shutdown");
    } else {
        tracing::info!("stopped");
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.list_mutants {
        for m in Mutant::ALL {
            // The listing is the command's output.
            #[allow(clippy::print_stdout)]
            {
                println!("{:<34} {}", m.name(), m.description());
            }
        }
        return ExitCode::SUCCESS;
    }
    irikit_bootstrap::init_tracing(args.log_format, "info");
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("iri-mock-runtime: start tokio runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("iri-mock-runtime: {err:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_parse() {
        assert_eq!(
            parse_fault("CreateMachine:first=2:error=unavailable").unwrap(),
            FaultRule::new(
                Method::CreateMachine,
                Trigger::FirstN(2),
                iri_mock::Effect::error(tonic::Code::Unavailable, "injected fault")
            )
        );
        assert!(parse_fault("*:p=0.5,seed=7:drop").is_ok());
        assert!(parse_fault("Exec:nth=3:hang").is_ok());
        assert!(parse_fault("ListMachines:always:delay=200ms").is_ok());
        assert!(parse_fault("ListMachines:always:error=not_found,gone").is_ok());
        assert!(parse_fault("Nope:always:hang").is_err());
        assert!(parse_fault("Exec:sometimes:hang").is_err());
        assert!(parse_fault("Exec:always").is_err());
        assert!(parse_fault("Exec:always:error=bogus").is_err());
    }

    #[test]
    fn args_verify() {
        use clap::CommandFactory;
        Args::command().debug_assert();
    }
}
