//! `irictl`: inspect and drive any IRI runtime (machine, volume, bucket) over gRPC, in the spirit
//! of IronCore's `irictl-machine`, `irictl-volume` and `irictl-bucket`, as one binary.
//!
//! Endpoints are found as IronCore finds them: `--machine-endpoint` (or `--address`), else
//! `IRI_MACHINE_RUNTIME_ENDPOINT`, else the well-known sockets polled for `--discovery-timeout`
//! (3 s); the same for volume and bucket. Every error is one line on stderr, `irictl: ...`, with
//! the gRPC status code name where the runtime answered with one, and a non-zero exit status.

mod client;
mod codec;
mod commands;
mod console;
mod kind;
mod table;

use std::{process::ExitCode, time::Duration};

use clap::{Args as ClapArgs, Parser, Subcommand, ValueEnum};
use irikit_bootstrap::LogFormat;

/// Inspect and drive any IRI runtime (machine, volume, bucket) over gRPC.
#[derive(Debug, Parser)]
#[command(name = "irictl", version, after_help = AFTER_HELP)]
pub(crate) struct Args {
    #[command(flatten)]
    pub(crate) global: Global,
    #[command(subcommand)]
    pub(crate) command: Command,
}

const AFTER_HELP: &str = "\
Kinds: machine(s)/mach/machs, volume(s)/vol/vols, volumesnapshot(s)/volsnap/volsnaps, bucket(s),
bucketclass(es), networkinterface(s)/nic/nics; get also takes status, events and version.
Input files are YAML or JSON with the proto's snake_case field names; unknown fields are rejected.";

/// Flags every command takes.
#[derive(Debug, ClapArgs)]
#[command(next_help_heading = "Global options")]
pub(crate) struct Global {
    /// Machine runtime endpoint (unix:///path or tcp://host:port); else IRI_MACHINE_RUNTIME_ENDPOINT, else the well-known sockets.
    #[arg(long, global = true, value_name = "URI")]
    pub(crate) machine_endpoint: Option<String>,
    /// Volume runtime endpoint; else IRI_VOLUME_RUNTIME_ENDPOINT, else the well-known sockets.
    #[arg(long, global = true, value_name = "URI")]
    pub(crate) volume_endpoint: Option<String>,
    /// Bucket runtime endpoint; else IRI_BUCKET_RUNTIME_ENDPOINT, else the well-known sockets.
    #[arg(long, global = true, value_name = "URI")]
    pub(crate) bucket_endpoint: Option<String>,
    /// Endpoint of the runtime the command talks to (IronCore's flag); the specific flags win.
    #[arg(long, global = true, value_name = "URI")]
    pub(crate) address: Option<String>,
    /// Runtime for `get status|events|version`; default: the one whose endpoint flag alone is given, else machine.
    #[arg(long, global = true, value_enum, env = "IRICTL_SERVICE")]
    pub(crate) service: Option<Service>,
    /// Deadline of every gRPC call (and of connecting).
    #[arg(long, global = true, default_value = "10s", value_parser = parse_duration, env = "IRICTL_TIMEOUT")]
    pub(crate) timeout: Duration,
    /// How long to poll the well-known sockets when no endpoint is given.
    #[arg(long, global = true, default_value = "3s", value_parser = parse_duration, env = "IRICTL_DISCOVERY_TIMEOUT")]
    pub(crate) discovery_timeout: Duration,
    /// Log format on stderr (level from RUST_LOG, default warn).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "IRICTL_LOG_FORMAT"
    )]
    pub(crate) log_format: LogFormat,
}

