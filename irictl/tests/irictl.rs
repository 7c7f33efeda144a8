//! End-to-end tests of `irictl`: every verb against the standalone `iri-mock-runtime` on unix
//! sockets in a temp dir, with insta snapshots of what a user sees (ids, ages and times redacted).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::{
    fmt::Write as _,
    io::Write as _,
    path::Path,
    process::{Child, Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use regex::Regex;

mod common;
use common::mock_binary;

/// A running `iri-mock-runtime` serving the three runtimes; killed on drop.
struct Mock {
    child: Child,
    dir: tempfile::TempDir,
}

impl Mock {
    fn start() -> Self {
        Self::start_with(&[])
    }

    fn start_with(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let sock = |name: &str| dir.path().join(name);
        let mut child = Command::new(mock_binary())
            .arg("--machine-socket")
            .arg(sock("machine.sock"))
            .arg("--volume-socket")
            .arg(sock("volume.sock"))
            .arg("--bucket-socket")
            .arg(sock("bucket.sock"))
            .args(["--seed", "1", "--exec-url-prefix", "http://exec.example/"])
            .args(extra)
            .env("RUST_LOG", "info")
            .args(["--log-format", "text"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The mock logs "serving" once per socket after binding it (connections then queue in
        // the backlog), so reading its log is the readiness signal; no polling.
        let stderr = child.stderr.take().unwrap();
        // Built before waiting, so a panic below still kills the child.
        let mock = Mock { child, dir };
        let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
        let mut log = String::new();
        let mut n_serving = 0;
        while n_serving < 3 {
            let Some(Ok(line)) = lines.next() else {
                panic!("iri-mock-runtime stopped before serving:\n{log}");
            };
            n_serving += usize::from(line.contains("serving"));
            log.push_str(&line);
            log.push('\n');
        }
        // Keep draining so the mock never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        mock
    }

    fn endpoint(&self, service: &str) -> String {
        format!(
            "unix://{}",
            self.dir.path().join(format!("{service}.sock")).display()
        )
    }

    /// Run irictl with all three endpoint flags.
    fn irictl(&self, args: &[&str]) -> Run {
        self.irictl_stdin(args, None)
    }

    fn irictl_stdin(&self, args: &[&str], stdin: Option<&str>) -> Run {
        let mut all = vec![
            "--machine-endpoint".to_owned(),
            self.endpoint("machine"),
            "--volume-endpoint".to_owned(),
            self.endpoint("volume"),
            "--bucket-endpoint".to_owned(),
            self.endpoint("bucket"),
        ];
        all.extend(args.iter().map(|s| (*s).to_owned()));
        run_irictl(&all, args, stdin, &[], Some(self.dir.path()))
    }

    /// Write a file into the mock's temp dir and return its path.
    fn file(&self, name: &str, text: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One irictl invocation: what was typed (without endpoint flags) and what came out.
struct Run {
    shown_args: String,
    stdout: String,
    stderr: String,
    code: i32,
}

fn run_irictl(
    args: &[String],
    shown: &[&str],
    stdin: Option<&str>,
    env: &[(&str, &str)],
    cwd: Option<&Path>,
) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_irictl"));
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, _) in std::env::vars() {
        if key.starts_with("IRI_") || key.starts_with("IRICTL_") || key == "RUST_LOG" {
            cmd.env_remove(key);
        }
    }
    cmd.envs(env.iter().copied());
    if let Some(cwd) = cwd {
        cmd.current_dir(cwd);
    }
    let mut child = cmd.spawn().unwrap();
    let mut pipe = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        pipe.write_all(text.as_bytes()).unwrap();
    }
    drop(pipe);
    let out = child.wait_with_output().unwrap();
    Run {
        shown_args: shown.join(" "),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
        code: out.status.code().unwrap_or(-1),
    }
}

impl Run {
    #[track_caller]
    fn ok(self) -> Self {
        assert_eq!(
            self.code, 0,
            "irictl {} failed: {}{}",
            self.shown_args, self.stdout, self.stderr
        );
        assert_eq!(
            self.stderr, "",
            "irictl {} wrote to stderr",
            self.shown_args
        );
        self
    }

    /// A failure: exit status 1 and exactly one `irictl: ` line on stderr.
    #[track_caller]
    fn fails(self) -> Self {
        assert_ne!(
            self.code, 0,
            "irictl {} succeeded: {}",
            self.shown_args, self.stdout
        );
        assert_eq!(
            self.stderr.lines().count(),
            1,
            "not one line: {:?}",
            self.stderr
        );
        assert!(self.stderr.starts_with("irictl: "), "{:?}", self.stderr);
        self
    }

    /// The first 63-hex-char id in stdout.
    fn id(&self) -> String {
        id_regex()
            .find(&self.stdout)
            .map(|m| m.as_str().to_owned())
            .unwrap_or_else(|| panic!("no id in {:?}", self.stdout))
    }
}

fn id_regex() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new("[0-9a-f]{63}").unwrap())
}

/// Collects runs into a transcript; ids become `<id-N>` (numbered by first appearance across
/// the transcript), table ages `<age>`, timestamps `<time>`, temp paths `<tmp>`.
#[derive(Default)]
struct Transcript {
    ids: Vec<String>,
    text: String,
    tmp: Option<String>,
}

impl Transcript {
    fn new(mock: &Mock) -> Self {
        Transcript {
            tmp: Some(mock.dir.path().display().to_string()),
            ..Default::default()
        }
    }

    fn redact_ids(&mut self, text: &str) -> String {
        let mut out = String::new();
        let mut last = 0;
        for m in id_regex().find_iter(text) {
            out.push_str(&text[last..m.start()]);
            let n = match self.ids.iter().position(|id| id == m.as_str()) {
                Some(i) => i + 1,
                None => {
                    self.ids.push(m.as_str().to_owned());
                    self.ids.len()
                }
            };
            write!(out, "<id-{n}>").unwrap();
            last = m.end();
        }
        out.push_str(&text[last..]);
        let time = Regex::new(r"(created_at|deleted_at|event_time)(\W+)[1-9][0-9]*").unwrap();
        let out = time.replace_all(&out, "$1$2<time>").into_owned();
        let waited = Regex::new(r"\(waited [^)]*\)").unwrap();
        let out = waited.replace_all(&out, "(waited <duration>)").into_owned();
        match &self.tmp {
            Some(tmp) => out.replace(tmp.as_str(), "<tmp>"),
            None => out,
        }
    }

    /// Re-align a table after redaction: cells are cut at the header's column starts.
    fn redact_table(&mut self, text: &str) -> String {
        let mut lines = text.lines();
        let Some(header) = lines.next() else {
            return String::new();
        };
        if header == "No resources found" || !text.contains("   ") {
            return self.redact_ids(text);
        }
        let starts: Vec<usize> = Regex::new(r"\S+")
            .unwrap()
            .find_iter(header)
            .map(|m| m.start())
            .collect();
        let names: Vec<&str> = header.split_whitespace().collect();
        let cut = |line: &str| -> Vec<String> {
            (0..starts.len())
                .map(|i| {
                    let end = starts
                        .get(i + 1)
                        .copied()
                        .unwrap_or(usize::MAX)
                        .min(line.len());
                    line.get(starts[i].min(line.len())..end)
                        .unwrap_or("")
                        .trim()
                        .to_owned()
                })
                .collect()
        };
        let mut rows = vec![names.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()];
        for line in lines {
            let mut cells = cut(line);
            for (cell, name) in cells.iter_mut().zip(&names) {
                *cell = if *name == "Age" && !cell.is_empty() {
                    let deleting = cell.ends_with("(deleting)");
                    if deleting {
                        "<age> (deleting)".into()
                    } else {
                        "<age>".into()
                    }
                } else {
                    self.redact_ids(cell)
                };
            }
            rows.push(cells);
        }
        let widths: Vec<usize> = (0..names.len())
            .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
            .collect();
        let mut out = String::new();
        for row in rows {
            let line = row
                .iter()
                .zip(&widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect::<Vec<_>>()
                .join("   ");
            writeln!(out, "{}", line.trim_end()).unwrap();
        }
        out
    }

    /// Record a run; table output is re-aligned, everything else redacted as text.
    fn push(&mut self, run: &Run) -> &mut Self {
        let shown = self.redact_ids(&run.shown_args);
        writeln!(self.text, "$ irictl {shown}").unwrap();
        let structured = ["-o json", "-o yaml"]
            .iter()
            .any(|o| run.shown_args.contains(o));
        let stdout = if structured {
            self.redact_ids(&run.stdout)
        } else {
            self.redact_table(&run.stdout)
        };
        self.text.push_str(&stdout);
        if !run.stderr.is_empty() {
            let stderr = self.redact_ids(&run.stderr);
            for line in stderr.lines() {
                writeln!(self.text, "stderr: {line}").unwrap();
            }
        }
        if run.code != 0 {
            writeln!(self.text, "exit: {}", run.code).unwrap();
        }
        self.text.push('\n');
        self
    }
}

const MACHINE_YAML: &str = "\
metadata:
  labels:
    app: web
    tier: frontend
  annotations:
    note: first
spec:
  class: x3-small
  power: POWER_ON
  ignition_data: aWduaXRpb24=
  volumes:
  - name: root
    device: oda
    local_disk:
      size_bytes: 10737418240
      image:
        image: ghcr.io/ironcore-dev/os-images/gardenlinux:latest
  network_interfaces:
  - name: primary
    network_id: net-1
    ips: [10.0.0.10]
";

const MACHINE_JSON: &str = r#"{
  "metadata": {"labels": {"app": "db"}},
  "spec": {"class": "x3-medium", "power": 1, "guest_config": {"hostname": "db-0"}}
}"#;

#[test]
fn get_status_version_and_classes_of_each_service() {
    let mock = Mock::start();
    let mut t = Transcript::new(&mock);
    for args in [
        &["get", "status"][..],
        &["get", "status", "--service", "volume"],
        &["get", "status", "--service", "bucket"],
        &["get", "bucketclasses"],
        &["get", "version"],
        &["get", "version", "--service", "volume"],
        &["get", "version", "--service", "bucket"],
        &["get", "status", "-o", "yaml"],
        &["get", "version", "-o", "json"],
    ] {
        t.push(&mock.irictl(args).ok());
    }
    insta::assert_snapshot!(t.text);
}

#[test]
fn machine_get_create_delete() {
    let mock = Mock::start();
    let mut t = Transcript::new(&mock);
    let yaml = mock.file("machine.yaml", MACHINE_YAML);
    let json = mock.file("machine.json", MACHINE_JSON);
    t.push(&mock.irictl(&["get", "machines"]).ok());
    let web = mock.irictl(&["create", "-f", &yaml]).ok();
    t.push(&web);
    let web = web.id();
    t.push(
        &mock
            .irictl(&["create", "machine", "-f", &json, "-o", "table"])
            .ok(),
    );
    t.push(&mock.irictl(&["get", "machines"]).ok());
    t.push(&mock.irictl(&["get", "mach", "-l", "app=web"]).ok());
    t.push(
        &mock
            .irictl(&["get", "machs", "-l", "app=web,tier=frontend"])
            .ok(),
    );
    t.push(&mock.irictl(&["get", "machine", "-l", "app=none"]).ok());
    t.push(&mock.irictl(&["get", "machine", &web]).ok());
    t.push(&mock.irictl(&["get", "machine", &web, "-o", "yaml"]).ok());
    t.push(&mock.irictl(&["delete", "machine", &web]).ok());
    t.push(&mock.irictl(&["get", "machines"]).ok());
    insta::assert_snapshot!(t.text);
}

#[test]
fn machine_json_output() {
    let mock = Mock::start();
    let mut t = Transcript::new(&mock);
    let json = mock.file("machine.json", MACHINE_JSON);
    t.push(&mock.irictl(&["create", "-f", &json, "-o", "json"]).ok());
    t.push(&mock.irictl(&["get", "machines", "-o", "json"]).ok());
    insta::assert_snapshot!(t.text);
}

#[test]
fn machine_update_attach_detach_exec() {
    let mock = Mock::start();
    let mut t = Transcript::new(&mock);
    let yaml = mock.file("machine.yaml", MACHINE_YAML);
    let id = mock.irictl(&["create", "-f", &yaml]).ok().id();
    let volume = mock.file(
        "volume.yaml",
        "name: data\ndevice: odb\nconnection:\n  driver: ceph\n  handle: pool/vol-1\n  attributes: {monitors: 10.0.0.1}\n  effective_storage_bytes: 1073741824\n",
    );
    let bigger = mock.file(
        "bigger.yaml",
        "name: data\ndevice: odb\nconnection:\n  driver: ceph\n  handle: pool/vol-1\n  effective_storage_bytes: 2147483648\n",
    );
    let nic = mock.file(
        "nic.json",
        r#"{"name": "secondary", "network_id": "net-2", "ips": ["10.0.1.10"]}"#,
    );
    for args in [
        &["update", "power", "--machine-id", &id, "--power", "off"][..],
        &["get", "machine", &id],
        &["update", "power", "--machine-id", &id, "--power", "0"],
        &["get", "machine", &id],
        &[
            "update",
            "annotations",
            "--machine-id",
            &id,
            "owner=team-a",
            "note=second",
        ],
        &["attach", "volume", "-f", &volume, "--machine-id", &id],
        &["attach", "nic", "-f", &nic, "--machine-id", &id],
        &["update", "volume", "-f", &bigger, "--machine-id", &id],
        &["get", "machine", &id, "-o", "yaml"],
        &["detach", "vol", "data", "--machine-id", &id],
        &[
            "detach",
            "networkinterface",
            "secondary",
            "--machine-id",
            &id,
        ],
        &["update", "annotations", "--machine-id", &id, "--clear"],
        &["get", "machine", &id, "-o", "yaml"],
        &["exec", "--url-only", &id],
    ] {
        t.push(&mock.irictl(args).ok());
    }
    insta::assert_snapshot!(t.text);
}

#[test]
fn volumes_snapshots_and_expand() {
    let mock = Mock::start();
    let mut t = Transcript::new(&mock);
    let volume = mock.file(
        "volume.yaml",
        "metadata:\n  labels: {app: db}\nspec:\n  class: fast\n  resources: {storage_bytes: 10737418240}\n  volume_data_source:\n    image_data_source: {image: ghcr.io/ironcore-dev/os-images/gardenlinux:latest, architecture: amd64}\n",
    );
    t.push(&mock.irictl(&["get", "volumes"]).ok());
    let created = mock.irictl(&["create", "volume", "-f", &volume]).ok();
    t.push(&created);
    let volume_id = created.id();
    let snapshot = mock.file(
        "snapshot.json",
        &format!(r#"{{"kind": "VolumeSnapshot", "spec": {{"volume_id": "{volume_id}"}}}}"#),
    );
    let snap = mock.irictl(&["create", "-f", &snapshot]).ok();
    t.push(&snap);
    let snapshot_id = snap.id();
    let restore = mock.file(
        "restore.yaml",
        &format!("kind: Volume\nspec:\n  class: slow\n  resources: {{storage_bytes: 21474836480}}\n  volume_data_source:\n    snapshot_data_source: {{snapshot_id: {snapshot_id}}}\n"),
    );
    t.push(&mock.irictl(&["create", "-f", &restore]).ok());
    for args in [
        &["get", "vols"][..],
        &["get", "vol", "-l", "app=db"],
        &["get", "volumesnapshots"],
        &["get", "volsnap", &snapshot_id, "-o", "yaml"],
        &["expand", "volume", &volume_id, "--size", "20Gi"],
        &["get", "volume", &volume_id],
        &["delete", "volsnap", &snapshot_id],
        &["delete", "vol", &volume_id],
        &["get", "volsnaps"],
        &["get", "volume", "-o", "yaml"],
    ] {
        t.push(&mock.irictl(args).ok());
    }
    insta::assert_snapshot!(t.text);
}

#[test]
fn buckets() {
    let mock = Mock::start();
    let mut t = Transcript::new(&mock);
    let bucket = mock.file(
        "bucket.yaml",
        "kind: Bucket\nmetadata:\n  labels: {team: a}\nspec:\n  class: regular\n",
    );
    t.push(&mock.irictl(&["get", "buckets"]).ok());
    let created = mock.irictl(&["create", "-f", &bucket]).ok();
    t.push(&created);
    let id = created.id();
    for args in [
        &["get", "bucket"][..],
        &["get", "buckets", "-l", "team=a", "-o", "yaml"],
        &["delete", "bucket", &id],
        &["get", "buckets"],
    ] {
        t.push(&mock.irictl(args).ok());
    }
    insta::assert_snapshot!(t.text);
}

#[test]
fn events_of_each_service() {
    let mock = Mock::start();
    let mut t = Transcript::new(&mock);
    let machine = mock.file("machine.yaml", MACHINE_YAML);
    let volume = mock.file(
        "volume.yaml",
        "spec: {class: fast, resources: {storage_bytes: 1073741824}}\n",
    );
    t.push(&mock.irictl(&["get", "events"]).ok());
    let id = mock.irictl(&["create", "-f", &machine]).ok().id();
    mock.irictl(&["create", "vol", "-f", &volume]).ok();
    for args in [
        &["get", "events"][..],
        &["get", "events", &id],
        &["get", "events", "-l", "app=web", "-d", "5m"],
        &["get", "events", "-l", "app=none"],
        &["--service", "volume", "get", "events"],
        &["get", "events", "--service", "bucket"],
        &["get", "events", "-o", "yaml"],
    ] {
        t.push(&mock.irictl(args).ok());
    }
    insta::assert_snapshot!(t.text);
}

#[test]
fn create_reads_stdin_several_documents_and_infers_kinds() {
    let mock = Mock::start();
    let mut t = Transcript::new(&mock);
    let many = "kind: Machine\nspec: {class: x3-small}\n---\nkind: vol\nspec: {class: fast, resources: {storage_bytes: 1073741824}}\n";
    let run = mock.irictl_stdin(&["create", "-f", "-"], Some(many)).ok();
    t.push(&run);
    let volume_id = id_regex()
        .find_iter(&run.stdout)
        .nth(1)
        .map(|m| m.as_str().to_owned())
        .unwrap();
    // A snapshot is the only kind with spec.volume_id, so no kind is needed.
    let snapshot = format!("# comment\nspec: {{volume_id: {volume_id}}}\n");
    t.push(
        &mock
            .irictl_stdin(&["create", "-f", "-"], Some(&snapshot))
            .ok(),
    );
    let json_list = r#"[{"spec": {"class": "regular"}, "kind": "bucket"}]"#;
    t.push(
        &mock
            .irictl_stdin(&["create", "-f", "-", "-o", "yaml"], Some(json_list))
            .ok(),
    );
    t.push(&mock.irictl(&["get", "machines"]).ok());
    insta::assert_snapshot!(t.text);
}

#[test]
fn bad_input_gives_one_line_errors() {
    let mock = Mock::start();
    let mut t = Transcript::new(&mock);
    let id = mock
        .irictl(&["create", "-f", &mock.file("m.yaml", MACHINE_YAML)])
        .ok()
        .id();
    let unknown_field = mock.file("unknown.yaml", "spec:\n  class: x3-small\n  imag: foo\n");
    let malformed = mock.file("malformed.yaml", "spec: [class: x3\n");
    let ambiguous = mock.file("ambiguous.yaml", "metadata: {labels: {a: b}}\n");
    let mismatch = mock.file("mismatch.yaml", "kind: Volume\nspec: {class: fast}\n");
    let two_nics = mock.file("two.yaml", "name: a\n---\nname: b\n");
    let bad_enum = mock.file("enum.yaml", "spec: {power: POWER_MAYBE}\n");
    let missing = mock.dir.path().join("missing.yaml").display().to_string();
    for args in [
        &["get", "flavours"][..],
        &["delete", "status", "x"],
        &["attach", "machine", "-f", &two_nics, "--machine-id", &id],
        &["frobnicate"],
        &["create", "-f", &unknown_field],
        &["create", "machine", "-f", &malformed],
        &["create", "-f", &ambiguous],
        &["create", "machine", "-f", &mismatch],
        &["create", "machine", "-f", &bad_enum],
        &["create", "-f", &missing],
        &[
            "create",
            "volume",
            "-f",
            &mock.file("nosize.yaml", "spec: {class: fast}\n"),
        ],
        &[
            "create",
            "machine",
            "-f",
            &mock.file("noclass.yaml", "spec: {class: no-such-class}\n"),
        ],
        &["attach", "nic", "-f", &two_nics, "--machine-id", &id],
        &["delete", "machine", "no-such-id"],
        &["delete", "volume", "no-such-id"],
        &["delete", "volsnap", "no-such-id"],
        &["delete", "bucket", "no-such-id"],
        &["get", "machine", "no-such-id"],
        &["get", "volume", "no-such-id"],
        &["detach", "volume", "no-such-volume", "--machine-id", &id],
        &[
            "update",
            "power",
            "--machine-id",
            "no-such-id",
            "--power",
            "on",
        ],
        &[
            "update",
            "power",
            "--machine-id",
            &id,
            "--power",
            "sideways",
        ],
        &["get", "machines", "-l", "novalue"],
        &["get", "machines", "-o", "xml"],
        &["get", "events", "-d", "soon"],
        &["expand", "volume", "no-such-id", "--size", "1Gi"],
        &["expand", "volume", "x", "--size", "12Qi"],
        &["get", "status", "x"],
    ] {
        t.push(&mock.irictl(args).fails());
    }
    insta::assert_snapshot!(t.text);
}

#[test]
fn several_failures_are_one_line_each() {
    let mock = Mock::start();
    let mut t = Transcript::new(&mock);
    let id = mock
        .irictl(&["create", "-f", &mock.file("m.yaml", MACHINE_YAML)])
        .ok()
        .id();
    let run = mock.irictl(&["delete", "machine", "gone-1", &id, "gone-2"]);
    assert_eq!(run.code, 1);
    assert_eq!(run.stderr.lines().count(), 2);
    t.push(&run);
    insta::assert_snapshot!(t.text);
}

#[test]
fn endpoints_from_address_env_and_discovery_errors() {
    let mock = Mock::start();
    let machine = mock.endpoint("machine");
    let volume = mock.endpoint("volume");
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let owned: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        run_irictl(&owned, args, None, env, None)
    };
    let out = run(&["--address", &machine, "get", "version"], &[]).ok();
    assert!(out.stdout.contains("iri-mock"), "{}", out.stdout);
    let out = run(
        &["get", "status"],
        &[("IRI_MACHINE_RUNTIME_ENDPOINT", &machine)],
    )
    .ok();
    assert!(out.stdout.contains("x3-small"), "{}", out.stdout);
    // Only a volume endpoint: status and version go to the volume runtime.
    let out = run(&["--volume-endpoint", &volume, "get", "status"], &[]).ok();
    assert!(out.stdout.starts_with("Name   TPS"), "{}", out.stdout);
    // The specific flag wins over --address.
    let out = run(
        &[
            "--address",
            "unix:///nonexistent.sock",
            "--machine-endpoint",
            &machine,
            "get",
            "machines",
        ],
        &[],
    )
    .ok();
    assert_eq!(out.stdout, "No resources found\n");

    let mut t = Transcript::new(&mock);
    let missing = format!("unix://{}/absent.sock", mock.dir.path().display());
    for (args, env) in [
        (
            &["--discovery-timeout", "0s", "get", "machines"][..],
            &[][..],
        ),
        (
            &["get", "machines"],
            &[("IRI_MACHINE_RUNTIME_ENDPOINT", "bogus")][..],
        ),
        (
            &["--machine-endpoint", "http://x:1", "get", "machines"],
            &[],
        ),
        (&["--machine-endpoint", &missing, "get", "machines"], &[]),
    ] {
        let owned: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        t.push(&run_irictl(&owned, args, None, env, None).fails());
    }
    insta::assert_snapshot!(t.text);
}

#[test]
fn a_hanging_runtime_ends_at_the_timeout() {
    let mock = Mock::start_with(&["--fault", "ListMachines:always:hang"]);
    let mut t = Transcript::new(&mock);
    let start = Instant::now();
    t.push(
        &mock
            .irictl(&["--timeout", "300ms", "get", "machines"])
            .fails(),
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    let mock = Mock::start_with(&["--fault", "DeleteMachine:always:error=unavailable"]);
    t.tmp = Some(mock.dir.path().display().to_string());
    t.push(&mock.irictl(&["delete", "machine", "x"]).fails());
    insta::assert_snapshot!(t.text);
}

#[test]
fn help() {
    let run = |args: &[&str]| {
        let owned: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        run_irictl(&owned, args, None, &[], None).ok()
    };
    let mut text = String::new();
    for args in [
        &["--help"][..],
        &["get", "--help"],
        &["create", "--help"],
        &["update", "power", "--help"],
    ] {
        let out = run(args);
        writeln!(text, "$ irictl {}\n{}", args.join(" "), out.stdout).unwrap();
    }
    insta::assert_snapshot!(text);
}

#[test]
fn deleting_objects_stay_listed_as_terminating() {
    let mock = Mock::start_with(&["--terminate-delay", "1h"]);
    let mut t = Transcript::new(&mock);
    t.push(&mock.irictl(&["get", "machines", "-o", "json"]).ok());
    let id = mock
        .irictl(&["create", "-f", &mock.file("m.yaml", MACHINE_YAML)])
        .ok()
        .id();
    for args in [
        &["delete", "machine", &id][..],
        &["delete", "machine", &id],
        &["get", "machines"],
    ] {
        t.push(&mock.irictl(args).ok());
    }
    let json = mock.irictl(&["get", "machine", &id, "-o", "json"]).ok();
    let value: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_ne!(value[0]["metadata"]["deleted_at"], 0, "{value}");
    insta::assert_snapshot!(t.text);
}

/// irikit's reservation extension on the machine endpoint: create (kind named or inferred from
/// the document), get as a table and as YAML, a rejected one, delete.
#[test]
fn reservations() {
    let mock = Mock::start();
    let accepted = mock.file(
        "rsv.yaml",
        "metadata:\n  labels: {team: a}\nspec:\n  machine_classes: {x3-small: 2}\n  local_storage_bytes_per_machine: 1073741824\n",
    );
    let too_many = mock.file(
        "big.yaml",
        "kind: Reservation\nspec:\n  machine_classes: {x3-large: 1000000}\n",
    );
    let empty = mock.irictl(&["get", "reservations"]).ok();
    assert_eq!(
        empty.stdout.trim(),
        "No resources found",
        "{}",
        empty.stdout
    );
    let created = mock
        .irictl(&["create", "reservation", "-f", &accepted])
        .ok();
    assert!(
        created.stdout.starts_with("Created reservation "),
        "{}",
        created.stdout
    );
    let id = created.id();
    let rejected = mock
        .irictl(&["create", "-f", &too_many, "-o", "table"])
        .ok();
    assert!(
        rejected.stdout.contains("RESERVATION_REJECTED"),
        "{}",
        rejected.stdout
    );
    let rejected_id = rejected.id();
    let table = mock.irictl(&["get", "rsv", &id]).ok();
    let header: Vec<&str> = table
        .stdout
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "ID",
            "Classes",
            "CPU",
            "Memory",
            "LocalStorage",
            "State",
            "Age"
        ],
        "{}",
        table.stdout
    );
    let row: Vec<&str> = table
        .stdout
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(
        &row[..6],
        &[
            id.as_str(),
            "x3-small=2",
            "0",
            "0",
            "1073741824",
            "RESERVATION_ACCEPTED"
        ],
        "{}",
        table.stdout
    );
    let yaml = mock
        .irictl(&["get", "reservations", "-l", "team=a", "-o", "yaml"])
        .ok();
    assert!(
        yaml.stdout.contains("state: RESERVATION_ACCEPTED")
            && yaml.stdout.contains("x3-small: 2")
            && !yaml.stdout.contains(&rejected_id),
        "{}",
        yaml.stdout
    );
    mock.irictl(&["delete", "reservation", &id, &rejected_id])
        .ok();
    let gone = mock.irictl(&["get", "reservations"]).ok();
    assert_eq!(gone.stdout.trim(), "No resources found", "{}", gone.stdout);
    let missing = mock.irictl(&["delete", "rsv", &id]).fails();
    assert!(missing.stderr.contains("NotFound"), "{}", missing.stderr);
}

