//! `irikitctl`: apply, get and delete irikit objects in a store (`--store memory` or
//! `--store etcd://host:port`), kubectl-style.
//!
//! With `--store memory` every invocation starts from an empty store, so `apply` prints what
//! the store made of the documents (uid, generation, resourceVersion, validation errors) and
//! `--preload file.yaml` (repeatable) loads documents before any command, e.g.
//! `irikitctl --store memory --preload pools.yaml get machinepools -o table`.

use std::{io::Write, path::PathBuf, process::ExitCode, sync::Arc};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use irikit_api::{Kind, ListOptions, Object, Store, meta::parse_selector, store};

/// Apply, get and delete irikit objects in a store.
#[derive(Parser, Debug)]
#[command(name = "irikitctl", version, about)]
struct Args {
    /// Store: `memory` (empty, per invocation) or `etcd://host:port[,host:port]`.
    #[arg(long, env = "IRIKIT_STORE", default_value = "memory", global = true)]
    store: String,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Yaml, global = true)]
    output: Output,
    /// YAML files applied before the command (useful with `--store memory`).
    #[arg(long, global = true)]
    preload: Vec<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Copy, Clone, Debug, ValueEnum)]
enum Output {
    Yaml,
    Json,
    Table,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Create or update every object of the (multi-document) YAML files; a non-empty status
    /// in a document is written too (there is no poollet to write it otherwise).
    Apply {
        /// YAML files (`-` for stdin).
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
    },
    /// Parse and validate without a store, printing the canonical form.
    Validate {
        /// YAML files (`-` for stdin).
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
    },
    /// Get one object or list a kind.
    Get {
        /// Kind or plural (`machines`, `MachinePool`, ...).
        kind: String,
        /// Object name (all objects when absent).
        name: Option<String>,
        /// Namespace (namespaced kinds; `default` when getting one object).
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        /// Label selector `k=v,k2=v2`.
        #[arg(short = 'l', long)]
        selector: Option<String>,
        /// Field selector, e.g. `spec.machinePoolRef.name=` for unscheduled machines.
        #[arg(long)]
        field_selector: Option<String>,
    },
    /// Delete an object (finalizers are honoured: it may only get a deletionTimestamp).
    Delete {
        /// Kind or plural.
        kind: String,
        /// Object name.
        name: String,
        /// Namespace (namespaced kinds).
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
    },
}

fn read_objects(path: &PathBuf) -> anyhow::Result<Vec<Object>> {
    let text = if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("read stdin")?
    } else {
        std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?
    };
    irikit_api::parse_yaml_documents(&text).with_context(|| format!("parse {}", path.display()))
}

async fn apply(store: &dyn Store, obj: Object) -> anyhow::Result<Object> {
    let key = format!("{} {}", obj.kind(), obj.key());
    store::apply(store, obj)
        .await
        .with_context(|| format!("apply {key}"))
}

fn table_row(obj: &Object) -> Vec<String> {
    let meta = obj.metadata();
    let mut row = vec![meta.namespace.clone(), meta.name.clone()];
    match obj {
        Object::Machine(m) => {
            row.push(m.spec.machine_class_ref.name.clone());
            row.push(
                m.spec
                    .machine_pool_ref
                    .as_ref()
                    .map_or("<none>".into(), |r| r.name.clone()),
            );
            row.push(if m.status.state.is_empty() {
                "Pending".into()
            } else {
                m.status.state.clone()
            });
        }
        Object::MachinePool(p) => {
            row.push(
                irikit_api::meta::condition_status(&p.status.conditions, "Ready")
                    .unwrap_or("<none>")
                    .into(),
            );
            row.push(
                p.status
                    .capacity
                    .iter()
                    .map(|(k, v)| format!("{}={v}", k.trim_start_matches("class/machine.")))
                    .collect::<Vec<_>>()
                    .join(","),
            );
        }
        Object::Volume(v) => {
            row.push(
                v.spec
                    .volume_class_ref
                    .as_ref()
                    .map_or("<none>".into(), |r| r.name.clone()),
            );
            row.push(
                v.spec
                    .volume_pool_ref
                    .as_ref()
                    .map_or("<none>".into(), |r| r.name.clone()),
            );
            row.push(
                v.spec
                    .resources
                    .get("storage")
                    .map_or(String::new(), ToString::to_string),
            );
        }
        Object::VolumePool(p) => {
            row.push(
                p.status
                    .capacity
                    .iter()
                    .map(|(k, v)| format!("{}={v}", k.trim_start_matches("class/volume.")))
                    .collect::<Vec<_>>()
                    .join(","),
            );
        }
        Object::MachineClass(c) => {
            row.push(
                c.capabilities
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(","),
            );
        }
        Object::Event(e) => {
            row.push(e.reason.clone());
            row.push(format!(
                "{}/{}",
                e.involved_object.kind, e.involved_object.name
            ));
            row.push(e.message.clone());
        }
        Object::Reservation(r) => {
            row.push(
                r.spec
                    .resources
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(","),
            );
            row.push(
                r.status
                    .pools
                    .iter()
                    .map(|p| format!("{}={}", p.name, p.state))
                    .collect::<Vec<_>>()
                    .join(","),
            );
        }
        _ => {}
    }
    row
}

