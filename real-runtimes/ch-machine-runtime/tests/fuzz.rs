//! A small seeded run of `iri-fuzz` (issue 17) against iri-mock-runtime, ch-machine-runtime on
//! ch-sim and file-volume-runtime: no crash, no panic, no hang, no file touched outside the
//! servers' roots, and no error code a bad input must not get.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{path::Path, process::Command};

#[test]
fn seeded_fuzz_finds_nothing() {
    // The fuzzer starts the servers from one directory: build the other packages' binaries.
    let mock = common::sibling_binary("iri-mock", "iri-mock-runtime");
    let volume = common::sibling_binary("file-volume-runtime", "file-volume-runtime");
    let bins = Path::new(env!("CARGO_BIN_EXE_iri-fuzz")).parent().unwrap();
    assert_eq!(mock.parent(), Some(bins));
    assert_eq!(volume.parent(), Some(bins));
    let out = Command::new(env!("CARGO_BIN_EXE_iri-fuzz"))
        .args(["--inputs", "400", "--seed", "17", "--timeout", "20s"])
        .arg("--bin-dir")
        .arg(bins)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}");
    for server in ["mock", "ch-sim", "file-volume"] {
        let line = text
            .lines()
            .find(|l| l.starts_with(server))
            .unwrap_or_else(|| panic!("no report for {server}"));
        assert!(line.contains("400 inputs"), "{line}");
        assert!(
            line.contains(
                "crashes 0, panics 0, hangs 0, files touched outside roots 0, findings 0"
            ),
            "{line}"
        );
    }
    assert!(out.status.success(), "iri-fuzz failed:\n{text}");
}
