//! Table output as IronCore's irictl prints it: Go `text/tabwriter` with a minimum cell width of 6
//! and 3 spaces of padding, header names as IronCore spells them, "No resources found" for
//! nothing, and ages as Kubernetes' `HumanDuration`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use iri_spec::{
    bucket::v1alpha1 as bucket, event::v1alpha1 as event, machine::v1alpha1 as machine,
};
use iri_spec::{meta::v1alpha1 as meta, volume::v1alpha1 as volume};

/// Rows under named columns.
#[derive(Debug, Default)]
pub(crate) struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

const MIN_WIDTH: usize = 6;
const PADDING: usize = 3;

impl Table {
    fn new(headers: &[&'static str]) -> Self {
        Table {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Render the table; an empty one renders as `No resources found`.
    pub(crate) fn render(&self) -> String {
        if self.rows.is_empty() {
            return "No resources found\n".to_owned();
        }
        let n_columns = self.headers.len();
        let mut widths = vec![0; n_columns];
        let lines = std::iter::once(self.headers.iter().map(|h| (*h).to_owned()).collect())
            .chain(self.rows.iter().cloned())
            .collect::<Vec<Vec<String>>>();
        for line in &lines {
            for (i, cell) in line.iter().enumerate().take(n_columns) {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for line in &lines {
            let mut text = String::new();
            for (i, cell) in line.iter().enumerate() {
                // Cells never contain newlines or tabs, which would break the layout.
                let cell = cell.replace(['\n', '\t'], " ");
                if i + 1 == line.len() {
                    text.push_str(&cell);
                } else {
                    let width = (widths[i] + PADDING).max(MIN_WIDTH);
                    text.push_str(&cell);
                    text.extend(std::iter::repeat_n(' ', width - cell.chars().count()));
                }
            }
            out.push_str(text.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Kubernetes' `duration.HumanDuration`.
pub(crate) fn human_duration(d: Duration) -> String {
    let seconds = d.as_secs();
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

fn now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Age of something created at `since` (since the Unix epoch); `<unknown>` when unset.
fn age(since: Duration) -> String {
    if since.is_zero() {
        return "<unknown>".to_owned();
    }
    match now().checked_sub(since) {
        Some(d) => human_duration(d),
        // Clock skew between runtime and client: Kubernetes prints 0s for small negatives.
        None => "0s".to_owned(),
    }
}

fn age_ns(created_at_ns: i64) -> String {
    age(Duration::from_nanos(
        u64::try_from(created_at_ns).unwrap_or(0),
    ))
}

fn age_s(time_s: i64) -> String {
    age(Duration::from_secs(u64::try_from(time_s).unwrap_or(0)))
}

/// A byte count as a Kubernetes quantity: binary suffixes where exact (`10Gi`), else plain.
pub(crate) fn bytes(n: i64) -> String {
    const SUFFIXES: [(&str, i64); 6] = [
        ("Ei", 1 << 60),
        ("Pi", 1 << 50),
        ("Ti", 1 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ];
    if n != 0 {
        for (suffix, unit) in SUFFIXES {
            if n % unit == 0 {
                return format!("{}{suffix}", n / unit);
            }
        }
    }
    n.to_string()
}

fn id(meta: Option<&meta::ObjectMetadata>) -> String {
    meta.map(|m| m.id.clone()).unwrap_or_default()
}

fn created(meta: Option<&meta::ObjectMetadata>) -> String {
    let meta = meta.cloned().unwrap_or_default();
    let age = age_ns(meta.created_at);
    if meta.deleted_at != 0 {
        // Like kubectl, which shows deletion in the status column; we keep it in the age.
        return format!("{age} (deleting)");
    }
    age
}

fn enum_name<E: TryFrom<i32>>(value: i32, name: impl Fn(E) -> &'static str) -> String {
    E::try_from(value).map_or_else(|_| value.to_string(), |e| name(e).to_owned())
}

/// Machines: ID, Class, Image, Power, State, Age.
pub(crate) fn machines(items: &[machine::Machine]) -> Table {
    let mut table = Table::new(&["ID", "Class", "Image", "Power", "State", "Age"]);
    for m in items {
        let spec = m.spec.clone().unwrap_or_default();
        let status = m.status.clone().unwrap_or_default();
        let image = if status.image_ref.is_empty() {
            spec.volumes
                .iter()
                .find_map(|v| {
                    v.local_disk
                        .as_ref()?
                        .image
                        .as_ref()
                        .map(|i| i.image.clone())
                })
                .unwrap_or_default()
        } else {
            status.image_ref.clone()
        };
        table.row(vec![
            id(m.metadata.as_ref()),
            spec.class.clone(),
            image,
            enum_name(spec.power, |p: machine::Power| p.as_str_name()),
            enum_name(status.state, |s: machine::MachineState| s.as_str_name()),
            created(m.metadata.as_ref()),
        ]);
    }
    table
}

/// Reservations: ID, Classes (`name=count`), CPU (millicores), Memory, Local storage per
/// machine, State, Age.
pub(crate) fn reservations(
    items: &[iri_spec::irikit::reservation::v1alpha1::Reservation],
) -> Table {
    use iri_spec::irikit::reservation::v1alpha1::ReservationState;
    let mut table = Table::new(&[
        "ID",
        "Classes",
        "CPU",
        "Memory",
        "LocalStorage",
        "State",
        "Age",
    ]);
    for r in items {
        let spec = r.spec.clone().unwrap_or_default();
        let mut classes: Vec<String> = spec
            .machine_classes
            .iter()
            .map(|(c, n)| format!("{c}={n}"))
            .collect();
        classes.sort();
        table.row(vec![
            id(r.metadata.as_ref()),
            classes.join(","),
            spec.cpu_millis.to_string(),
            spec.memory_bytes.to_string(),
            spec.local_storage_bytes_per_machine.to_string(),
            enum_name(
                r.status.as_ref().map_or(0, |s| s.state),
                |s: ReservationState| s.as_str_name(),
            ),
            created(r.metadata.as_ref()),
        ]);
    }
    table
}

/// Machine class status: Name, CPU, Memory, Quantity.
pub(crate) fn machine_classes(items: &[machine::MachineClassStatus]) -> Table {
    let mut table = Table::new(&["Name", "CPU", "Memory", "Quantity"]);
    for s in items {
        let class = s.machine_class.clone().unwrap_or_default();
        let resources = class.capabilities.unwrap_or_default().resources;
        let get = |key: &str| resources.get(key).copied();
        table.row(vec![
            class.name,
            get("cpu").map(|v| v.to_string()).unwrap_or_default(),
            get("memory").map(bytes).unwrap_or_default(),
            s.quantity.to_string(),
        ]);
    }
    table
}

/// Volumes: ID, Class, Image, Size, State, Age.
pub(crate) fn volumes(items: &[volume::Volume]) -> Table {
    let mut table = Table::new(&["ID", "Class", "Image", "Size", "State", "Age"]);
    for v in items {
        let spec = v.spec.clone().unwrap_or_default();
        let status = v.status.clone().unwrap_or_default();
        let source = spec.volume_data_source.unwrap_or_default();
        let image = match (source.image_data_source, source.snapshot_data_source) {
            (Some(image), _) if !image.image.is_empty() => image.image,
            (_, Some(snapshot)) if !snapshot.snapshot_id.is_empty() => {
                format!("snapshot:{}", snapshot.snapshot_id)
            }
            _ => String::new(),
        };
        table.row(vec![
            id(v.metadata.as_ref()),
            spec.class,
            image,
            bytes(spec.resources.unwrap_or_default().storage_bytes),
            enum_name(status.state, |s: volume::VolumeState| s.as_str_name()),
            created(v.metadata.as_ref()),
        ]);
    }
    table
}

/// Volume snapshots: ID, VolumeID, Size, State, Age.
pub(crate) fn volume_snapshots(items: &[volume::VolumeSnapshot]) -> Table {
    let mut table = Table::new(&["ID", "VolumeID", "Size", "State", "Age"]);
    for s in items {
        let status = s.status.unwrap_or_default();
        table.row(vec![
            id(s.metadata.as_ref()),
            s.spec.clone().unwrap_or_default().volume_id,
            bytes(status.size),
            enum_name(status.state, |s: volume::VolumeSnapshotState| {
                s.as_str_name()
            }),
            created(s.metadata.as_ref()),
        ]);
    }
    table
}

/// Volume class status: Name, TPS, IOPS, Quantity.
pub(crate) fn volume_classes(items: &[volume::VolumeClassStatus]) -> Table {
    let mut table = Table::new(&["Name", "TPS", "IOPS", "Quantity"]);
    for s in items {
        let class = s.volume_class.clone().unwrap_or_default();
        let caps = class.capabilities.unwrap_or_default();
        table.row(vec![
            class.name,
            caps.tps.to_string(),
            caps.iops.to_string(),
            bytes(s.quantity),
        ]);
    }
    table
}

/// Buckets: ID, Class, Endpoint, State, Age.
pub(crate) fn buckets(items: &[bucket::Bucket]) -> Table {
    let mut table = Table::new(&["ID", "Class", "Endpoint", "State", "Age"]);
    for b in items {
        let status = b.status.clone().unwrap_or_default();
        table.row(vec![
            id(b.metadata.as_ref()),
            b.spec.clone().unwrap_or_default().class,
            status.access.unwrap_or_default().endpoint,
            enum_name(status.state, |s: bucket::BucketState| s.as_str_name()),
            created(b.metadata.as_ref()),
        ]);
    }
    table
}

/// Bucket classes: Name, TPS, IOPS.
pub(crate) fn bucket_classes(items: &[bucket::BucketClass]) -> Table {
    let mut table = Table::new(&["Name", "TPS", "IOPS"]);
    for c in items {
        let caps = c.capabilities.unwrap_or_default();
        table.row(vec![
            c.name.clone(),
            caps.tps.to_string(),
            caps.iops.to_string(),
        ]);
    }
    table
}

/// The name and namespace of the API object behind an IRI object, from the poollet labels.
fn owner(labels: &std::collections::HashMap<String, String>) -> (String, String) {
    use iri_spec::keys;
    let first = |candidates: &[&str]| {
        candidates
            .iter()
            .find_map(|k| labels.get(*k).cloned())
            .unwrap_or_default()
    };
    (
        first(&[
            "downward-api.machinepoollet.ironcore.dev/root-machine-name",
            keys::MACHINE_NAME_LABEL,
            keys::VOLUMEPOOLLET_VOLUME_NAME_LABEL,
            keys::VOLUME_SNAPSHOT_NAME_LABEL,
            keys::BUCKET_NAME_LABEL,
        ]),
        first(&[
            "downward-api.machinepoollet.ironcore.dev/root-machine-namespace",
            keys::MACHINE_NAMESPACE_LABEL,
            keys::VOLUMEPOOLLET_VOLUME_NAMESPACE_LABEL,
            keys::VOLUME_SNAPSHOT_NAMESPACE_LABEL,
            keys::BUCKET_NAMESPACE_LABEL,
        ]),
    )
}

/// Events: InvolvedObjectID, Type, Reason, Action, Message, Name, Namespace, Age.
pub(crate) fn events(items: &[event::Event]) -> Table {
    let mut table = Table::new(&[
        "InvolvedObjectID",
        "Type",
        "Reason",
        "Action",
        "Message",
        "Name",
        "Namespace",
        "Age",
    ]);
    for e in items {
        let spec = e.spec.clone().unwrap_or_default();
        let involved = spec.involved_object_meta.unwrap_or_default();
        let (name, namespace) = owner(&involved.labels);
        table.row(vec![
            involved.id,
            spec.r#type,
            spec.reason,
            spec.action,
            spec.message,
            name,
            namespace,
            age_s(spec.event_time),
        ]);
    }
    table
}

/// Version: RuntimeName, RuntimeVersion.
pub(crate) fn version(runtime_name: &str, runtime_version: &str) -> Table {
    let mut table = Table::new(&["RuntimeName", "RuntimeVersion"]);
    table.row(vec![runtime_name.to_owned(), runtime_version.to_owned()]);
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_like_go_tabwriter() {
        let mut table = Table::new(&["ID", "Class", "Age"]);
        table.row(vec!["a".into(), "x".into(), "1s".into()]);
        table.row(vec!["abcdefgh".into(), "".into(), "2m".into()]);
        assert_eq!(
            table.render(),
            "ID         Class   Age\na          x       1s\nabcdefgh           2m\n"
        );
        assert_eq!(Table::new(&["ID"]).render(), "No resources found\n");
    }

    #[test]
    fn human_durations() {
        let cases = [
            (0, "0s"),
            (119, "119s"),
            (120, "2m"),
            (125, "2m5s"),
            (600, "10m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 60, "3h1m"),
            (47 * 3600, "47h"),
            (3 * 86400 + 3600, "3d1h"),
            (100 * 86400, "100d"),
            (3 * 365 * 86400 + 86400, "3y1d"),
            (9 * 365 * 86400, "9y"),
        ];
        for (secs, want) in cases {
            assert_eq!(human_duration(Duration::from_secs(secs)), want, "{secs}");
        }
    }

    #[test]
    fn byte_quantities() {
        assert_eq!(bytes(0), "0");
        assert_eq!(bytes(10 << 30), "10Gi");
        assert_eq!(bytes(1536), "1536");
        assert_eq!(bytes(3 << 10), "3Ki");
        assert_eq!(bytes(1000), "1000");
    }
}
