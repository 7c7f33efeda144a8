//! `ch-sim`: a Cloud Hypervisor REST API simulator taking CH's own command-line arguments.
//!
//! See the crate README for what it simulates and how the runtime's tests use it.

use std::process::ExitCode;

use ch_machine_runtime::sim::{self, SimConfig};
use clap::Parser;

/// Cloud Hypervisor API simulator (drop-in for `cloud-hypervisor --api-socket ...` in tests)
#[derive(Debug, Parser)]
#[command(name = "ch-sim", version, about)]
struct Args {
    /// API socket: `path=/run/vm.sock` or a bare path
    #[arg(long)]
    api_socket: String,
    /// Event monitor output: `path=/run/vm.events`
    #[arg(long)]
    event_monitor: Option<String>,
    /// Log file
    #[arg(long)]
    log_file: Option<std::path::PathBuf>,
    /// More log output (repeatable)
    #[arg(short, action = clap::ArgAction::Count)]
    verbose: u8,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let cfg = match build(&args) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("Error parsing command line: {e:#}");
            return ExitCode::from(1);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error starting VMM: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(sim::run(cfg)) {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("Error starting VMM: {e}");
            ExitCode::from(1)
        }
    }
}

fn build(args: &Args) -> sim::Result<SimConfig> {
    Ok(SimConfig {
        api_socket: sim::parse_path_option(&args.api_socket)?,
        event_monitor: args
            .event_monitor
            .as_deref()
            .map(sim::parse_path_option)
            .transpose()?,
        log_file: args.log_file.clone(),
        verbosity: args.verbose,
    })
}
