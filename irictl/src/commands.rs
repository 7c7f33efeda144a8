//! The verbs: each turns its arguments into one or more IRI calls and prints the result.

use std::{
    collections::HashMap,
    io::{Read as _, Write as _},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result, anyhow, bail};
use iri_spec::volume::v1alpha1 as volume;
use iri_spec::{
    bucket::v1alpha1 as bucket, irikit::reservation::v1alpha1 as rsv, machine::v1alpha1 as machine,
};
use serde_json::Value;

use crate::{
    Args, Command, Output, Service, UpdateCommand,
    client::Connector,
    codec::{Codec, Ordered, Proto, parse_documents},
    kind::{ATTACH_KINDS, GET_KINDS, Kind, OBJECT_KINDS},
    table::{self, Table},
};

/// An error that has already been printed (several per-item failures); exit non-zero quietly.
#[derive(Debug)]
pub(crate) struct Reported;

impl std::fmt::Display for Reported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("errors were reported above")
    }
}

impl std::error::Error for Reported {}

/// Run one command.
pub(crate) async fn run(args: Args) -> Result<()> {
    let codec = Codec::new()?;
    let ctx = Ctx {
        conn: Connector::new(&args.global),
        codec,
    };
    match args.command {
        Command::Get {
            kind,
            id,
            labels,
            duration,
            output,
        } => {
            let kind = Kind::parse_for(&kind, "get", GET_KINDS)?;
            let selector = labels.into_iter().collect();
            ctx.get(kind, id, selector, duration, output).await
        }
        Command::Create {
            kind,
            filename,
            output,
        } => {
            let kind = kind
                .map(|k| Kind::parse_for(&k, "create", OBJECT_KINDS))
                .transpose()?;
            ctx.create(kind, &filename, output).await
        }
        Command::Delete { kind, ids } => {
            let kind = Kind::parse_for(&kind, "delete", OBJECT_KINDS)?;
            ctx.delete(kind, &ids).await
        }
        Command::Update { what } => ctx.update(what).await,
        Command::Expand { kind, id, size } => {
            Kind::parse_for(&kind, "expand", &[Kind::Volume])?;
            ctx.expand(&id, size).await
        }
        Command::Attach {
            kind,
            filename,
            machine_id,
        } => {
            let kind = Kind::parse_for(&kind, "attach", ATTACH_KINDS)?;
            ctx.attach(kind, &filename, &machine_id).await
        }
        Command::Detach {
            kind,
            names,
            machine_id,
        } => {
            let kind = Kind::parse_for(&kind, "detach", ATTACH_KINDS)?;
            ctx.detach(kind, &names, &machine_id).await
        }
        Command::Exec {
            machine_id,
            url_only,
        } => ctx.exec(&machine_id, url_only).await,
    }
}

struct Ctx<'a> {
    conn: Connector<'a>,
    codec: Codec,
}

/// Write to stdout; a closed pipe (`irictl get machines | head -1`) is not an error.
fn print(text: &str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(err) if err.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow!("write to stdout: {err}"))
        }
        _ => Ok(()),
    }
}

fn render(output: Output, table: impl FnOnce() -> Table, value: Result<Ordered>) -> Result<()> {
    match output {
        Output::Table => print(&table().render()),
        Output::Json => {
            let mut text = serde_json::to_string_pretty(&value?)?;
            text.push('\n');
            print(&text)
        }
        Output::Yaml => print(&serde_yaml::to_string(&value?)?),
    }
}

fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// `get KIND ID` that finds nothing is an error, as in kubectl.
fn check_found(kind: Kind, id: Option<&str>, n_found: usize) -> Result<()> {
    match id {
        Some(id) if n_found == 0 => Err(anyhow!(
            "get {kind} {id}: NotFound: no {kind} with id {id:?}"
        )),
        _ => Ok(()),
    }
}

fn read_input(filename: &str) -> Result<String> {
    if filename == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("read stdin")?;
        Ok(text)
    } else {
        std::fs::read_to_string(filename).with_context(|| format!("read {filename}"))
    }
}

fn display_name(filename: &str) -> &str {
    if filename == "-" { "stdin" } else { filename }
}

/// The single document of `filename` decoded as `M`.
fn read_one<M: Proto>(codec: &Codec, filename: &str) -> Result<M> {
    let name = display_name(filename);
    let mut docs = parse_documents(&read_input(filename)?).with_context(|| name.to_owned())?;
    if docs.len() != 1 {
        bail!("{name}: holds {} objects, want one", docs.len());
    }
    let doc = docs.pop().unwrap_or_default();
    codec.decode_value(doc).with_context(|| name.to_owned())
}

