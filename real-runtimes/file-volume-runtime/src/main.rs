//! `file-volume-runtime`: an IRI VolumeRuntime storing volumes as files under `--root`.
//!
//! args → config → tracing → serve; SIGINT/SIGTERM stop it gracefully (state is on disk).

use std::{path::PathBuf, process::ExitCode};

use clap::Parser;
use file_volume_runtime::{Config, Format, VolumeClass};

#[path = "../../shared/cli.rs"]
mod cli;

/// IRI VolumeRuntime backed by sparse raw / qcow2 files
#[derive(Debug, Parser)]
#[command(name = "file-volume-runtime", version, about)]
struct Args {
    /// gRPC unix socket to listen on (a path, or unix:///path)
    #[arg(long, visible_alias = "address", env = "IRI_VOLUME_RUNTIME_SOCKET")]
    socket: Option<String>,
    /// Same as --socket, in endpoint form (unix:///path)
    #[arg(long, env = "IRI_VOLUME_RUNTIME_ENDPOINT", conflicts_with = "socket")]
    endpoint: Option<String>,
    /// Root directory for volume files and state
    #[arg(long, env = "IRI_FILE_VOLUME_ROOT")]
    root: PathBuf,
    /// Volume class `name,tps,iops[,raw|qcow2]` (repeatable)
    #[arg(
        long = "volume-class",
        env = "IRI_FILE_VOLUME_CLASSES",
        value_delimiter = ';'
    )]
    volume_classes: Vec<VolumeClass>,
    /// YAML file with `volumeClasses: [{name, tps, iops, format}]`
    #[arg(long, env = "IRI_FILE_VOLUME_CLASS_FILE")]
    volume_class_file: Option<PathBuf>,
    /// Default file format
    #[arg(
        long,
        env = "IRI_FILE_VOLUME_FORMAT",
        value_enum,
        default_value = "raw"
    )]
    format: Format,
    /// Directory image data sources may come from (repeatable)
    #[arg(
        long = "image-dir",
        env = "IRI_FILE_VOLUME_IMAGE_DIRS",
        value_delimiter = ':'
    )]
    image_dirs: Vec<PathBuf>,
    /// Largest volume in bytes (default: the size of the filesystem holding --root)
    #[arg(long, env = "IRI_FILE_VOLUME_MAX_BYTES")]
    max_volume_bytes: Option<u64>,
    /// qemu-img binary (default: from PATH)
    #[arg(long, env = "IRI_QEMU_IMG")]
    qemu_img: Option<PathBuf>,
    /// Log format
    #[arg(long, env = "IRI_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let log_format = args.log_format.clone();
    cli::main("file-volume-runtime", &log_format, run(args)).await
}

async fn run(args: Args) -> anyhow::Result<()> {
    let socket = cli::socket_path(args.socket.as_deref(), args.endpoint.as_deref())?;
    let mut classes = args.volume_classes.clone();
    if let Some(file) = &args.volume_class_file {
        classes.extend(file_volume_runtime::read_class_file(file)?);
    }
    let cfg = Config {
        root: args.root.clone(),
        classes,
        format: args.format,
        image_dirs: args.image_dirs.clone(),
        max_volume_bytes: args.max_volume_bytes,
        qemu_img: args
            .qemu_img
            .clone()
            .or_else(file_volume_runtime::find_qemu_img),
    }
    .validate()?;
    let token = cli::shutdown_token();
    file_volume_runtime::serve(cfg, &socket, token).await
}
