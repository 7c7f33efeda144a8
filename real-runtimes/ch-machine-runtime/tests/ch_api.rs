//! The CH REST API behaviours the runtime relies on (cloud-hypervisor.md §2.5, §2.6, §3.3),
//! asserted the same way against ch-sim and, when `IRIKIT_CH_BIN` is set, a real CH: the
//! simulator's fidelity is exactly what the real-CH run proves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use common::{Backend, on_ch_sim_and_real_ch};
use serde_json::{Value, json};

struct Vmm {
    child: std::process::Child,
    sock: PathBuf,
    http: reqwest::Client,
}

impl Vmm {
    async fn spawn(backend: &Backend, dir: &Path) -> Self {
        let sock = dir.join("ch.sock");
        let child = Command::new(backend.binary())
            .arg("--api-socket")
            .arg(format!("path={}", sock.display()))
            .arg("--event-monitor")
            .arg(format!("path={}", dir.join("events.json").display()))
            .arg("--log-file")
            .arg(dir.join("ch.log"))
            .arg("-v")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let http = reqwest::Client::builder()
            .unix_socket(sock.as_path())
            .build()
            .unwrap();
        // The socket file may be a stale one from a killed instance: wait for an answer.
        common::eventually("vmm.ping", Duration::from_secs(10), || {
            let http = http.clone();
            async move {
                let resp = http
                    .get("http://localhost/api/v1/vmm.ping")
                    .send()
                    .await
                    .ok()?;
                resp.status().is_success().then_some(())
            }
        })
        .await;
        Self { child, sock, http }
    }

    async fn call(&self, method: &str, endpoint: &str, body: Option<&str>) -> (u16, Value) {
        let url = format!("http://localhost/api/v1/{endpoint}");
        let mut req = match method {
            "GET" => self.http.get(url),
            _ => self.http.put(url),
        };
        if let Some(body) = body {
            req = req
                .header("Content-Type", "application/json")
                .body(body.to_owned());
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.unwrap();
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, value)
    }

    async fn wait_exit(&mut self) -> std::process::ExitStatus {
        common::eventually("vmm exit", Duration::from_secs(10), || {
            let status = self.child.try_wait().unwrap();
            async move { status }
        })
        .await
    }
}

impl Drop for Vmm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh scratch directory under /tmp (short paths keep socket paths under the limit).
fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("chapi")
        .tempdir_in("/tmp")
        .unwrap()
}

/// A 1 MiB sparse disk image `dir/name`.
fn disk_file(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::File::create(&path)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    path
}

fn is_chain(v: &Value, last: &str) -> bool {
    v.as_array().is_some_and(|a| {
        a.iter().all(Value::is_string) && a.last().and_then(Value::as_str) == Some(last)
    })
}

impl Vmm {
    /// `PUT endpoint` answers 204 and leaves the VM `state`; the same call again answers 500
    /// with an error chain ending in `chain`.
    async fn put_then_again(&self, endpoint: &str, state: &str, chain: &str) {
        assert_eq!(self.call("PUT", endpoint, None).await.0, 204);
        let (_, info) = self.call("GET", "vm.info", None).await;
        assert_eq!(info["state"], state);
        let (s, v) = self.call("PUT", endpoint, None).await;
        assert_eq!(s, 500);
        assert!(is_chain(&v, chain), "{v}");
    }
}