/// `irictl exec` without a terminal: stdin goes to the mock's scripted console, its banner and
/// echo come out on stdout, and the session ends (exit 0) after stdin closed. A second console
/// while one is open, and an unknown machine, fail with the gRPC code.
#[test]
fn exec_scripted_console_session() {
    let mock = Mock::start_with(&["--console"]);
    let yaml = mock.file("machine.yaml", MACHINE_YAML);
    let id = mock.irictl(&["create", "-f", &yaml]).ok().id();
    let run = mock
        .irictl_stdin(&["exec", &id], Some("hello-from-irictl\r"))
        .ok();
    assert!(
        run.stdout
            .starts_with(&format!("iri-mock console of machine {id}\r\n")),
        "{:?}",
        run.stdout
    );
    assert!(
        run.stdout.contains("hello-from-irictl\r"),
        "{:?}",
        run.stdout
    );
    // Nothing is echoed twice and nothing else comes out.
    assert_eq!(run.stdout.matches("hello-from-irictl").count(), 1);

    let url = mock.irictl(&["exec", "--url-only", &id]).ok().stdout;
    assert!(url.contains("/exec/"), "{url}");
    // The URL's token is unused: a second Exec succeeds, but opening the console twice does not.
    let run = mock.irictl(&["exec", "--url-only", &id]).ok();
    assert!(run.stdout.contains("/exec/"));
    let unknown = mock
        .irictl(&[
            "exec",
            "0000000000000000000000000000000000000000000000000000000000000000",
        ])
        .fails();
    assert!(unknown.stderr.contains("NotFound"), "{}", unknown.stderr);
}

