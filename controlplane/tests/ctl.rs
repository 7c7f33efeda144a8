//! `irikit apply` and `irikit get` apply and show Reservations like the other kinds.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[test]
fn applies_and_lists_a_reservation() {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/reservation.yaml");
    let out = Command::new(env!("CARGO_BIN_EXE_irikit"))
        .args([
            "get",
            "reservations",
            "--store",
            "memory",
            "--preload",
            file,
            "-o",
            "table",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    for col in ["NAMESPACE", "NAME", "RESOURCES", "POOLS"] {
        assert!(lines[0].contains(col), "{text}");
    }
    assert!(lines[1].contains("web-0"), "{text}");
    assert!(
        lines[1].contains("class/machine.small=1,localStorage=20Gi"),
        "{text}"
    );
    assert!(
        lines[1].contains("pool-a=Accepted,pool-b=Rejected"),
        "{text}"
    );

    // Invalid documents are refused with the field path.
    let bad = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        bad.path(),
        "apiVersion: core.ironcore.dev/v1alpha1\nkind: Reservation\nmetadata: {name: r, namespace: default}\nspec: {resources: {gpus: 1}}\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_irikit"))
        .args(["apply", "--store", "memory", "-f"])
        .arg(bad.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("spec.resources[gpus]"), "{err}");
}