async fn rest_session(backend: Backend) {
    let dir = scratch();
    let Some(kernel) = common::guest_kernel(dir.path(), &backend) else {
        return;
    };
    let serial = dir.path().join("serial.log");
    let disk = disk_file(dir.path(), "disk.raw");
    let mut vmm = Vmm::spawn(&backend, dir.path()).await;

    let (s, ping) = vmm.call("GET", "vmm.ping", None).await;
    assert_eq!(s, 200);
    assert!(ping["version"].is_string());
    assert_eq!(ping["pid"], i64::from(vmm.child.id()));

    let (s, v) = vmm.call("GET", "vm.info", None).await;
    assert_eq!(s, 404);
    assert!(is_chain(&v, "VM is not created"), "{v}");

    let (s, v) = vmm.call("PUT", "vm.create", Some("{\"payload\":")).await;
    assert_eq!(s, 400);
    assert_eq!(v[0], "Failed to deserialize JSON");

    let config = json!({
        "cpus": {"boot_vcpus": 1, "max_vcpus": 1},
        "memory": {"size": 134_217_728},
        "payload": {"kernel": kernel, "cmdline": "halt-me"},
        "disks": [{"path": disk, "id": "disk0", "image_type": "Raw"}],
        "serial": {"mode": "File", "file": serial},
        "console": {"mode": "Off"},
        "platform": {"uuid": "6f1c0a52-8d0e-4c1b-9d57-0d7b2a3c4e5f", "oem_strings": ["aWduaXRpb24="]},
    })
    .to_string();
    assert_eq!(vmm.call("PUT", "vm.create", Some(&config)).await.0, 204);
    let (s, v) = vmm.call("PUT", "vm.create", Some(&config)).await;
    assert_eq!(s, 500);
    assert!(is_chain(&v, "VM is already created"), "{v}");
    let (_, info) = vmm.call("GET", "vm.info", None).await;
    assert_eq!(info["state"], "Created");
    assert_eq!(
        info["config"]["platform"]["system_uuid"],
        "6f1c0a52-8d0e-4c1b-9d57-0d7b2a3c4e5f"
    );
    assert_eq!(info["config"]["platform"]["oem_strings"][0], "aWduaXRpb24=");

    vmm.put_then_again("vm.boot", "Running", "VM is already created")
        .await;
    common::eventually("serial banner", Duration::from_secs(10), || async {
        std::fs::read_to_string(&serial)
            .unwrap_or_default()
            .contains("PVH-HELLO cmdline=halt-me")
            .then_some(())
    })
    .await;

    // Hot-plug and removal.
    let d1 = disk_file(dir.path(), "d1.raw");
    let body = json!({"path": d1, "id": "vol1", "image_type": "Raw"}).to_string();
    let (s, v) = vmm.call("PUT", "vm.add-disk", Some(&body)).await;
    assert_eq!(s, 200);
    assert_eq!(v["id"], "vol1");
    assert!(v["bdf"].is_string());
    let (_, info) = vmm.call("GET", "vm.info", None).await;
    let ids: Vec<&str> = info["config"]["disks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["id"].as_str())
        .collect();
    assert_eq!(ids, ["disk0", "vol1"]);
    let (s, v) = vmm
        .call("PUT", "vm.remove-device", Some("{\"id\":\"nope\"}"))
        .await;
    assert!(s >= 400, "{s}");
    assert!(v.as_array().is_some_and(|a| !a.is_empty()), "{v}");
    assert_eq!(
        vmm.call("PUT", "vm.remove-device", Some("{\"id\":\"vol1\"}"))
            .await
            .0,
        204
    );
    assert_eq!(vmm.call("PUT", "vm.power-button", None).await.0, 204);

    // Shutdown keeps the config: state Created, and the VM boots again.
    vmm.put_then_again("vm.shutdown", "Created", "VM is not running")
        .await;
    assert_eq!(vmm.call("PUT", "vm.boot", None).await.0, 204);
    assert_eq!(vmm.call("GET", "vm.info", None).await.1["state"], "Running");

    // Delete is idempotent; afterwards boot has no config.
    assert_eq!(vmm.call("PUT", "vm.delete", None).await.0, 204);
    assert_eq!(vmm.call("PUT", "vm.delete", None).await.0, 204);
    let (s, v) = vmm.call("PUT", "vm.boot", None).await;
    assert_eq!(s, 404);
    assert!(is_chain(&v, "VM config is missing"), "{v}");
    let (s, v) = vmm.call("GET", "vm.nope", None).await;
    assert_eq!((s, v), (404, json!(["Not Found"])));

    // A second instance on the live socket exits 1 (ApiSocketInUse).
    let second = Command::new(backend.binary())
        .arg("--api-socket")
        .arg(format!("path={}", vmm.sock.display()))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("is already in use by another running instance"),
        "{stderr}"
    );

    // vmm.shutdown: 200, exit 0, socket removed, lock left.
    let (s, _) = vmm.call("PUT", "vmm.shutdown", None).await;
    assert_eq!(s, 200);
    let status = vmm.wait_exit().await;
    assert_eq!(status.code(), Some(0));
    assert!(!vmm.sock.exists());
    assert!(dir.path().join("ch.sock.lock").exists());

    // Event monitor: a stream of JSON objects in CH's shape.
    let text = std::fs::read_to_string(dir.path().join("events.json")).unwrap();
    let events: Vec<Value> = serde_json::Deserializer::from_str(&text)
        .into_iter::<Value>()
        .map(Result::unwrap)
        .collect();
    let names: Vec<String> = events
        .iter()
        .map(|e| {
            format!(
                "{}/{}",
                e["source"].as_str().unwrap(),
                e["event"].as_str().unwrap()
            )
        })
        .collect();
    assert!(events.iter().all(|e| e["timestamp"]["secs"].is_u64()));
    for want in [
        "vmm/starting",
        "vm/booting",
        "vm/booted",
        "vm/shutdown",
        "vmm/shutdown",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
    }
}

on_ch_sim_and_real_ch!(rest_session: rest_session_on_ch_sim, rest_session_on_real_ch);

