//! `irikit apply | get | delete | validate`: a store's objects in and out, kubectl-style
//! (`--store memory` or `--store etcd://host:port`). YAML documents in IronCore's shape are
//! applied (created or updated, a non-empty status written too: there is no poollet to write it
//! otherwise), listed and printed as YAML, JSON or a table, and deleted (finalizers are
//! honoured: an object may only get a deletionTimestamp).
//!
//! With `--store memory` every invocation starts from an empty store, so `apply` prints what
//! the store made of the documents (uid, generation, resourceVersion, validation errors) and
//! `--preload file.yaml` (repeatable) loads documents before the command, e.g.
//! `irikit get machinepools --store memory --preload pools.yaml -o table`.

use std::{io::Write, path::Path};

use anyhow::{Context, bail};
use irikit_api::{Kind, ListOptions, Object, Store, meta::parse_selector, store};

/// Output format.
#[derive(Copy, Clone, Debug, clap::ValueEnum)]
pub enum Output {
    /// YAML documents.
    Yaml,
    /// JSON (a `List` for several objects).
    Json,
    /// Aligned columns per kind.
    Table,
}

/// What `get` selects.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Object name (all objects when absent).
    pub name: Option<String>,
    /// Namespace (namespaced kinds; `default` when getting one object).
    pub namespace: Option<String>,
    /// Label selector `k=v,k2=v2`.
    pub labels: Option<String>,
    /// Field selector, e.g. `spec.machinePoolRef.name=` for unscheduled machines.
    pub fields: Option<String>,
}

/// The objects of a (multi-document) YAML file, `-` for stdin.
pub fn read_objects(path: &Path) -> anyhow::Result<Vec<Object>> {
    let text = if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("read stdin")?
    } else {
        std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?
    };
    irikit_api::parse_yaml_documents(&text).with_context(|| format!("parse {}", path.display()))
}

/// Creates or updates `obj` (and writes its status when it has one).
pub async fn apply(store: &dyn Store, obj: Object) -> anyhow::Result<Object> {
    let key = format!("{} {}", obj.kind(), obj.key());
    store::apply(store, obj)
        .await
        .with_context(|| format!("apply {key}"))
}

/// `k=v` pairs joined by commas, each key without `strip` in front.
pub fn joined<K: AsRef<str>, V: std::fmt::Display>(
    pairs: impl IntoIterator<Item = (K, V)>,
    strip: &str,
) -> String {
    pairs
        .into_iter()
        .map(|(k, v)| format!("{}={v}", k.as_ref().trim_start_matches(strip)))
        .collect::<Vec<_>>()
        .join(",")
}

/// The referenced name, or `<none>`.
fn name_or_none(reference: Option<&irikit_api::meta::LocalObjectReference>) -> String {
    reference.map_or("<none>".into(), |r| r.name.clone())
}

fn table_row(obj: &Object) -> Vec<String> {
    let meta = obj.metadata();
    let mut row = vec![meta.namespace.clone(), meta.name.clone()];
    match obj {
        Object::Machine(m) => {
            row.push(m.spec.machine_class_ref.name.clone());
            row.push(name_or_none(m.spec.machine_pool_ref.as_ref()));
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
            row.push(joined(&p.status.capacity, "class/machine."));
        }
        Object::Volume(v) => {
            row.push(name_or_none(v.spec.volume_class_ref.as_ref()));
            row.push(name_or_none(v.spec.volume_pool_ref.as_ref()));
            row.push(
                v.spec
                    .resources
                    .get("storage")
                    .map_or(String::new(), ToString::to_string),
            );
        }
        Object::VolumePool(p) => row.push(joined(&p.status.capacity, "class/volume.")),
        Object::MachineClass(c) => row.push(joined(&c.capabilities, "")),
        Object::Event(e) => {
            row.push(e.reason.clone());
            row.push(format!(
                "{}/{}",
                e.involved_object.kind, e.involved_object.name
            ));
            row.push(e.message.clone());
        }
        Object::Reservation(r) => {
            row.push(joined(&r.spec.resources, ""));
            row.push(joined(
                r.status.pools.iter().map(|p| (&p.name, &p.state)),
                "",
            ));
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

/// Writes `objects` to `out` in `format`.
pub fn print(out: &mut impl Write, format: Output, objects: &[Object]) -> anyhow::Result<()> {
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

/// Parses and validates every object of `files` without a store.
pub fn validate(files: &[impl AsRef<Path>]) -> anyhow::Result<Vec<Object>> {
    let mut objects = Vec::new();
    for file in files {
        for obj in read_objects(file.as_ref())? {
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
    Ok(objects)
}

/// Applies every object of `files` in order; returns what the store made of them.
pub async fn apply_files(
    store: &dyn Store,
    files: &[impl AsRef<Path>],
) -> anyhow::Result<Vec<Object>> {
    let mut applied = Vec::new();
    for file in files {
        for obj in read_objects(file.as_ref())? {
            applied.push(apply(store, obj).await?);
        }
    }
    Ok(applied)
}

/// The object `selection` names, or the objects of `kind` it selects.
pub async fn get(
    store: &dyn Store,
    kind: Kind,
    selection: Selection,
) -> anyhow::Result<Vec<Object>> {
    if let Some(name) = selection.name {
        let ns = selection.namespace.unwrap_or_else(|| "default".into());
        return Ok(vec![store.get(kind, &ns, &name).await?]);
    }
    let mut options = ListOptions {
        namespace: selection.namespace,
        ..ListOptions::default()
    };
    if let Some(sel) = selection.labels {
        options.labels = parse_selector(&sel).map_err(anyhow::Error::msg)?;
    }
    if let Some(sel) = selection.fields {
        options.fields = parse_selector(&sel).map_err(anyhow::Error::msg)?;
    }
    Ok(store.list(kind, &options).await?.items)
}

/// Deletes an object; returns the line saying whether it is gone or only marked (finalizers).
pub async fn delete(
    store: &dyn Store,
    kind: Kind,
    namespace: &str,
    name: &str,
) -> anyhow::Result<String> {
    Ok(match store.delete(kind, namespace, name, None).await? {
        Some(pending) => format!(
            "{kind} {:?} marked for deletion (finalizers: {})",
            pending.key(),
            pending.metadata().finalizers.join(",")
        ),
        None => format!("{kind} {name:?} deleted"),
    })
}