/// `irictl exec` on a terminal (a pty from util-linux `script`): raw mode, the console's banner
/// and echo, and Ctrl+] leaves with exit 0.
#[test]
fn exec_interactive_on_a_terminal() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skip: util-linux `script` is not installed (no pty for the interactive test)");
        return;
    }
    let mock = Mock::start_with(&["--console"]);
    let yaml = mock.file("machine.yaml", MACHINE_YAML);
    let id = mock.irictl(&["create", "-f", &yaml]).ok().id();
    let irictl = format!(
        "{} --machine-endpoint {} exec {id}",
        env!("CARGO_BIN_EXE_irictl"),
        mock.endpoint("machine")
    );
    // Typed after the session is up (raw mode), then Ctrl+] (octal 035).
    let keys = "sleep 2; printf 'typed-on-a-tty\\r'; sleep 1; printf '\\035'; sleep 1";
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("({keys}) | script -qfec \"{irictl}\" /dev/null"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.contains("Connected to the console (Ctrl+] leaves)."),
        "{text:?}"
    );
    assert!(
        text.contains(&format!("iri-mock console of machine {id}")),
        "{text:?}"
    );
    assert!(text.contains("typed-on-a-tty"), "{text:?}");
    assert!(text.contains("Left the console."), "{text:?}");
}