/// A guest that writes S5 (cmdline starting with `p`) ends the VMM: exit 0, socket gone, lock left.
async fn guest_power_off(backend: Backend) {
    let dir = scratch();
    let Some(kernel) = common::guest_kernel(dir.path(), &backend) else {
        return;
    };
    let serial = dir.path().join("serial.log");
    let mut vmm = Vmm::spawn(&backend, dir.path()).await;
    let config = json!({
        "payload": {"kernel": kernel, "cmdline": "poweroff"},
        "serial": {"mode": "File", "file": serial},
        "console": {"mode": "Off"},
    })
    .to_string();
    assert_eq!(vmm.call("PUT", "vm.create", Some(&config)).await.0, 204);
    let (s, _) = vmm.call("PUT", "vm.boot", None).await;
    assert!((200..300).contains(&s), "{s}");
    let status = vmm.wait_exit().await;
    assert_eq!(status.code(), Some(0));
    assert!(!vmm.sock.exists());
    assert!(dir.path().join("ch.sock.lock").exists());
    let text = std::fs::read_to_string(&serial).unwrap();
    assert!(text.contains("PVH-HELLO cmdline=poweroff"), "{text}");
    // A new instance on the same path starts fine after the exit.
    let again = Vmm::spawn(&backend, dir.path()).await;
    assert_eq!(again.call("GET", "vmm.ping", None).await.0, 200);
}

on_ch_sim_and_real_ch!(guest_power_off: guest_power_off_on_ch_sim, guest_power_off_on_real_ch);

/// SIGKILL leaves socket and lock behind; a new instance on the same path starts fine.
#[tokio::test]
async fn sim_restarts_after_sigkill() {
    let dir = scratch();
    let mut vmm = Vmm::spawn(&Backend::Sim, dir.path()).await;
    let _ = vmm.child.kill();
    let _ = vmm.child.wait();
    assert!(vmm.sock.exists());
    let again = Vmm::spawn(&Backend::Sim, dir.path()).await;
    assert_eq!(again.call("GET", "vmm.ping", None).await.0, 200);
}

// ---- vm.info's body shape against the recorded real Cloud Hypervisor v53 shape --------------

/// The recorded shape (see the fixture's `source`): `created` before boot and after
/// `vm.shutdown`, `booted` while the VM is booted.
fn recorded_shape(which: &str) -> Value {
    let text = include_str!("fixtures/ch-v53-vm-info-shape.json");
    let mut all: Value = serde_json::from_str(text).unwrap();
    all[which].take()
}

/// Where `value` differs from `shape` (keys and value types, recursively), as JSON-pointer-ish
/// paths; empty when it matches.
fn shape_diff(value: &Value, shape: &Value, path: &str, out: &mut Vec<String>) {
    match shape {
        Value::String(ty) => {
            let ok = match ty.as_str() {
                "string" => value.is_string(),
                "number" => value.is_number(),
                "bool" => value.is_boolean(),
                "object" => value.is_object(),
                other => panic!("unknown type {other:?} in the shape at {path}"),
            };
            if !ok {
                out.push(format!("{path}: want {ty}, have {value}"));
            }
        }
        Value::Array(elem) => {
            let Some(items) = value.as_array() else {
                out.push(format!("{path}: want an array, have {value}"));
                return;
            };
            for (i, item) in items.iter().enumerate() {
                shape_diff(item, &elem[0], &format!("{path}/{i}"), out);
            }
        }
        Value::Object(fields) if fields.contains_key("oneof") => {
            let any = fields["oneof"].as_array().unwrap().iter().any(|s| {
                let mut d = Vec::new();
                shape_diff(value, s, path, &mut d);
                d.is_empty()
            });
            if !any {
                out.push(format!("{path}: matches none of the variants: {value}"));
            }
        }
        Value::Object(fields) if fields.contains_key("*") => {
            let Some(map) = value.as_object() else {
                out.push(format!("{path}: want a map, have {value}"));
                return;
            };
            for (k, v) in map {
                shape_diff(v, &fields["*"], &format!("{path}/{k}"), out);
            }
        }
        Value::Object(fields) => {
            let Some(obj) = value.as_object() else {
                out.push(format!("{path}: want an object, have {value}"));
                return;
            };
            for (key, sub) in fields {
                let (name, optional) = key
                    .strip_suffix('?')
                    .map_or((key.as_str(), false), |n| (n, true));
                match obj.get(name) {
                    Some(v) => shape_diff(v, sub, &format!("{path}/{name}"), out),
                    None if optional => {}
                    None => out.push(format!("{path}/{name}: missing")),
                }
            }
            for key in obj.keys() {
                if !fields.contains_key(key) && !fields.contains_key(&format!("{key}?")) {
                    out.push(format!("{path}/{key}: not in the recorded shape"));
                }
            }
        }
        other => panic!("bad shape at {path}: {other}"),
    }
}

