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

use common::Backend;
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

fn is_chain(v: &Value, last: &str) -> bool {
    v.as_array().is_some_and(|a| {
        a.iter().all(Value::is_string) && a.last().and_then(Value::as_str) == Some(last)
    })
}

async fn rest_session(backend: Backend) {
    let dir = tempfile::Builder::new()
        .prefix("chapi")
        .tempdir_in("/tmp")
        .unwrap();
    let Some(kernel) = common::guest_kernel(dir.path(), &backend) else {
        return;
    };
    let serial = dir.path().join("serial.log");
    let disk = dir.path().join("disk.raw");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
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

    assert_eq!(vmm.call("PUT", "vm.boot", None).await.0, 204);
    let (_, info) = vmm.call("GET", "vm.info", None).await;
    assert_eq!(info["state"], "Running");
    let (s, v) = vmm.call("PUT", "vm.boot", None).await;
    assert_eq!(s, 500);
    assert!(is_chain(&v, "VM is already created"), "{v}");
    common::eventually("serial banner", Duration::from_secs(10), || async {
        std::fs::read_to_string(&serial)
            .unwrap_or_default()
            .contains("PVH-HELLO cmdline=halt-me")
            .then_some(())
    })
    .await;

    // Hot-plug and removal.
    let d1 = dir.path().join("d1.raw");
    std::fs::File::create(&d1)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
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
    assert_eq!(vmm.call("PUT", "vm.shutdown", None).await.0, 204);
    let (_, info) = vmm.call("GET", "vm.info", None).await;
    assert_eq!(info["state"], "Created");
    let (s, v) = vmm.call("PUT", "vm.shutdown", None).await;
    assert_eq!(s, 500);
    assert!(is_chain(&v, "VM is not running"), "{v}");
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

#[tokio::test]
async fn rest_session_on_ch_sim() {
    rest_session(Backend::Sim).await;
}

#[tokio::test]
async fn rest_session_on_real_ch() {
    if let Some(backend) = Backend::real_ch() {
        rest_session(backend).await;
    }
}

/// A guest that writes S5 (cmdline starting with `p`) ends the VMM: exit 0, socket gone, lock left.
async fn guest_power_off(backend: Backend) {
    let dir = tempfile::Builder::new()
        .prefix("chapi")
        .tempdir_in("/tmp")
        .unwrap();
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

#[tokio::test]
async fn guest_power_off_on_ch_sim() {
    guest_power_off(Backend::Sim).await;
}

#[tokio::test]
async fn guest_power_off_on_real_ch() {
    if let Some(backend) = Backend::real_ch() {
        guest_power_off(backend).await;
    }
}

/// SIGKILL leaves socket and lock behind; a new instance on the same path starts fine.
#[tokio::test]
async fn sim_restarts_after_sigkill() {
    let dir = tempfile::Builder::new()
        .prefix("chapi")
        .tempdir_in("/tmp")
        .unwrap();
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
    let dir = tempfile::Builder::new()
        .prefix("chapi")
        .tempdir_in("/tmp")
        .unwrap();
    let Some(kernel) = common::guest_kernel(dir.path(), &backend) else {
        return;
    };
    let disk = dir.path().join("disk.raw");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
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

    let d1 = dir.path().join("d1.raw");
    std::fs::File::create(&d1)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
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

#[tokio::test]
async fn vm_info_shape_on_ch_sim() {
    vm_info_shape(Backend::Sim).await;
}

#[tokio::test]
async fn vm_info_shape_on_real_ch() {
    if let Some(backend) = Backend::real_ch() {
        vm_info_shape(backend).await;
    }
}

/// Serial mode `Socket`, as Cloud Hypervisor v53's serial manager does it (CH.md): bound at
/// `vm.create` (an existing path makes create fail), one client at a time (a new connection
/// replaces the old one), the guest's output to the client, the stub's echo with a cmdline
/// starting with `e`, the socket removed at `vm.shutdown` and bound again at the next boot,
/// removed at `vm.delete`.
async fn serial_socket(backend: Backend) {
    use std::io::{Read as _, Write as _};
    use std::os::unix::net::UnixStream;
    let dir = tempfile::Builder::new()
        .prefix("chapi")
        .tempdir_in("/tmp")
        .unwrap();
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
    // An existing file at the path: create fails.
    std::fs::write(&socket, b"").unwrap();
    let (status, _) = vmm.call("PUT", "vm.create", Some(&config)).await;
    assert_eq!(status, 500);
    std::fs::remove_file(&socket).unwrap();
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
    first.write_all(b"ping\r").unwrap();
    read_until(&mut first, "ping\r");

    // A second client replaces the first, whose connection is shut down.
    let mut second = UnixStream::connect(&socket).unwrap();
    second.write_all(b"pong\r").unwrap();
    read_until(&mut second, "pong\r");
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

#[tokio::test]
async fn serial_socket_on_ch_sim() {
    serial_socket(Backend::Sim).await;
}

#[tokio::test]
async fn serial_socket_on_real_ch() {
    if let Some(backend) = Backend::real_ch() {
        serial_socket(backend).await;
    }
}
