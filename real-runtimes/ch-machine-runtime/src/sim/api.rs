//! ch-sim's REST endpoints: one handler per Cloud Hypervisor API path, with the status codes,
//! bodies and state changes observed on CH v53.

use super::*;

impl Sim {
    pub(super) async fn handle(
        self: Arc<Self>,
        req: Request<hyper::body::Incoming>,
    ) -> HttpResponse {
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let body = match req.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => return err(StatusCode::BAD_REQUEST, &["Bad Request"]),
        };
        if self.cfg.verbosity > 0 {
            self.log(&format!("API request: {method} {path}"));
        }
        let Some(endpoint) = path.strip_prefix("/api/v1/") else {
            return err(StatusCode::NOT_FOUND, &["Not Found"]);
        };
        let known = matches!(
            endpoint,
            "vmm.ping"
                | "vmm.shutdown"
                | "vm.info"
                | "vm.counters"
                | "vm.create"
                | "vm.boot"
                | "vm.shutdown"
                | "vm.power-button"
                | "vm.reboot"
                | "vm.pause"
                | "vm.resume"
                | "vm.delete"
                | "vm.add-disk"
                | "vm.add-net"
                | "vm.remove-device"
                | "vm.resize"
                | "vm.snapshot"
        );
        if !known {
            return err(StatusCode::NOT_FOUND, &["Not Found"]);
        }
        let is_get = matches!(endpoint, "vmm.ping" | "vm.info" | "vm.counters");
        if (is_get && method != Method::GET) || (!is_get && method != Method::PUT) {
            return err(StatusCode::BAD_REQUEST, &["Bad Request"]);
        }
        let mut guard = self.vm.lock().unwrap_or_else(|e| e.into_inner());
        match endpoint {
            "vmm.ping" => reply(
                StatusCode::OK,
                Some(json!({
                    "build_version": "v53.0.0-ch-sim",
                    "version": "53.0.0",
                    "pid": std::process::id(),
                    "features": ["kvm"],
                })),
            ),
            "vmm.shutdown" => {
                self.vmm_exit(&mut guard, "VMM shutdown requested");
                reply(StatusCode::OK, None)
            }
            "vm.info" => match guard.as_ref() {
                Some(Vm {
                    config,
                    state: Some(state),
                    bdfs,
                    ..
                }) => {
                    let mut body = json!({
                        "config": config,
                        "state": state.as_str(),
                        "memory_actual_size": config["memory"]["size"],
                    });
                    // Cloud Hypervisor has a device tree once the VM is booted (it omits the
                    // field before, and again after `vm.shutdown`).
                    if *state != VmState::Created {
                        body["device_tree"] = Self::device_tree(config, bdfs);
                    }
                    reply(StatusCode::OK, Some(body))
                }
                _ => api_err(
                    StatusCode::NOT_FOUND,
                    "The VM info is not available",
                    "VM is not created",
                ),
            },
            "vm.counters" => match guard.as_ref() {
                Some(Vm {
                    state: Some(VmState::Running | VmState::Paused),
                    config,
                    ..
                }) => {
                    // Cloud Hypervisor's counters of an idle device: the latency minima and
                    // maxima start at u64::MAX, the averages at u64::MAX / 10_000.
                    let max = u64::MAX;
                    let avg = u64::MAX / 10_000;
                    let mut counters = serde_json::Map::new();
                    for disk in config["disks"].as_array().into_iter().flatten() {
                        if let Some(id) = disk["id"].as_str() {
                            counters.insert(
                                id.to_owned(),
                                json!({
                                    "read_ops": 0, "write_ops": 0, "read_bytes": 0,
                                    "write_bytes": 0, "read_latency_min": max,
                                    "read_latency_max": max, "read_latency_avg": avg,
                                    "write_latency_min": max, "write_latency_max": max,
                                    "write_latency_avg": avg,
                                }),
                            );
                        }
                    }
                    for net in config["net"].as_array().into_iter().flatten() {
                        if let Some(id) = net["id"].as_str() {
                            counters.insert(
                                id.to_owned(),
                                json!({"rx_bytes": 0, "rx_frames": 0, "tx_bytes": 0, "tx_frames": 0}),
                            );
                        }
                    }
                    reply(StatusCode::OK, Some(Value::Object(counters)))
                }
                _ => api_err(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "The VM info is not available",
                    "VM is not running",
                ),
            },
            "vm.create" => {
                let config = match parse(&body) {
                    Ok(v) => v,
                    Err(resp) => return resp,
                };
                if !config.is_object() || config.get("payload").is_none() {
                    return err(
                        StatusCode::BAD_REQUEST,
                        &["Failed to deserialize JSON", "missing field `payload`"],
                    );
                }
                if guard.as_ref().is_some_and(|vm| vm.state.is_some()) {
                    return api_err(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "The VM could not be created",
                        "VM is already created",
                    );
                }
                let config = Self::normalise(config);
                let ids = Self::device_ids(&config);
                let mut seen = std::collections::HashSet::new();
                if let Some(dup) = ids.iter().find(|id| !seen.insert(*id)) {
                    return api_err(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "The VM could not be created",
                        &format!("Identifier {dup} is not unique"),
                    );
                }
                Self::truncate_serial(&config);
                // CH binds the serial socket here (`pre_create_console_devices`).
                let serial = Self::bind_serial(&config);
                // As on Cloud Hypervisor v53: a serial socket that cannot be bound fails the
                // create, yet the VM config stays (state Created, `vm.create` again answers
                // "VM is already created"; `vm.boot` binds the socket, `vm.delete` clears it).
                let (serial, failed) = match serial {
                    Ok(serial) => (serial, None),
                    Err(e) => (None, Some(e)),
                };
                *guard = Some(Vm {
                    config,
                    state: Some(VmState::Created),
                    pending_eject: Vec::new(),
                    bdfs: std::collections::BTreeMap::new(),
                    serial,
                });
                if let Some(e) = failed {
                    return err(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        &[
                            "Error from API",
                            "The VM could not be created",
                            "Error creating console devices",
                            "Error creating console device",
                            &e.to_string(),
                        ],
                    );
                }
                self.log("VM created");
                reply(StatusCode::NO_CONTENT, None)
            }
            "vm.boot" => {
                let Some(vm) = guard.as_mut() else {
                    return api_err(
                        StatusCode::NOT_FOUND,
                        "The VM could not boot",
                        "VM config is missing",
                    );
                };
                match vm.state {
                    None => {
                        return api_err(
                            StatusCode::NOT_FOUND,
                            "The VM could not boot",
                            "VM config is missing",
                        );
                    }
                    Some(VmState::Running | VmState::Paused) => {
                        return api_err(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "The VM could not boot",
                            "VM is already created",
                        );
                    }
                    Some(VmState::Created) => {}
                }
                let payload = &vm.config["payload"];
                let cmdline = payload["cmdline"].as_str().unwrap_or_default().to_owned();
                let image = payload["kernel"]
                    .as_str()
                    .or_else(|| payload["firmware"].as_str());
                let Some(image) = image else {
                    return api_err(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "The VM could not boot",
                        "No kernel or firmware in payload",
                    );
                };
                if let Err(e) = File::open(image) {
                    return err(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        &[
                            "Error from API",
                            "The VM could not boot",
                            "Cannot open kernel file",
                            &e.to_string(),
                        ],
                    );
                }
                if vm.serial.is_none() {
                    // After `vm.shutdown` CH binds the serial socket again at boot.
                    match Self::bind_serial(&vm.config) {
                        Ok(serial) => vm.serial = serial,
                        Err(e) => {
                            return err(
                                StatusCode::INTERNAL_SERVER_ERROR,
                                &[
                                    "Error from API",
                                    "The VM could not boot",
                                    "Error creating console devices",
                                    &e.to_string(),
                                ],
                            );
                        }
                    }
                }
                self.event("vm", "booting");
                vm.state = Some(VmState::Running);
                vm.pending_eject.clear();
                vm.bdfs.clear();
                for id in Self::virtio_ids(&vm.config) {
                    let bdf = Self::free_bdf(&vm.bdfs);
                    vm.bdfs.insert(id, bdf);
                }
                if let Some(nets) = vm.config.get_mut("net").and_then(Value::as_array_mut) {
                    for net in nets {
                        let id = net["id"].as_str().unwrap_or_default().to_owned();
                        Self::fill(net, &json!({"host_mac": Self::host_mac(&id)}));
                    }
                }
                Self::truncate_serial(&vm.config);
                Self::serial_line(vm, &format!("PVH-HELLO cmdline={cmdline}"));
                if let Some(serial) = &vm.serial {
                    serial.echo.store(
                        cmdline.starts_with('e'),
                        std::sync::atomic::Ordering::Relaxed,
                    );
                }
                self.event("vm", "booted");
                self.log("VM booted");
                if cmdline.starts_with('p') {
                    // The stub guest writes S5 to the ACPI port right after its banner: the VM
                    // shuts down, is deleted and the VMM exits 0.
                    self.vmm_exit(&mut guard, "guest requested power-off: VM exit event");
                }
                reply(StatusCode::NO_CONTENT, None)
            }
            "vm.shutdown" | "vm.power-button" | "vm.reboot" | "vm.pause" | "vm.resume" => {
                // Recorded on Cloud Hypervisor v53: these need a booted VM. Without one, reboot
                // answers 404 "VM is not created" and the others 500 "VM is not running"; an
                // impossible pause or resume answers the state machine's error chain.
                let what = match endpoint {
                    "vm.shutdown" => "The VM could not shutdown",
                    "vm.power-button" => "Error triggering power button",
                    "vm.reboot" => "The VM could not reboot",
                    "vm.pause" => "The VM could not be paused",
                    _ => "The VM could not resume",
                };
                let booted = guard
                    .as_mut()
                    .filter(|vm| matches!(vm.state, Some(VmState::Running | VmState::Paused)));
                let Some(vm) = booted else {
                    return if endpoint == "vm.reboot" {
                        api_err(StatusCode::NOT_FOUND, what, "VM is not created")
                    } else {
                        api_err(StatusCode::INTERNAL_SERVER_ERROR, what, "VM is not running")
                    };
                };
                let state = vm.state.unwrap_or(VmState::Running);
                match (endpoint, state) {
                    ("vm.shutdown", _) => {
                        vm.state = Some(VmState::Created);
                        // CH drops its serial manager (and removes the socket) here.
                        vm.serial = None;
                        vm.pending_eject.clear();
                        vm.bdfs.clear();
                        self.event("vm", "shutdown");
                        self.log("VM shut down");
                        reply(StatusCode::NO_CONTENT, None)
                    }
                    ("vm.power-button", _) => reply(StatusCode::NO_CONTENT, None),
                    ("vm.reboot", _) => {
                        self.event("vm", "rebooting");
                        self.event("vm", "rebooted");
                        reply(StatusCode::NO_CONTENT, None)
                    }
                    ("vm.pause", VmState::Running) => {
                        vm.state = Some(VmState::Paused);
                        self.event("vm", "paused");
                        reply(StatusCode::NO_CONTENT, None)
                    }
                    ("vm.resume", VmState::Paused) => {
                        vm.state = Some(VmState::Running);
                        self.event("vm", "resumed");
                        reply(StatusCode::NO_CONTENT, None)
                    }
                    (_, from) => {
                        let (verb, to) = if endpoint == "vm.pause" {
                            ("pause", "Paused")
                        } else {
                            ("resume", "Running")
                        };
                        err(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            &[
                                "Error from API",
                                what,
                                &format!("Cannot {verb} VM"),
                                &format!("Failed to {verb} migratable component"),
                                &format!(
                                    "Invalid transition: InvalidStateTransition({}, {to})",
                                    from.as_str()
                                ),
                            ],
                        )
                    }
                }
            }
            "vm.resize" => {
                let what = "The VM could not be resized";
                let (req, vm) = match body_and_vm(&body, &mut guard, what) {
                    Ok(both) => both,
                    Err(resp) => return resp,
                };
                // Like v53, the new sizes are taken as given (a later boot validates them).
                if let Some(vcpus) = req["desired_vcpus"].as_u64() {
                    vm.config["cpus"]["boot_vcpus"] = json!(vcpus);
                }
                if let Some(ram) = req["desired_ram"].as_u64() {
                    vm.config["memory"]["size"] = json!(ram);
                }
                reply(StatusCode::NO_CONTENT, None)
            }
            "vm.snapshot" => {
                if let Err(resp) = parse(&body) {
                    return resp;
                }
                let what = "The VM could not be snapshotted";
                let cause = match guard.as_ref().and_then(|vm| vm.state) {
                    Some(VmState::Running) => "Trying to snapshot while VM is running",
                    Some(VmState::Paused) => "ch-sim does not write snapshots",
                    _ => {
                        return api_err(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            what,
                            "VM is not running",
                        );
                    }
                };
                err(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &[
                        "Error from API",
                        what,
                        "Cannot snapshot VM",
                        "Failed to snapshot migratable component",
                        cause,
                    ],
                )
            }
            "vm.delete" => {
                if let Some(vm) = guard.as_ref()
                    && vm.state.is_some()
                {
                    if matches!(vm.state, Some(VmState::Running | VmState::Paused)) {
                        self.event("vm", "shutdown");
                    }
                    self.event("vm", "deleted");
                    self.log("VM deleted");
                }
                *guard = None;
                reply(StatusCode::NO_CONTENT, None)
            }
            "vm.add-disk" | "vm.add-net" => {
                let what = if endpoint == "vm.add-disk" {
                    "The disk could not be added to the VM"
                } else {
                    "The network device could not be added to the VM"
                };
                let (mut device, vm) = match body_and_vm(&body, &mut guard, what) {
                    Ok(both) => both,
                    Err(resp) => return resp,
                };
                if !device.is_object() {
                    return err(
                        StatusCode::BAD_REQUEST,
                        &["Failed to deserialize JSON", "expected a JSON object"],
                    );
                }
                let list = if endpoint == "vm.add-disk" {
                    "disks"
                } else {
                    "net"
                };
                let existing = Self::device_ids(&vm.config);
                let taken = |id: &str| {
                    existing.iter().any(|e| e == id)
                        || vm.pending_eject.iter().any(|(p, _)| p == id)
                };
                let id = match device["id"].as_str() {
                    Some(id) => id.to_owned(),
                    None => {
                        // Like Cloud Hypervisor: the first free `_disk<n>` / `_net<n>`.
                        let prefix = if list == "disks" { "_disk" } else { "_net" };
                        let id = (0u32..)
                            .map(|n| format!("{prefix}{n}"))
                            .find(|id| !taken(id))
                            .unwrap_or_default();
                        device["id"] = json!(id);
                        id
                    }
                };
                Self::fill(
                    &mut device,
                    &if list == "disks" {
                        Self::disk_defaults()
                    } else {
                        Self::net_defaults()
                    },
                );
                if existing.contains(&id) || vm.pending_eject.iter().any(|(p, _)| *p == id) {
                    return err(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        &[
                            "Error from API",
                            what,
                            "Error from device manager",
                            &format!("Invalid identifier as it is not unique: {id}"),
                        ],
                    );
                }
                if list == "disks"
                    && let Some(path) = device["path"].as_str()
                    && let Err(e) = File::open(path)
                {
                    return err(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        &[
                            "Error from API",
                            what,
                            "Failed to open disk image",
                            &e.to_string(),
                        ],
                    );
                }
                let running = matches!(vm.state, Some(VmState::Running | VmState::Paused));
                if running
                    && list == "disks"
                    && let Some(path) = device["path"].as_str()
                    && (Self::disk_paths(&vm.config).any(|p| p == path)
                        || vm
                            .pending_eject
                            .iter()
                            .any(|(_, p)| p.as_deref() == Some(path)))
                {
                    return err(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        &[
                            "Error from API",
                            what,
                            "Error from device manager",
                            "Cannot lock images of all block devices",
                            &format!("Failed to get Write lock for disk image: {path}"),
                            "The file is already locked",
                        ],
                    );
                }
                if running && list == "net" {
                    Self::fill(&mut device, &json!({"host_mac": Self::host_mac(&id)}));
                }
                if let Some(arr) = vm.config.get_mut(list).and_then(Value::as_array_mut) {
                    arr.push(device);
                } else {
                    vm.config[list] = json!([device]);
                }
                if running {
                    let bdf = Self::free_bdf(&vm.bdfs);
                    // Like Cloud Hypervisor, the node stays in the device tree after
                    // `vm.remove-device` until the guest ejects it (never, for the stub).
                    vm.bdfs.insert(id.clone(), bdf.clone());
                    self.event("vm", "device-added");
                    reply(StatusCode::OK, Some(json!({"id": id, "bdf": bdf})))
                } else {
                    reply(StatusCode::NO_CONTENT, None)
                }
            }
            "vm.remove-device" => {
                let what = "The device could not be removed from the VM";
                let (req, vm) = match body_and_vm(&body, &mut guard, what) {
                    Ok(both) => both,
                    Err(resp) => return resp,
                };
                let id = req["id"].as_str().unwrap_or_default().to_owned();
                let running = matches!(vm.state, Some(VmState::Running | VmState::Paused));
                let mut found = false;
                for list in ["disks", "net"] {
                    if let Some(arr) = vm.config.get_mut(list).and_then(Value::as_array_mut) {
                        let before = arr.len();
                        let mut removed = Vec::new();
                        arr.retain(|d| {
                            let keep = d["id"].as_str() != Some(id.as_str());
                            if !keep {
                                removed.push(d["path"].as_str().map(str::to_owned));
                            }
                            keep
                        });
                        found |= arr.len() != before;
                        if running {
                            vm.pending_eject
                                .extend(removed.into_iter().map(|path| (id.clone(), path)));
                        }
                    }
                }
                if !found && running {
                    return err(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        &[
                            "Error from API",
                            what,
                            "Error from device manager",
                            &format!(
                                "Failed to find device corresponding to the given identifier: {id}"
                            ),
                        ],
                    );
                }
                if !found {
                    // Not booted: Cloud Hypervisor edits the stored config only.
                    return api_err(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        what,
                        &format!("No device with id \"{id}\" to remove"),
                    );
                }
                // Like Cloud Hypervisor, an emptied list stays as `[]`.
                self.event("vm", "device-removed");
                reply(StatusCode::NO_CONTENT, None)
            }
            _ => err(StatusCode::NOT_FOUND, &["Not Found"]),
        }
    }
}

/// A request's JSON body, or CH's answer to one that is not JSON.
// The error is the HTTP response itself; boxing it would only add noise here.
#[allow(clippy::result_large_err)]
fn parse(body: &Bytes) -> std::result::Result<Value, HttpResponse> {
    serde_json::from_slice::<Value>(body).map_err(|e| {
        err(
            StatusCode::BAD_REQUEST,
            &["Failed to deserialize JSON", &e.to_string()],
        )
    })
}

/// A device or resize request's JSON body and the created VM it changes, or what CH answers
/// first: a body that is not JSON, then 404 `what` when no VM is created.
#[allow(clippy::result_large_err)]
fn body_and_vm<'a>(
    body: &Bytes,
    vm: &'a mut Option<Vm>,
    what: &str,
) -> std::result::Result<(Value, &'a mut Vm), HttpResponse> {
    let req = parse(body)?;
    let Some(vm) = vm.as_mut().filter(|vm| vm.state.is_some()) else {
        return Err(api_err(StatusCode::NOT_FOUND, what, "VM is not created"));
    };
    Ok((req, vm))
}