fn assert_shape(info: &Value, which: &str, step: &str) {
    let mut diff = Vec::new();
    shape_diff(info, &recorded_shape(which), "", &mut diff);
    assert!(diff.is_empty(), "vm.info {step}: {diff:#?}\n{info:#}");
}

#[test]
fn shape_diff_catches_differences() {
    let good = json!({
        "config": {}, "state": "Running", "memory_actual_size": 1,
        "device_tree": {"__rng": {"id": "__rng", "resources": [], "children": [],
                                  "parent": "_virtio-pci-__rng"},
                        "_virtio-pci-__rng": {"id": "_virtio-pci-__rng", "children": ["__rng"],
                            "resources": [{"PciBar": {"index": 0, "base": 1, "size": 2,
                                "type_": "Mmio64", "prefetchable": false}}, {"LegacyIrq": 5}],
                            "pci_bdf": "0000:00:01.0"}},
    });
    let mut diff = Vec::new();
    shape_diff(&good, &recorded_shape("booted"), "", &mut diff);
    assert_eq!(diff, Vec::<String>::new());
    let mut bad = good.clone();
    bad.as_object_mut().unwrap().remove("device_tree");
    let mut no_tree = Vec::new();
    shape_diff(&bad, &recorded_shape("booted"), "", &mut no_tree);
    assert_eq!(no_tree, vec!["/device_tree: missing".to_owned()]);
    for (pointer, replacement) in [
        ("/device_tree/__rng/children", json!("x")),
        (
            "/device_tree/_virtio-pci-__rng/resources/0",
            json!({"PciBar": {"index": 0}}),
        ),
        ("/device_tree/__rng/pci_bdf", json!(3)),
        ("/memory_actual_size", json!("1")),
    ] {
        let mut bad = good.clone();
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        let parent = bad.pointer_mut(parent).unwrap();
        match parent {
            Value::Array(items) => items[key.parse::<usize>().unwrap()] = replacement,
            other => other[key] = replacement,
        }
        let mut diff = Vec::new();
        shape_diff(&bad, &recorded_shape("booted"), "", &mut diff);
        assert!(!diff.is_empty(), "{pointer} not caught");
    }
    let mut extra = good;
    extra["device_tree"]["__rng"]["bogus"] = json!(1);
    let mut diff = Vec::new();
    shape_diff(&extra, &recorded_shape("booted"), "", &mut diff);
    assert!(!diff.is_empty());
}

/// vm.info in every state (created, running, paused, resumed, after the power button, with a
/// hot-plugged disk and NIC, after a removal, after shutdown) has real CH's shape.
async fn vm_info_shape(backend: Backend) {
    let dir = scratch();
    let Some(kernel) = common::guest_kernel(dir.path(), &backend) else {
        return;
    };
    let disk = disk_file(dir.path(), "disk.raw");
    let vmm = Vmm::spawn(&backend, dir.path()).await;
    let config = json!({
        "cpus": {"boot_vcpus": 1, "max_vcpus": 1},
        "memory": {"size": 134_217_728},
        "payload": {"kernel": kernel, "cmdline": "halt"},
        "disks": [{"path": disk, "id": "disk0", "image_type": "Raw"}],
        "serial": {"mode": "File", "file": dir.path().join("serial.log")},
        "console": {"mode": "Off"},
    })
    .to_string();
    assert_eq!(vmm.call("PUT", "vm.create", Some(&config)).await.0, 204);
    let info = |step: &'static str, which: &'static str| {
        let vmm = &vmm;
        async move {
            let (s, info) = vmm.call("GET", "vm.info", None).await;
            assert_eq!(s, 200, "{step}");
            assert_shape(&info, which, step);
            info
        }
    };
    info("created", "created").await;
    assert_eq!(vmm.call("PUT", "vm.boot", None).await.0, 204);
    let running = info("running", "booted").await;
    let tree = &running["device_tree"];
    // The boot disk hangs below its virtio-pci node, which has the PCI address.
    assert_eq!(tree["disk0"]["parent"], "_virtio-pci-disk0");
    assert_eq!(tree["_virtio-pci-disk0"]["children"], json!(["disk0"]));
    assert!(tree["_virtio-pci-disk0"]["pci_bdf"].is_string());
    assert_eq!(vmm.call("PUT", "vm.pause", None).await.0, 204);
    info("paused", "booted").await;
    assert_eq!(vmm.call("PUT", "vm.resume", None).await.0, 204);
    info("resumed", "booted").await;
    assert_eq!(vmm.call("PUT", "vm.power-button", None).await.0, 204);
    info("after the power button", "booted").await;

    let d1 = disk_file(dir.path(), "d1.raw");
    let body = json!({"path": d1, "id": "vol1", "image_type": "Raw"}).to_string();
    let (s, added) = vmm.call("PUT", "vm.add-disk", Some(&body)).await;
    assert_eq!(s, 200);
    let hot = info("after vm.add-disk", "booted").await;
    assert_eq!(
        hot["device_tree"]["_virtio-pci-vol1"]["pci_bdf"], added["bdf"],
        "the tree's address is the one vm.add-disk answered"
    );
    assert_eq!(
        vmm.call("PUT", "vm.remove-device", Some("{\"id\":\"vol1\"}"))
            .await
            .0,
        204
    );
    info("after vm.remove-device", "booted").await;
    assert_eq!(vmm.call("PUT", "vm.shutdown", None).await.0, 204);
    info("after vm.shutdown", "created").await;
}