/// The kind of one document of a `create` file, and the document without its `kind:` key.
fn resolve_kind(codec: &Codec, explicit: Option<Kind>, mut doc: Value) -> Result<(Kind, Value)> {
    let named = match doc.as_object_mut().and_then(|o| o.remove("kind")) {
        Some(Value::String(text)) => Some(Kind::parse_for(&text, "create", OBJECT_KINDS)?),
        Some(other) => bail!("kind: want a string such as Machine, got {other}"),
        None => None,
    };
    match (explicit, named) {
        (Some(explicit), Some(named)) if explicit != named => {
            bail!("the command creates a {explicit} but the document says kind {named}")
        }
        (Some(kind), _) | (None, Some(kind)) => return Ok((kind, doc)),
        (None, None) => {}
    }
    let mut fits = Vec::new();
    let mut errors = Vec::new();
    for kind in OBJECT_KINDS {
        let res = match kind {
            Kind::Machine => codec
                .decode_value::<machine::Machine>(doc.clone())
                .map(drop),
            Kind::Volume => codec.decode_value::<volume::Volume>(doc.clone()).map(drop),
            Kind::VolumeSnapshot => codec
                .decode_value::<volume::VolumeSnapshot>(doc.clone())
                .map(drop),
            Kind::Reservation => codec
                .decode_value::<rsv::Reservation>(doc.clone())
                .map(drop),
            _ => codec.decode_value::<bucket::Bucket>(doc.clone()).map(drop),
        };
        match res {
            Ok(()) => fits.push(*kind),
            Err(err) => errors.push((*kind, err.to_string())),
        }
    }
    match fits.as_slice() {
        [kind] => Ok((*kind, doc)),
        [] if errors.iter().all(|(_, err)| *err == errors[0].1) => {
            bail!(
                "not a machine, volume, volumesnapshot, bucket or reservation: {}",
                errors[0].1
            )
        }
        [] => bail!(
            "not a machine, volume, volumesnapshot, bucket or reservation ({})",
            errors
                .iter()
                .map(|(kind, err)| format!("as a {kind}: {err}"))
                .collect::<Vec<_>>()
                .join("; ")
        ),
        many => bail!(
            "cannot tell whether this is a {}: name the kind (irictl create machine -f FILE) or add `kind: Machine` to the document",
            many.iter()
                .map(Kind::to_string)
                .collect::<Vec<_>>()
                .join(" or ")
        ),
    }
}

fn object_id(meta: Option<&iri_spec::meta::v1alpha1::ObjectMetadata>) -> String {
    meta.map(|m| m.id.clone()).unwrap_or_default()
}