/// The three IRI services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Service {
    /// `machine.v1alpha1.MachineRuntime`.
    Machine,
    /// `volume.v1alpha1.VolumeRuntime`.
    Volume,
    /// `bucket.v1alpha1.BucketRuntime`.
    Bucket,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Output {
    /// Aligned columns.
    Table,
    /// JSON with the proto field names.
    Json,
    /// YAML with the proto field names.
    Yaml,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// List objects, classes (status), events or the runtime version.
    Get {
        /// machine, volume, volumesnapshot, bucket, bucketclass, status, events or version (or an alias).
        kind: String,
        /// Only the object (or, for events, the involved object) with this id.
        id: Option<String>,
        /// Label selector (equality), repeatable or comma separated: -l app=web,tier=db.
        #[arg(short = 'l', long = "labels", value_name = "KEY=VALUE", value_parser = parse_label, value_delimiter = ',')]
        labels: Vec<(String, String)>,
        /// For events: how far back to look.
        #[arg(short = 'd', long = "duration", default_value = "60m", value_parser = parse_duration)]
        duration: Duration,
        /// Output format.
        #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
        output: Output,
    },
    /// Create objects from a YAML or JSON file (several with `---` or a JSON array).
    Create {
        /// machine, volume, volumesnapshot or bucket; else a top-level `kind:` in each document,
        /// else the only kind the document decodes as.
        kind: Option<String>,
        /// File to read; `-` reads stdin.
        #[arg(short = 'f', long = "filename", value_name = "FILE")]
        filename: String,
        /// Print the created objects in this format instead of "Created <kind> <id>".
        #[arg(short = 'o', long = "output", value_enum)]
        output: Option<Output>,
    },
    /// Delete objects by id.
    Delete {
        /// machine, volume, volumesnapshot or bucket (or an alias).
        kind: String,
        /// Ids to delete.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Change a machine: power, a volume, annotations.
    Update {
        #[command(subcommand)]
        what: UpdateCommand,
    },
    /// Grow a volume (ExpandVolume).
    Expand {
        /// volume (or an alias).
        kind: String,
        /// The volume id.
        id: String,
        /// New size in bytes, or with a suffix: 10Gi, 500Mi, 1G.
        #[arg(long, value_parser = parse_size)]
        size: i64,
    },
    /// Attach a volume or network interface, read from a file, to a machine.
    Attach {
        /// volume or networkinterface (or an alias).
        kind: String,
        /// File with a machine.v1alpha1.Volume or NetworkInterface; `-` reads stdin.
        #[arg(short = 'f', long = "filename", value_name = "FILE")]
        filename: String,
        /// The machine.
        #[arg(long)]
        machine_id: String,
    },
    /// Detach volumes or network interfaces from a machine by name.
    Detach {
        /// volume or networkinterface (or an alias).
        kind: String,
        /// Names to detach.
        #[arg(required = true)]
        names: Vec<String>,
        /// The machine.
        #[arg(long)]
        machine_id: String,
    },
    /// Open a machine's console (Exec); --url-only prints its URL.
    ///
    /// The console is the remotecommand v5.channel.k8s.io stream over WebSocket that the
    /// URL Exec answers serves. On a terminal: interactive, raw mode, Ctrl+] leaves. Otherwise stdin goes
    /// to the console and its output to stdout until the session ends (after stdin closed,
    /// once the console was quiet briefly); a failure status exits non-zero.
    Exec {
        /// The machine.
        machine_id: String,
        /// Only print the URL Exec answers.
        #[arg(long)]
        url_only: bool,
    },
}

/// `update` sub-verbs.
#[derive(Debug, Subcommand)]
pub(crate) enum UpdateCommand {
    /// Set a machine's power.
    Power {
        /// The machine.
        #[arg(long)]
        machine_id: String,
        /// on, off, 0 (on) or 1 (off), or POWER_ON / POWER_OFF.
        #[arg(long, value_parser = parse_power)]
        power: i32,
    },
    /// Replace a volume of a machine (UpdateVolume), matched by name.
    Volume {
        /// File with a machine.v1alpha1.Volume; `-` reads stdin.
        #[arg(short = 'f', long = "filename", value_name = "FILE")]
        filename: String,
        /// The machine.
        #[arg(long)]
        machine_id: String,
    },
    /// Replace the whole annotation map of a machine.
    Annotations {
        /// The machine.
        #[arg(long)]
        machine_id: String,
        /// The new annotations; all others are removed.
        #[arg(value_name = "KEY=VALUE", value_parser = parse_label, required_unless_present = "clear")]
        annotations: Vec<(String, String)>,
        /// Remove every annotation.
        #[arg(long, conflicts_with = "annotations")]
        clear: bool,
    },
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|err| format!("{err} (e.g. 10s, 60m, 1h30m)"))
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("{text:?} is not KEY=VALUE")),
    }
}

fn parse_power(text: &str) -> Result<i32, String> {
    use iri_spec::machine::v1alpha1::Power;
    match text.to_ascii_lowercase().as_str() {
        "on" | "0" | "power_on" => Ok(Power::On as i32),
        "off" | "1" | "power_off" => Ok(Power::Off as i32),
        _ => Err(format!("{text:?} is not on, off, 0 or 1")),
    }
}

fn parse_size(text: &str) -> Result<i64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, suffix) = text.split_at(split);
    let number: i64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size such as 10Gi or 1073741824"))?;
    let unit: i64 = match suffix {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "P" => 1_000_000_000_000_000,
        _ => {
            return Err(format!(
                "{text:?} has unknown suffix {suffix:?}: use Ki, Mi, Gi, Ti, Pi, k, M, G, T or P"
            ));
        }
    };
    number
        .checked_mul(unit)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// One line, whatever the runtime put into its messages.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The error and its causes joined by `: `, skipping causes whose text is already shown (some
/// transport errors repeat their source in their own message).
pub(crate) fn error_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if text.is_empty() || line.ends_with(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    one_line(&line)
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(err) => {
            use clap::error::ErrorKind;
            if matches!(
                err.kind(),
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
            ) {
                err.exit();
            }
            let rendered = err.to_string();
            let first = rendered.lines().next().unwrap_or_default();
            let first = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("irictl: {} (see irictl --help)", one_line(first));
            return ExitCode::from(2);
        }
    };
    irikit_bootstrap::init_tracing(args.global.log_format, "warn");
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("irictl: start the tokio runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if err.downcast_ref::<commands::Reported>().is_some() => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("irictl: {}", error_line(&err));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Args::command().debug_assert();
    }

    #[test]
    fn error_lines_skip_repeated_causes_and_newlines() {
        let inner = anyhow::anyhow!("No such file (os error 2)");
        let err = inner
            .context("transport error: No such file (os error 2)")
            .context("connect to unix:///x");
        assert_eq!(
            error_line(&err),
            "connect to unix:///x: transport error: No such file (os error 2)"
        );
        let err = anyhow::anyhow!("Internal: line one\nline two").context("list machines");
        assert_eq!(
            error_line(&err),
            "list machines: Internal: line one line two"
        );
    }

    #[test]
    fn sizes_and_power() {
        assert_eq!(parse_size("10Gi").unwrap(), 10 << 30);
        assert_eq!(parse_size("1G").unwrap(), 1_000_000_000);
        assert_eq!(parse_size("42").unwrap(), 42);
        assert!(parse_size("10Xi").is_err());
        assert!(parse_size("Gi").is_err());
        assert!(parse_size("99999999999Pi").is_err());
        assert_eq!(parse_power("OFF").unwrap(), 1);
        assert_eq!(parse_power("0").unwrap(), 0);
        assert!(parse_power("2").is_err());
    }
}