on_ch_sim_and_real_ch!(vm_info_shape: vm_info_shape_on_ch_sim, vm_info_shape_on_real_ch);

// ---- ch-sim against real CH, step by step ----------------------------------------------------

/// What of an answer must match between ch-sim and a real CH: the status, and the body's shape
/// (object keys and value types, recursively; map-like objects such as `device_tree` by their
/// entries' shapes) or, for CH's error chains, every message of the chain.
fn signature(status: u16, body: &Value) -> Value {
    fn shape(v: &Value, path: &str) -> Value {
        match v {
            Value::Null => json!("null"),
            Value::Bool(_) => json!("bool"),
            Value::Number(_) => json!("number"),
            Value::String(_) => json!("string"),
            Value::Array(items) => {
                let mut seen: Vec<Value> = Vec::new();
                for item in items {
                    let s = shape(item, path);
                    if !seen.contains(&s) {
                        seen.push(s);
                    }
                }
                Value::Array(seen)
            }
            // Keyed by device id: the set of devices is the guest's, the entries' shape is CH's.
            Value::Object(map) if path.ends_with("device_tree") => {
                let mut seen: Vec<Value> = Vec::new();
                for entry in map.values() {
                    let s = shape(entry, "");
                    if !seen.contains(&s) {
                        seen.push(s);
                    }
                }
                json!({ "*": seen })
            }
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), shape(v, &format!("{path}/{k}"))))
                    .collect(),
            ),
        }
    }
    if body
        .as_array()
        .is_some_and(|a| !a.is_empty() && a.iter().all(Value::is_string))
    {
        return json!({ "status": status, "error": body });
    }
    json!({ "status": status, "body": shape(body, "") })
}

/// A 128 MiB VM with the halting stub guest and a boot disk; also makes the image `d1.raw` for
/// hot-plug steps.
fn halt_vm_config(dir: &Path, kernel: &Path) -> String {
    for name in ["disk.raw", "d1.raw"] {
        disk_file(dir, name);
    }
    json!({
        "cpus": {"boot_vcpus": 1, "max_vcpus": 1},
        "memory": {"size": 134_217_728},
        "payload": {"kernel": kernel, "cmdline": "halt"},
        "disks": [{"path": dir.join("disk.raw"), "id": "disk0", "image_type": "Raw"}],
        "serial": {"mode": "File", "file": dir.join("serial.log")},
        "console": {"mode": "Off"},
    })
    .to_string()
}