impl Ctx<'_> {
    async fn get(
        &self,
        kind: Kind,
        id: Option<String>,
        selector: HashMap<String, String>,
        duration: Duration,
        output: Output,
    ) -> Result<()> {
        let conn = &self.conn;
        let codec = &self.codec;
        let id_filter = id.clone().unwrap_or_default();
        match kind {
            Kind::Machine => {
                let mut client = conn.machine().await?;
                let filter = machine::MachineFilter {
                    id: id_filter,
                    label_selector: selector,
                };
                let res = conn
                    .call(
                        client.list_machines(conn.request(machine::ListMachinesRequest {
                            filter: Some(filter),
                        })),
                    )
                    .await
                    .context("list machines")?;
                check_found(kind, id.as_deref(), res.machines.len())?;
                render(
                    output,
                    || table::machines(&res.machines),
                    codec.encode_values(&res.machines),
                )
            }
            Kind::Volume => {
                let mut client = conn.volume().await?;
                let filter = volume::VolumeFilter {
                    id: id_filter,
                    label_selector: selector,
                };
                let res = conn
                    .call(
                        client.list_volumes(conn.request(volume::ListVolumesRequest {
                            filter: Some(filter),
                        })),
                    )
                    .await
                    .context("list volumes")?;
                check_found(kind, id.as_deref(), res.volumes.len())?;
                render(
                    output,
                    || table::volumes(&res.volumes),
                    codec.encode_values(&res.volumes),
                )
            }
            Kind::VolumeSnapshot => {
                let mut client = conn.volume().await?;
                let filter = volume::VolumeSnapshotFilter {
                    id: id_filter,
                    label_selector: selector,
                };
                let res = conn
                    .call(client.list_volume_snapshots(conn.request(
                        volume::ListVolumeSnapshotsRequest {
                            filter: Some(filter),
                        },
                    )))
                    .await
                    .context("list volume snapshots")?;
                check_found(kind, id.as_deref(), res.volume_snapshots.len())?;
                render(
                    output,
                    || table::volume_snapshots(&res.volume_snapshots),
                    codec.encode_values(&res.volume_snapshots),
                )
            }
            Kind::Bucket => {
                let mut client = conn.bucket().await?;
                let filter = bucket::BucketFilter {
                    id: id_filter,
                    label_selector: selector,
                };
                let res = conn
                    .call(
                        client.list_buckets(conn.request(bucket::ListBucketsRequest {
                            filter: Some(filter),
                        })),
                    )
                    .await
                    .context("list buckets")?;
                check_found(kind, id.as_deref(), res.buckets.len())?;
                render(
                    output,
                    || table::buckets(&res.buckets),
                    codec.encode_values(&res.buckets),
                )
            }
            Kind::BucketClass => self.bucket_classes(output).await,
            Kind::Reservation => {
                let mut client = conn.reservation().await?;
                let filter = rsv::ReservationFilter {
                    id: id_filter,
                    label_selector: selector,
                };
                let res = conn
                    .call(
                        client.list_reservations(conn.request(rsv::ListReservationsRequest {
                            filter: Some(filter),
                        })),
                    )
                    .await
                    .context("list reservations")?;
                check_found(kind, id.as_deref(), res.reservations.len())?;
                render(
                    output,
                    || table::reservations(&res.reservations),
                    codec.encode_values(&res.reservations),
                )
            }
            Kind::Status => {
                self.no_id_or_labels(kind, id.as_deref(), &selector)?;
                match conn.default_service() {
                    Service::Machine => {
                        let mut client = conn.machine().await?;
                        let res = conn
                            .call(client.status(conn.request(machine::StatusRequest {})))
                            .await
                            .context("machine runtime status")?;
                        let items = &res.machine_class_status;
                        render(
                            output,
                            || table::machine_classes(items),
                            codec.encode_values(items),
                        )
                    }
                    Service::Volume => {
                        let mut client = conn.volume().await?;
                        let res = conn
                            .call(client.status(conn.request(volume::StatusRequest {})))
                            .await
                            .context("volume runtime status")?;
                        let items = &res.volume_class_status;
                        render(
                            output,
                            || table::volume_classes(items),
                            codec.encode_values(items),
                        )
                    }
                    // The bucket runtime has no Status; its classes are what status means.
                    Service::Bucket => self.bucket_classes(output).await,
                }
            }
            Kind::Events => {
                // The window ends one second after now: a runtime stamps events it generates while
                // answering (a lazily applied transition) with its own clock, which may already
                // be in the next second.
                let now = now_s();
                let to = now.saturating_add(1);
                let from =
                    now.saturating_sub(i64::try_from(duration.as_secs()).unwrap_or(i64::MAX));
                let events = match conn.default_service() {
                    Service::Machine => {
                        let mut client = conn.machine().await?;
                        let filter = machine::EventFilter {
                            id: id_filter,
                            label_selector: selector,
                            events_from_time: from,
                            events_to_time: to,
                        };
                        conn.call(client.list_events(conn.request(machine::ListEventsRequest {
                            filter: Some(filter),
                        })))
                        .await
                        .context("list machine runtime events")?
                        .events
                    }
                    Service::Volume => {
                        let mut client = conn.volume().await?;
                        let filter = volume::EventFilter {
                            id: id_filter,
                            label_selector: selector,
                            events_from_time: from,
                            events_to_time: to,
                        };
                        conn.call(client.list_events(conn.request(volume::ListEventsRequest {
                            filter: Some(filter),
                        })))
                        .await
                        .context("list volume runtime events")?
                        .events
                    }
                    Service::Bucket => {
                        let mut client = conn.bucket().await?;
                        let filter = bucket::EventFilter {
                            id: id_filter,
                            label_selector: selector,
                            events_from_time: from,
                            events_to_time: to,
                        };
                        conn.call(client.list_events(conn.request(bucket::ListEventsRequest {
                            filter: Some(filter),
                        })))
                        .await
                        .context("list bucket runtime events")?
                        .events
                    }
                };
                render(
                    output,
                    || table::events(&events),
                    codec.encode_values(&events),
                )
            }
            Kind::Version => {
                self.no_id_or_labels(kind, id.as_deref(), &selector)?;
                let (name, version, value) = match conn.default_service() {
                    Service::Machine => {
                        let mut client = conn.machine().await?;
                        let res = conn
                            .call(client.version(conn.request(machine::VersionRequest::default())))
                            .await
                            .context("machine runtime version")?;
                        let value = codec.encode_value(&res);
                        (res.runtime_name, res.runtime_version, value)
                    }
                    Service::Volume => {
                        let mut client = conn.volume().await?;
                        let res = conn
                            .call(client.version(conn.request(volume::VersionRequest::default())))
                            .await
                            .context("volume runtime version")?;
                        let value = codec.encode_value(&res);
                        (res.runtime_name, res.runtime_version, value)
                    }
                    Service::Bucket => {
                        let mut client = conn.bucket().await?;
                        let res = conn
                            .call(client.version(conn.request(bucket::VersionRequest::default())))
                            .await
                            .context("bucket runtime version")?;
                        let value = codec.encode_value(&res);
                        (res.runtime_name, res.runtime_version, value)
                    }
                };
                render(output, || table::version(&name, &version), value)
            }
            Kind::NetworkInterface => bail!("get: unknown kind {kind}"),
        }
    }

    fn no_id_or_labels(
        &self,
        kind: Kind,
        id: Option<&str>,
        selector: &HashMap<String, String>,
    ) -> Result<()> {
        if id.is_some() || !selector.is_empty() {
            bail!("get {kind}: takes no id and no labels");
        }
        Ok(())
    }

    async fn bucket_classes(&self, output: Output) -> Result<()> {
        let conn = &self.conn;
        let mut client = conn.bucket().await?;
        let res = conn
            .call(client.list_bucket_classes(conn.request(bucket::ListBucketClassesRequest {})))
            .await
            .context("list bucket classes")?;
        let items = &res.bucket_classes;
        render(
            output,
            || table::bucket_classes(items),
            self.codec.encode_values(items),
        )
    }

    async fn create(
        &self,
        explicit: Option<Kind>,
        filename: &str,
        output: Option<Output>,
    ) -> Result<()> {
        let name = display_name(filename);
        let docs = parse_documents(&read_input(filename)?).with_context(|| name.to_owned())?;
        let n_docs = docs.len();
        for (i, doc) in docs.into_iter().enumerate() {
            let place = if n_docs == 1 {
                name.to_owned()
            } else {
                format!("{name} (object {})", i + 1)
            };
            let (kind, doc) =
                resolve_kind(&self.codec, explicit, doc).with_context(|| place.clone())?;
            self.create_one(kind, doc, output)
                .await
                .with_context(|| format!("create {kind} from {place}"))?;
        }
        Ok(())
    }

    async fn create_one(&self, kind: Kind, doc: Value, output: Option<Output>) -> Result<()> {
        let conn = &self.conn;
        let codec = &self.codec;
        let (id, value, table) = match kind {
            Kind::Machine => {
                let object: machine::Machine = codec.decode_value(doc)?;
                let mut client = conn.machine().await?;
                let created = conn
                    .call(
                        client.create_machine(conn.request(machine::CreateMachineRequest {
                            machine: Some(object),
                        })),
                    )
                    .await?
                    .machine
                    .unwrap_or_default();
                let id = object_id(created.metadata.as_ref());
                let value = codec.encode_value(&created);
                (id, value, table::machines(std::slice::from_ref(&created)))
            }
            Kind::Volume => {
                let object: volume::Volume = codec.decode_value(doc)?;
                let mut client = conn.volume().await?;
                let created = conn
                    .call(
                        client.create_volume(conn.request(volume::CreateVolumeRequest {
                            volume: Some(object),
                        })),
                    )
                    .await?
                    .volume
                    .unwrap_or_default();
                let id = object_id(created.metadata.as_ref());
                let value = codec.encode_value(&created);
                (id, value, table::volumes(std::slice::from_ref(&created)))
            }
            Kind::VolumeSnapshot => {
                let object: volume::VolumeSnapshot = codec.decode_value(doc)?;
                let mut client = conn.volume().await?;
                let created = conn
                    .call(client.create_volume_snapshot(conn.request(
                        volume::CreateVolumeSnapshotRequest {
                            volume_snapshot: Some(object),
                        },
                    )))
                    .await?
                    .volume_snapshot
                    .unwrap_or_default();
                let id = object_id(created.metadata.as_ref());
                let value = codec.encode_value(&created);
                (
                    id,
                    value,
                    table::volume_snapshots(std::slice::from_ref(&created)),
                )
            }
            Kind::Bucket => {
                let object: bucket::Bucket = codec.decode_value(doc)?;
                let mut client = conn.bucket().await?;
                let created = conn
                    .call(
                        client.create_bucket(conn.request(bucket::CreateBucketRequest {
                            bucket: Some(object),
                        })),
                    )
                    .await?
                    .bucket
                    .unwrap_or_default();
                let id = object_id(created.metadata.as_ref());
                let value = codec.encode_value(&created);
                (id, value, table::buckets(std::slice::from_ref(&created)))
            }
            Kind::Reservation => {
                let object: rsv::Reservation = codec.decode_value(doc)?;
                let mut client = conn.reservation().await?;
                let created = conn
                    .call(
                        client.create_reservation(conn.request(rsv::CreateReservationRequest {
                            reservation: Some(object),
                        })),
                    )
                    .await?
                    .reservation
                    .unwrap_or_default();
                let id = object_id(created.metadata.as_ref());
                let value = codec.encode_value(&created);
                (
                    id,
                    value,
                    table::reservations(std::slice::from_ref(&created)),
                )
            }
            other => bail!("cannot create a {other}"),
        };
        match output {
            None => print(&format!("Created {kind} {id}\n")),
            Some(output) => render(output, || table, value),
        }
    }

    async fn delete(&self, kind: Kind, ids: &[String]) -> Result<()> {
        let conn = &self.conn;
        let mut errors = Vec::new();
        for id in ids {
            let res = match kind {
                Kind::Machine => {
                    let mut client = conn.machine().await?;
                    conn.call(
                        client.delete_machine(conn.request(machine::DeleteMachineRequest {
                            machine_id: id.clone(),
                        })),
                    )
                    .await
                    .map(drop)
                }
                Kind::Volume => {
                    let mut client = conn.volume().await?;
                    conn.call(
                        client.delete_volume(conn.request(volume::DeleteVolumeRequest {
                            volume_id: id.clone(),
                        })),
                    )
                    .await
                    .map(drop)
                }
                Kind::VolumeSnapshot => {
                    let mut client = conn.volume().await?;
                    conn.call(client.delete_volume_snapshot(conn.request(
                        volume::DeleteVolumeSnapshotRequest {
                            volume_snapshot_id: id.clone(),
                        },
                    )))
                    .await
                    .map(drop)
                }
                Kind::Bucket => {
                    let mut client = conn.bucket().await?;
                    conn.call(
                        client.delete_bucket(conn.request(bucket::DeleteBucketRequest {
                            bucket_id: id.clone(),
                        })),
                    )
                    .await
                    .map(drop)
                }
                Kind::Reservation => {
                    let mut client = conn.reservation().await?;
                    conn.call(client.delete_reservation(conn.request(
                        rsv::DeleteReservationRequest {
                            reservation_id: id.clone(),
                        },
                    )))
                    .await
                    .map(drop)
                }
                other => bail!("cannot delete a {other}"),
            };
            match res {
                Ok(()) => print(&format!("Deleted {kind} {id}\n"))?,
                Err(err) => errors.push(err.context(format!("delete {kind} {id}"))),
            }
        }
        report(errors)
    }

    async fn update(&self, what: UpdateCommand) -> Result<()> {
        let conn = &self.conn;
        let mut client = conn.machine().await?;
        match what {
            UpdateCommand::Power { machine_id, power } => {
                conn.call(client.update_machine_power(conn.request(
                    machine::UpdateMachinePowerRequest {
                        machine_id: machine_id.clone(),
                        power,
                    },
                )))
                .await
                .with_context(|| format!("update power of machine {machine_id}"))?;
                let name = machine::Power::try_from(power)
                    .map_or_else(|_| power.to_string(), |p| p.as_str_name().to_owned());
                print(&format!(
                    "Updated power of machine {machine_id} to {name}\n"
                ))
            }
            UpdateCommand::Volume {
                filename,
                machine_id,
            } => {
                let volume: machine::Volume = read_one(&self.codec, &filename)?;
                let name = volume.name.clone();
                conn.call(
                    client.update_volume(conn.request(machine::UpdateVolumeRequest {
                        machine_id: machine_id.clone(),
                        volume: Some(volume),
                    })),
                )
                .await
                .with_context(|| format!("update volume {name} of machine {machine_id}"))?;
                print(&format!("Updated volume {name} of machine {machine_id}\n"))
            }
            UpdateCommand::Annotations {
                machine_id,
                annotations,
                clear: _,
            } => {
                conn.call(client.update_machine_annotations(conn.request(
                    machine::UpdateMachineAnnotationsRequest {
                        machine_id: machine_id.clone(),
                        annotations: annotations.into_iter().collect(),
                    },
                )))
                .await
                .with_context(|| format!("update annotations of machine {machine_id}"))?;
                print(&format!("Updated annotations of machine {machine_id}\n"))
            }
        }
    }

    async fn expand(&self, volume_id: &str, storage_bytes: i64) -> Result<()> {
        let conn = &self.conn;
        let mut client = conn.volume().await?;
        conn.call(
            client.expand_volume(conn.request(volume::ExpandVolumeRequest {
                volume_id: volume_id.to_owned(),
                resources: Some(volume::VolumeResources { storage_bytes }),
            })),
        )
        .await
        .with_context(|| format!("expand volume {volume_id}"))?;
        print(&format!(
            "Expanded volume {volume_id} to {}\n",
            table::bytes(storage_bytes)
        ))
    }

    async fn attach(&self, kind: Kind, filename: &str, machine_id: &str) -> Result<()> {
        let conn = &self.conn;
        let name = match kind {
            Kind::Volume => {
                let volume: machine::Volume = read_one(&self.codec, filename)?;
                let name = volume.name.clone();
                let mut client = conn.machine().await?;
                conn.call(
                    client.attach_volume(conn.request(machine::AttachVolumeRequest {
                        machine_id: machine_id.to_owned(),
                        volume: Some(volume),
                    })),
                )
                .await
                .with_context(|| format!("attach volume {name} to machine {machine_id}"))?;
                name
            }
            _ => {
                let nic: machine::NetworkInterface = read_one(&self.codec, filename)?;
                let name = nic.name.clone();
                let mut client = conn.machine().await?;
                conn.call(client.attach_network_interface(conn.request(
                    machine::AttachNetworkInterfaceRequest {
                        machine_id: machine_id.to_owned(),
                        network_interface: Some(nic),
                    },
                )))
                .await
                .with_context(|| {
                    format!("attach networkinterface {name} to machine {machine_id}")
                })?;
                name
            }
        };
        print(&format!("Attached {kind} {name} to machine {machine_id}\n"))
    }

    async fn detach(&self, kind: Kind, names: &[String], machine_id: &str) -> Result<()> {
        let conn = &self.conn;
        let mut client = conn.machine().await?;
        let mut errors = Vec::new();
        for name in names {
            let res = match kind {
                Kind::Volume => conn
                    .call(
                        client.detach_volume(conn.request(machine::DetachVolumeRequest {
                            machine_id: machine_id.to_owned(),
                            name: name.clone(),
                        })),
                    )
                    .await
                    .map(drop),
                _ => conn
                    .call(client.detach_network_interface(conn.request(
                        machine::DetachNetworkInterfaceRequest {
                            machine_id: machine_id.to_owned(),
                            name: name.clone(),
                        },
                    )))
                    .await
                    .map(drop),
            };
            match res {
                Ok(()) => print(&format!(
                    "Detached {kind} {name} from machine {machine_id}\n"
                ))?,
                Err(err) => errors
                    .push(err.context(format!("detach {kind} {name} from machine {machine_id}"))),
            }
        }
        report(errors)
    }

    async fn exec(&self, machine_id: &str, url_only: bool) -> Result<()> {
        let conn = &self.conn;
        let mut client = conn.machine().await?;
        let res = conn
            .call(client.exec(conn.request(machine::ExecRequest {
                machine_id: machine_id.to_owned(),
            })))
            .await
            .with_context(|| format!("exec machine {machine_id}"))?;
        if res.url.is_empty() {
            bail!("exec machine {machine_id}: the runtime returned no URL (exec is not supported)");
        }
        if url_only {
            return print(&format!("{}\n", res.url));
        }
        crate::console::session(&res.url)
            .await
            .with_context(|| format!("exec machine {machine_id}"))
    }
}

/// One failure is returned as the error; several are printed one per line here.
fn report(mut errors: Vec<anyhow::Error>) -> Result<()> {
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.pop().unwrap_or_else(|| anyhow!("unreachable"))),
        _ => {
            for err in &errors {
                #[allow(clippy::print_stderr)]
                {
                    eprintln!("irictl: {}", crate::error_line(err));
                }
            }
            Err(Reported.into())
        }
    }
}
