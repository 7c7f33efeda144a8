//! Calibration against IronCore's own runtimes (issue 14): the embedded mock, with the mutants
//! that reproduce one column of reference §2.1/§2.1a, stands in for the fake runtime,
//! libvirt-provider, ceph-provider (volume) and cloud-hypervisor-provider. Each column passes
//! every `must` case (the fakes' one documented exception aside), and the `should` cases it
//! fails are kept as a snapshot; each of them names that runtime in its evidence, i.e. the
//! reference table predicts it. The same table is in conformance/README.md ("what IronCore's
//! runtimes would score").
#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    clippy::field_reassign_with_default
)]

use std::{collections::BTreeMap, time::Duration};

use iri_conformance::{
    Requirement, Service, cases,
    runner::{self, RunConfig, Targets},
};
use iri_mock::Mutant;

/// One IronCore runtime column of reference §2.1/§2.1a.
struct Column {
    name: &'static str,
    /// What the evidence of every should case it fails names.
    evidence_names: &'static [&'static str],
    services: &'static [Service],
    mutants: &'static [Mutant],
    /// Must cases it fails, by design (documented in the README).
    must_exceptions: &'static [&'static str],
}

const COLUMNS: &[Column] = &[
    Column {
        // §2.3/§2.4 as far as a runtime shows it. Left out: the fakes never move states (tests
        // set them by hand), keep no per-volume/NIC status, and panic on nil requests.
        name: "fake (iri/testing)",
        evidence_names: &["fake"],
        services: &[Service::Machine, Service::Volume, Service::Bucket],
        mutants: &[
            Mutant::UnknownClassAccepted,
            Mutant::VolumeUnknownClassAccepted,
            Mutant::BucketUnknownClassAccepted,
            Mutant::InvalidPowerAccepted,
            Mutant::CreateVolumesUnchecked,
            Mutant::AttachMissingVolumeAccepted,
            Mutant::AttachDuplicateOk,
            Mutant::AttachNicDuplicateOk,
            Mutant::DetachEmptyNameAccepted,
            Mutant::EmptyIdAccepted,
            Mutant::VolumeEmptyIdAccepted,
            Mutant::ExecUnknownOk,
            Mutant::ZeroSizeAccepted,
            Mutant::VolumeTwoSourcesAccepted,
            Mutant::UnknownSnapshotSourceAccepted,
            Mutant::SnapshotUnknownVolumeAccepted,
            Mutant::SnapshotValidationOff,
            Mutant::ExpandShrinkAccepted,
            Mutant::EventFilterIgnored,
            Mutant::EventIdFilterIgnored,
            Mutant::EventLabelFilterIgnored,
            Mutant::DeleteImmediate,
            Mutant::VolumeDeleteImmediate,
            Mutant::BucketDeleteImmediate,
        ],
        // The fakes check no class (§2.1 "no check"); every production runtime rejects one.
        must_exceptions: &[
            "bucket.create.unknown_class_fails",
            "machine.create.unknown_class_fails",
            "volume.create.unknown_class_fails",
        ],
    },
    Column {
        name: "libvirt-provider",
        evidence_names: &["libvirt-provider"],
        services: &[Service::Machine],
        mutants: &[
            Mutant::UnknownClassInternal,
            Mutant::AttachNicDuplicateOk,
            Mutant::CreatePowerIgnored,
            Mutant::PowerOffIgnoredState,
        ],
        must_exceptions: &[],
    },
    Column {
        name: "ceph-provider (volume)",
        evidence_names: &["ceph-provider"],
        services: &[Service::Volume],
        mutants: &[
            Mutant::VolumeUnknownClassInternal,
            Mutant::VolumeUnknownIdInternal,
            Mutant::ExpandSameSizeErrors,
        ],
        must_exceptions: &[],
    },
    Column {
        name: "cloud-hypervisor-provider",
        evidence_names: &["cloud-hypervisor-provider"],
        services: &[Service::Machine],
        mutants: &[
            Mutant::UnknownClassUnknown,
            Mutant::AttachDetachPlainErrors,
            Mutant::UpdateVolumeNoop,
            Mutant::DeleteStateUnchanged,
        ],
        must_exceptions: &[],
    },
];

fn config() -> RunConfig {
    let mut c = RunConfig::default();
    c.parallel = 32;
    c.case_timeout = Duration::from_secs(30);
    c.cleanup_timeout = Duration::from_secs(2);
    // libvirt-provider never powers off: the cases that wait for it wait this long.
    c.params.state_timeout = Duration::from_millis(2000);
    c.params.poll_interval = Duration::from_millis(50);
    c.params.rpc_timeout = Duration::from_secs(10);
    c.params.idempotent_count = 2;
    c.params.parallel_creates = 3;
    c
}

/// The failed cases (id → level) of the column's services against the column's mock.
async fn failing(column: &Column, only: Option<&[String]>) -> BTreeMap<String, Requirement> {
    let delays = iri_mock::Delays {
        terminate: Duration::from_millis(500),
        ..runner::embedded_delays()
    };
    let builder = runner::embedded_builder()
        .delays(delays)
        .mutants(column.mutants.iter().copied());
    let targets = Targets::embedded_with(builder).await.unwrap();
    let selected: Vec<_> = cases::rpc()
        .into_iter()
        .filter(|c| column.services.contains(&c.service))
        .filter(|c| only.is_none_or(|ids| ids.contains(&c.id)))
        .collect();
    let report = runner::run(&config(), &targets, selected, Default::default(), &|_| {}).await;
    report
        .results
        .iter()
        .filter(|r| r.outcome.status() == "failed")
        .map(|r| (r.id.clone(), r.requirement))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ironcore_runtimes_pass_every_must_case() {
    let evidence: BTreeMap<String, String> = cases::rpc()
        .into_iter()
        .map(|c| (c.id, c.evidence))
        .collect();
    let mut score: BTreeMap<&str, BTreeMap<&str, Vec<String>>> = BTreeMap::new();
    let mut problems = Vec::new();
    for column in COLUMNS {
        // A failure counts only when a second run against a fresh mock confirms it.
        let first = failing(column, None).await;
        let ids: Vec<String> = first.keys().cloned().collect();
        let again = failing(column, Some(&ids)).await;
        let confirmed: BTreeMap<String, Requirement> = first
            .into_iter()
            .filter(|(id, _)| again.contains_key(id))
            .collect();
        let of = |level| {
            confirmed
                .iter()
                .filter(|(_, l)| **l == level)
                .map(|(id, _)| id.clone())
                .collect::<Vec<_>>()
        };
        let (must, should) = (of(Requirement::Must), of(Requirement::Should));
        println!(
            "{}: {} must failures {must:?}, {} should failures",
            column.name,
            must.len(),
            should.len()
        );
        if must != column.must_exceptions {
            problems.push(format!(
                "{}: must failures {must:?}, expected {:?}",
                column.name, column.must_exceptions
            ));
        }
        for id in &should {
            let why = &evidence[id];
            if !column.evidence_names.iter().any(|n| why.contains(n)) {
                problems.push(format!(
                    "{}: fails should case {id}, whose evidence does not name it: {why}",
                    column.name
                ));
            }
        }
        let entry = score.entry(column.name).or_default();
        entry.insert("must_failed", must);
        entry.insert("should_failed", should);
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    insta::assert_yaml_snapshot!("ironcore_runtime_scores", score);
}