/// One REST script, run on ch-sim and on a real CH side by side: every step's signature must
/// be the same. Prints `N/N steps the same`.
async fn script(backend: &Backend, dir: &Path, kernel: &Path) -> Vec<(String, Value)> {
    let config = halt_vm_config(dir, kernel);
    let d1 = dir.join("d1.raw");
    let add = json!({"path": d1, "id": "vol1", "image_type": "Raw"}).to_string();
    let steps: Vec<(&str, &str, Option<&str>)> = vec![
        ("GET", "vmm.ping", None),
        ("GET", "vm.info", None),
        ("PUT", "vm.boot", None),
        ("PUT", "vm.pause", None),
        ("PUT", "vm.create", Some("{\"payload\":")),
        ("PUT", "vm.create", Some(&config)),
        ("PUT", "vm.create", Some(&config)),
        ("GET", "vm.info", None),
        ("PUT", "vm.shutdown", None),
        ("PUT", "vm.boot", None),
        ("GET", "vm.info", None),
        ("PUT", "vm.boot", None),
        ("PUT", "vm.pause", None),
        ("GET", "vm.info", None),
        ("PUT", "vm.resume", None),
        ("PUT", "vm.resume", None),
        ("GET", "vm.info", None),
        ("PUT", "vm.add-disk", Some(&add)),
        ("GET", "vm.info", None),
        ("PUT", "vm.remove-device", Some("{\"id\":\"nope\"}")),
        ("PUT", "vm.remove-device", Some("{\"id\":\"vol1\"}")),
        ("PUT", "vm.power-button", None),
        ("GET", "vm.info", None),
        ("PUT", "vm.shutdown", None),
        ("GET", "vm.info", None),
        ("PUT", "vm.shutdown", None),
        ("PUT", "vm.boot", None),
        ("GET", "vm.info", None),
        ("PUT", "vm.delete", None),
        ("PUT", "vm.delete", None),
        ("PUT", "vm.boot", None),
        ("GET", "vm.info", None),
        ("GET", "vm.nope", None),
        ("GET", "vmm.ping", None),
    ];
    let vmm = Vmm::spawn(backend, dir).await;
    let mut out = Vec::new();
    for (method, endpoint, body) in steps {
        let (status, value) = vmm.call(method, endpoint, body).await;
        if endpoint == "vm.boot" && status == 204 {
            // Let the guest reach its halt loop, as a client polling vm.info would.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        out.push((format!("{method} {endpoint}"), signature(status, &value)));
    }
    out
}

#[tokio::test]
async fn ch_sim_matches_real_ch_step_by_step() {
    let Some(real) = Backend::real_ch() else {
        return;
    };
    let sim_dir = scratch();
    let real_dir = scratch();
    let sim_kernel = common::guest_kernel(sim_dir.path(), &Backend::Sim).unwrap();
    let Some(real_kernel) = common::guest_kernel(real_dir.path(), &real) else {
        return;
    };
    let sim = script(&Backend::Sim, sim_dir.path(), &sim_kernel).await;
    let real = script(&real, real_dir.path(), &real_kernel).await;
    assert_eq!(sim.len(), real.len());
    let mut differ = Vec::new();
    for (i, ((step, s), (_, r))) in sim.iter().zip(&real).enumerate() {
        if s != r {
            differ.push(format!(
                "step {} {step}:\n  ch-sim  {s}\n  real CH {r}",
                i + 1
            ));
        }
    }
    eprintln!(
        "ch-sim vs real CH: {}/{} steps the same",
        sim.len() - differ.len(),
        sim.len()
    );
    assert!(differ.is_empty(), "{}", differ.join("\n"));
}

#[test]
fn signature_tells_shapes_and_errors_apart() {
    let a = signature(200, &json!({"state": "Running", "n": 1}));
    assert_eq!(a, signature(200, &json!({"state": "Paused", "n": 7})));
    assert_ne!(a, signature(200, &json!({"state": "Running"})));
    assert_ne!(a, signature(204, &json!({"state": "Running", "n": 1})));
    assert_ne!(a, signature(200, &json!({"state": "Running", "n": "1"})));
    let e = signature(500, &json!(["Error from API", "VM is not running"]));
    assert_eq!(
        e,
        signature(500, &json!(["Error from API", "VM is not running"]))
    );
    assert_ne!(
        e,
        signature(500, &json!(["other outer", "VM is not running"]))
    );
    assert_ne!(
        e,
        signature(500, &json!(["Error from API", "VM is not created"]))
    );
    assert_ne!(
        e,
        signature(404, &json!(["Error from API", "VM is not running"]))
    );
    let tree = |id: &str| json!({"device_tree": {id: {"id": id, "children": []}}});
    assert_eq!(signature(200, &tree("a")), signature(200, &tree("b")));
    assert_ne!(
        signature(200, &tree("a")),
        signature(200, &json!({"device_tree": {"a": {"id": "a"}}}))
    );
}

// ---- every endpoint in every VM state, against answers recorded from a real CH v53 ----------

/// One REST call: method, endpoint, body.
type Call = (&'static str, &'static str, Option<String>);

/// The VM states of the matrix, each reached from a fresh VMM by these calls.
fn matrix_states(config: &str) -> Vec<(&'static str, Vec<Call>)> {
    let create = ("PUT", "vm.create", Some(config.to_owned()));
    let boot = ("PUT", "vm.boot", None);
    vec![
        ("none", vec![]),
        ("created", vec![create.clone()]),
        ("running", vec![create.clone(), boot.clone()]),
        (
            "paused",
            vec![create.clone(), boot.clone(), ("PUT", "vm.pause", None)],
        ),
        (
            "shut down",
            vec![create.clone(), boot.clone(), ("PUT", "vm.shutdown", None)],
        ),
        ("deleted", vec![create, boot, ("PUT", "vm.delete", None)]),
    ]
}

/// The matrix's operations. `vm.snapshot` of a paused VM is left out: a real CH's answer there
/// depends on the host's KVM (it failed reading nested vCPU state on the recording host).
fn matrix_ops(dir: &Path, config: &str) -> Vec<Call> {
    let add = json!({"path": dir.join("d1.raw"), "id": "vol1"}).to_string();
    let snap = json!({"destination_url": format!("file://{}", dir.join("snap").display())});
    vec![
        ("PUT", "vm.boot", None),
        ("PUT", "vm.pause", None),
        ("PUT", "vm.resume", None),
        ("PUT", "vm.shutdown", None),
        ("PUT", "vm.power-button", None),
        ("PUT", "vm.reboot", None),
        ("GET", "vm.counters", None),
        ("PUT", "vm.add-disk", Some(add)),
        (
            "PUT",
            "vm.remove-device",
            Some("{\"id\":\"nope\"}".to_owned()),
        ),
        ("PUT", "vm.create", Some(config.to_owned())),
        ("GET", "vm.info", None),
        ("PUT", "vm.resize", Some("{\"desired_vcpus\":1}".to_owned())),
        ("PUT", "vm.snapshot", Some(snap.to_string())),
        ("PUT", "vm.delete", None),
        ("GET", "vmm.ping", None),
    ]
}

/// Every operation in every state, each from a fresh VMM: `"<state> <METHOD endpoint>"` →
/// the answer's [`signature`] (`vmm.ping` by its keys only: versions and pids differ).
async fn state_matrix(
    backend: &Backend,
    dir: &Path,
    kernel: &Path,
) -> serde_json::Map<String, Value> {
    let config = halt_vm_config(dir, kernel);
    let mut out = serde_json::Map::new();
    for (state, setup) in matrix_states(&config) {
        for (method, endpoint, body) in matrix_ops(dir, &config) {
            if state == "paused" && endpoint == "vm.snapshot" {
                continue;
            }
            let vmm_dir = tempfile::Builder::new()
                .prefix("chm")
                .tempdir_in(dir)
                .unwrap();
            let vmm = Vmm::spawn(backend, vmm_dir.path()).await;
            for (m, e, b) in &setup {
                let (status, v) = vmm.call(m, e, b.as_deref()).await;
                assert!(
                    (200..300).contains(&status),
                    "{state}: {m} {e}: {status} {v}"
                );
            }
            let (status, value) = vmm.call(method, endpoint, body.as_deref()).await;
            let sig = if endpoint == "vmm.ping" {
                let mut keys: Vec<&String> = value.as_object().unwrap().keys().collect();
                keys.sort();
                json!({"status": status, "keys": keys})
            } else {
                signature(status, &value)
            };
            out.insert(format!("{state} {method} {endpoint}"), sig);
        }
    }
    out
}

fn recorded_matrix() -> serde_json::Map<String, Value> {
    let text = include_str!("fixtures/ch-v53-state-matrix.json");
    let all: Value = serde_json::from_str(text).unwrap();
    all["answers"].as_object().unwrap().clone()
}

/// How `have` differs from the recorded answers, one line per differing entry.
fn matrix_diff(have: &serde_json::Map<String, Value>, who: &str) -> Vec<String> {
    let want = recorded_matrix();
    let mut keys: Vec<&String> = want.keys().chain(have.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| want.get(*k) != have.get(*k))
        .map(|k| {
            format!(
                "{k}:\n  recorded {}\n  {who} {}",
                want.get(k).unwrap_or(&Value::Null),
                have.get(k).unwrap_or(&Value::Null)
            )
        })
        .collect()
}

/// ch-sim answers every endpoint in every state as the recorded real CH v53 did.
#[tokio::test]
async fn ch_sim_answers_like_recorded_ch_in_every_state() {
    let dir = scratch();
    let kernel = common::guest_kernel(dir.path(), &Backend::Sim).unwrap();
    let have = state_matrix(&Backend::Sim, dir.path(), &kernel).await;
    let diff = matrix_diff(&have, "ch-sim");
    eprintln!(
        "ch-sim vs recorded CH v53: {}/{} answers the same",
        have.len() - diff.len(),
        have.len()
    );
    assert!(diff.is_empty(), "{}", diff.join("\n"));
}

/// The recording is current: a real CH gives the same answers. With `IRIKIT_CH_RECORD=<file>`
/// the real answers are written there (to refresh the fixture).
#[tokio::test]
async fn recorded_matrix_is_real_chs() {
    let Some(real) = Backend::real_ch() else {
        return;
    };
    let dir = scratch();
    let Some(kernel) = common::guest_kernel(dir.path(), &real) else {
        return;
    };
    let have = state_matrix(&real, dir.path(), &kernel).await;
    if let Some(path) = std::env::var_os("IRIKIT_CH_RECORD") {
        let doc = json!({
            "source": "cloud-hypervisor v53.0 built from its public source, recorded by \
                       tests/ch_api.rs recorded_matrix_is_real_chs (IRIKIT_CH_RECORD)",
            "answers": have,
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc).unwrap() + "\n").unwrap();
        return;
    }
    let diff = matrix_diff(&have, "real CH");
    assert!(diff.is_empty(), "{}", diff.join("\n"));
}

#[test]
fn matrix_diff_names_each_difference() {
    let mut have = recorded_matrix();
    assert!(matrix_diff(&have, "x").is_empty());
    let key = have.keys().next().unwrap().clone();
    have.insert(key.clone(), json!({"status": 999}));
    have.insert("extra PUT vm.nope".into(), json!({"status": 404}));
    let diff = matrix_diff(&have, "x");
    assert_eq!(diff.len(), 2, "{diff:#?}");
    assert!(diff[0].starts_with(&key) || diff[1].starts_with(&key));
}

/// Serial mode `Socket`, as Cloud Hypervisor v53's serial manager does it (CH.md): bound at
/// `vm.create` (an existing path makes create fail, leaving the config), one client at a time
/// (a new connection replaces the old one), the guest's output to the client, the stub's echo
/// with a cmdline starting with `e` (ch-sim only: a real CH has no 8259 for the stub's echo),
/// the socket removed at `vm.shutdown` and bound again at the next boot, removed at
/// `vm.delete`.
async fn serial_socket(backend: Backend) {
    use std::io::{Read as _, Write as _};
    use std::os::unix::net::UnixStream;
    let dir = scratch();
    let Some(kernel) = common::guest_kernel(dir.path(), &backend) else {
        return;
    };
    let socket = dir.path().join("serial.sock");
    let vmm = Vmm::spawn(&backend, dir.path()).await;
    let config = json!({
        "payload": {"kernel": kernel, "cmdline": "echo"},
        "serial": {"mode": "Socket", "socket": socket},
        "console": {"mode": "Off"},
    })
    .to_string();
    // An existing file at the path: create fails, but the config stays (recorded on CH v53):
    // created again it is "already created"; deleted, it can be created.
    std::fs::write(&socket, b"").unwrap();
    let (status, body) = vmm.call("PUT", "vm.create", Some(&config)).await;
    assert_eq!(status, 500);
    assert!(
        body.to_string().contains("Address already in use"),
        "{body}"
    );
    std::fs::remove_file(&socket).unwrap();
    let (status, body) = vmm.call("PUT", "vm.create", Some(&config)).await;
    assert_eq!(status, 500);
    assert!(body.to_string().contains("VM is already created"), "{body}");
    assert_eq!(vmm.call("PUT", "vm.delete", None).await.0, 204);
    assert_eq!(vmm.call("PUT", "vm.create", Some(&config)).await.0, 204);
    assert!(socket.exists(), "bound at vm.create");

    let read_until = |s: &mut UnixStream, needle: &str| {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 256];
        while !String::from_utf8_lossy(&seen).contains(needle) {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "closed before {needle:?}: {seen:?}");
            seen.extend_from_slice(&buf[..n]);
        }
    };
    let mut first = UnixStream::connect(&socket).unwrap();
    let (s, _) = vmm.call("PUT", "vm.boot", None).await;
    assert!((200..300).contains(&s), "{s}");
    read_until(&mut first, "PVH-HELLO cmdline=echo");
    // The stub echoes through the 8259's IRQ 4, which Cloud Hypervisor does not have: only
    // ch-sim (and QEMU) echo.
    let echoes = matches!(backend, Backend::Sim);
    if echoes {
        first.write_all(b"ping\r").unwrap();
        read_until(&mut first, "ping\r");
    }

    // A second client replaces the first, whose connection is shut down.
    let mut second = UnixStream::connect(&socket).unwrap();
    if echoes {
        second.write_all(b"pong\r").unwrap();
        read_until(&mut second, "pong\r");
    }
    first
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut rest = Vec::new();
    assert!(
        first.read_to_end(&mut rest).is_ok(),
        "the first client is shut down"
    );

    // Shutdown removes the socket; the next boot binds it again.
    assert_eq!(vmm.call("PUT", "vm.shutdown", None).await.0, 204);
    assert!(!socket.exists(), "removed at vm.shutdown");
    let mut buf = [0u8; 16];
    assert_eq!(
        second.read(&mut buf).unwrap_or(0),
        0,
        "client closed at shutdown"
    );
    let (s, _) = vmm.call("PUT", "vm.boot", None).await;
    assert!((200..300).contains(&s), "{s}");
    assert!(socket.exists(), "bound again at boot");
    assert_eq!(vmm.call("PUT", "vm.delete", None).await.0, 204);
    assert!(!socket.exists(), "removed at vm.delete");
}

on_ch_sim_and_real_ch!(serial_socket: serial_socket_on_ch_sim, serial_socket_on_real_ch);
