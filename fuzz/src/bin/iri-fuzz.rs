//! `iri-fuzz`: fuzzes IRI runtime servers on unix sockets (or TCP) and prints inputs/s and
//! findings per server. Exit status: 0 nothing found, 1 findings, 2 usage or connection error.
//!
//! ```sh
//! iri-fuzz --machine-endpoint unix:///run/iri-machine.sock --inputs 1000000 --seed 7
//! ```

use std::{process::ExitCode, time::Duration};

use anyhow::Context as _;
use clap::Parser;
use iri_fuzz::{Config, Report, Service};
use iri_spec::endpoint::Endpoint;

/// Fuzz IRI runtime servers: hostile well-typed requests and wire-level garbage.
#[derive(Debug, Parser)]
#[command(name = "iri-fuzz", version, about)]
struct Args {
    /// MachineRuntime endpoint (`unix:///path` or a path).
    #[arg(long, value_name = "ENDPOINT")]
    machine_endpoint: Option<String>,
    /// VolumeRuntime endpoint.
    #[arg(long, value_name = "ENDPOINT")]
    volume_endpoint: Option<String>,
    /// BucketRuntime endpoint.
    #[arg(long, value_name = "ENDPOINT")]
    bucket_endpoint: Option<String>,
    /// Inputs per server.
    #[arg(long, default_value_t = 10_000)]
    inputs: u64,
    /// RNG seed (a run is reproducible from it).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Deadline of one call; a call that exceeds it counts as a hang.
    #[arg(long, value_parser = humantime_secs, default_value = "10")]
    deadline: Duration,
    /// Share of wire-level garbage among the inputs, 0 to 1.
    #[arg(long, default_value_t = 0.3)]
    garbage_share: f64,
    /// Write the reports as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Send one input instead of fuzzing: `METHOD HEX` (a finding's method and first input) to
    /// the one endpoint given, and print the answer.
    #[arg(long, num_args = 2, value_names = ["METHOD", "HEX"])]
    replay: Option<Vec<String>>,
}

fn humantime_secs(s: &str) -> Result<Duration, String> {
    s.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v > 0.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("{s:?}: want a positive number of seconds"))
}

fn endpoint(s: &str) -> anyhow::Result<Endpoint> {
    if s.contains("://") || s.starts_with("unix:") {
        Ok(s.parse()?)
    } else {
        Ok(Endpoint::unix(s))
    }
}

fn print(report: &Report) {
    let codes: Vec<String> = report
        .codes
        .iter()
        .map(|(code, n)| format!("{code} {n}"))
        .collect();
    eprintln!(
        "{:?}: {} inputs ({} wire-level garbage) in {:.1} s, {:.0} inputs/s; answers: {}",
        report.service,
        report.inputs,
        report.garbage,
        report.seconds,
        report.inputs_per_second,
        codes.join(", ")
    );
    if report.findings.is_empty() {
        eprintln!("  findings: none");
    }
    for f in &report.findings {
        let example: String = f.example_hex.chars().take(160).collect();
        eprintln!(
            "  FINDING {} {} x{}: {}\n    first input (hex, {} bytes): {example}{}",
            f.method,
            f.what,
            f.count,
            f.message,
            f.example_hex.len() / 2,
            if f.example_hex.len() > 160 { "…" } else { "" }
        );
    }
}

async fn run(args: Args) -> anyhow::Result<bool> {
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.garbage_share),
        "--garbage-share must be between 0 and 1"
    );
    let targets = [
        (Service::Machine, &args.machine_endpoint),
        (Service::Volume, &args.volume_endpoint),
        (Service::Bucket, &args.bucket_endpoint),
    ];
    anyhow::ensure!(
        targets.iter().any(|(_, e)| e.is_some()),
        "name at least one of --machine-endpoint, --volume-endpoint, --bucket-endpoint"
    );
    let config = Config {
        inputs: args.inputs,
        seed: args.seed,
        deadline: args.deadline,
        garbage_share: args.garbage_share,
    };
    if let Some(replay) = &args.replay {
        let [method, hex] = replay.as_slice() else {
            anyhow::bail!("--replay takes METHOD HEX");
        };
        let mut given = targets
            .iter()
            .filter_map(|(s, e)| e.as_ref().map(|e| (*s, e)));
        let (Some((service, text)), None) = (given.next(), given.next()) else {
            anyhow::bail!("--replay needs exactly one endpoint");
        };
        let bytes = iri_fuzz::unhex(hex).context("--replay: HEX is not hex")?;
        let channel = iri_spec::endpoint::connect(&endpoint(text)?)
            .await
            .with_context(|| format!("connect to {text}"))?;
        let input = iri_fuzz::Input {
            service,
            method: Box::leak(method.clone().into_boxed_str()),
            bytes,
            garbage: true,
        };
        match iri_fuzz::send(&channel, &input, args.deadline).await {
            Ok(answer) => eprintln!("OK, {} bytes", answer.len()),
            Err(status) => eprintln!("{:?}: {}", status.code(), status.message()),
        }
        return Ok(true);
    }
    let mut reports = Vec::new();
    for (service, endpoint_arg) in targets {
        let Some(text) = endpoint_arg else { continue };
        let endpoint = endpoint(text).with_context(|| format!("endpoint {text:?}"))?;
        let channel = iri_spec::endpoint::connect(&endpoint)
            .await
            .with_context(|| format!("connect to {text}"))?;
        let report = iri_fuzz::run(&channel, service, &config).await;
        print(&report);
        reports.push(report);
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&reports)?)
            .with_context(|| format!("write {}", path.display()))?;
    }
    Ok(reports.iter().all(|r| r.findings.is_empty()))
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(err) => {
            eprintln!("iri-fuzz: {err:#}");
            ExitCode::from(2)
        }
    }
}