fn header(kind: Kind) -> Vec<&'static str> {
    let mut h = vec!["NAMESPACE", "NAME"];
    h.extend(match kind {
        Kind::Machine => &["CLASS", "POOL", "STATE"][..],
        Kind::MachinePool => &["READY", "CAPACITY"][..],
        Kind::Volume => &["CLASS", "POOL", "SIZE"][..],
        Kind::VolumePool => &["CAPACITY"][..],
        Kind::MachineClass => &["CAPABILITIES"][..],
        Kind::Event => &["REASON", "OBJECT", "MESSAGE"][..],
        Kind::Reservation => &["RESOURCES", "POOLS"][..],
        _ => &[][..],
    });
    h
}

fn print(out: &mut impl Write, format: Output, objects: &[Object]) -> anyhow::Result<()> {
    match format {
        Output::Yaml => {
            let docs: Vec<String> = objects.iter().map(Object::to_yaml).collect();
            write!(out, "{}", docs.join("---\n"))?;
        }
        Output::Json => {
            let value = if objects.len() == 1 {
                objects[0].to_json()
            } else {
                serde_json::json!({ "apiVersion": "v1", "kind": "List", "items": objects.iter().map(Object::to_json).collect::<Vec<_>>() })
            };
            writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
        }
        Output::Table => {
            let mut by_kind: Vec<Kind> = objects.iter().map(Object::kind).collect();
            by_kind.dedup();
            for (i, kind) in by_kind.into_iter().enumerate() {
                if i > 0 {
                    writeln!(out)?;
                }
                let mut rows = vec![
                    header(kind)
                        .into_iter()
                        .map(String::from)
                        .collect::<Vec<_>>(),
                ];
                rows.extend(objects.iter().filter(|o| o.kind() == kind).map(table_row));
                let drop_ns = !kind.namespaced();
                let rows: Vec<Vec<String>> = rows
                    .into_iter()
                    .map(|r| if drop_ns { r[1..].to_vec() } else { r })
                    .collect();
                let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
                let widths: Vec<usize> = (0..cols)
                    .map(|c| {
                        rows.iter()
                            .filter_map(|r| r.get(c))
                            .map(String::len)
                            .max()
                            .unwrap_or(0)
                    })
                    .collect();
                for row in rows {
                    let line: Vec<String> = row
                        .iter()
                        .enumerate()
                        .map(|(c, cell)| format!("{cell:<w$}", w = widths[c]))
                        .collect();
                    writeln!(out, "{}", line.join("   ").trim_end())?;
                }
            }
        }
    }
    Ok(())
}

async fn run(args: Args) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if let Cmd::Validate { files } = &args.command {
        let mut objects = Vec::new();
        for file in files {
            for obj in read_objects(file)? {
                let errors = irikit_api::validation::validate(&obj);
                if !errors.is_empty() {
                    bail!(
                        "{} {:?} is invalid: {}",
                        obj.kind(),
                        obj.key(),
                        irikit_api::validation::join(&errors)
                    );
                }
                objects.push(obj);
            }
        }
        return print(&mut out, args.output, &objects);
    }
    let store: Arc<dyn Store> = store::open(&args.store)
        .await
        .with_context(|| format!("open store {}", args.store))?;
    for file in &args.preload {
        for obj in read_objects(file)? {
            apply(&*store, obj).await?;
        }
    }
    match args.command {
        Cmd::Validate { .. } => Ok(()),
        Cmd::Apply { files } => {
            let mut applied = Vec::new();
            for file in &files {
                for obj in read_objects(file)? {
                    applied.push(apply(&*store, obj).await?);
                }
            }
            print(&mut out, args.output, &applied)
        }
        Cmd::Get {
            kind,
            name,
            namespace,
            selector,
            field_selector,
        } => {
            let kind: Kind = kind.parse()?;
            if let Some(name) = name {
                let ns = namespace.unwrap_or_else(|| "default".into());
                let obj = store.get(kind, &ns, &name).await?;
                return print(&mut out, args.output, &[obj]);
            }
            let mut options = ListOptions {
                namespace,
                ..ListOptions::default()
            };
            if let Some(sel) = selector {
                options.labels = parse_selector(&sel).map_err(anyhow::Error::msg)?;
            }
            if let Some(sel) = field_selector {
                options.fields = parse_selector(&sel).map_err(anyhow::Error::msg)?;
            }
            let list = store.list(kind, &options).await?;
            if list.items.is_empty() {
                eprintln!("No resources found.");
                return Ok(());
            }
            print(&mut out, args.output, &list.items)
        }
        Cmd::Delete {
            kind,
            name,
            namespace,
        } => {
            let kind: Kind = kind.parse()?;
            match store.delete(kind, &namespace, &name, None).await? {
                Some(pending) => {
                    eprintln!(
                        "{kind} {:?} marked for deletion (finalizers: {})",
                        pending.key(),
                        pending.metadata().finalizers.join(",")
                    );
                }
                None => eprintln!("{kind} {name:?} deleted"),
            }
            Ok(())
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
