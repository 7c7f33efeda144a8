//! The iri-conformance suite against the file-volume-runtime binary (a child process on a unix
//! socket in a temp dir): every volume case of the `core` and `go-poollet` profiles, once on
//! the raw class and, where `qemu-img` runs, once on the qcow2 class.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../shared/conformance_check.rs"]
mod check;
mod common;

use check::Suite;
use common::{Runtime, has_qemu_img, required};
use iri_conformance::{Service, runner::ProfileFilter};
use iri_spec::endpoint::Endpoint;

/// A running runtime with an image file (for the image data-source cases) in its image dir.
async fn runtime() -> (Runtime, String) {
    let rt = Runtime::start().await;
    let image = rt.dir.path().join("images").join("conformance.img");
    std::fs::write(&image, vec![0x5a; 64 << 10]).unwrap();
    (rt, image.display().to_string())
}

async fn check(class: &str, profile: ProfileFilter) {
    let (rt, image) = runtime().await;
    let targets = iri_conformance::Targets::connect(None, Some(&Endpoint::unix(&rt.socket)), None);
    let mut suite = Suite::new(Service::Volume, profile);
    suite.not_applicable.push((
        "^volume\\.delete\\.deleted_at_while_listed$",
        "DeleteVolume unlinks the file at once: there is no deletion phase to observe",
    ));
    suite.params.volume_class = Some(class.to_owned());
    suite.params.image = image;
    suite.check(&targets).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_volumes_pass_core() {
    check("std", ProfileFilter::Core).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_volumes_pass_go_poollet() {
    check("std", ProfileFilter::GoPoollet).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qcow2_volumes_pass_core_and_go_poollet() {
    if !has_qemu_img() {
        assert!(
            !required("qemu-img") && !required("qemu"),
            "qemu-img is required (IRIKIT_REQUIRE) but does not run"
        );
        let _ = std::io::Write::write_fmt(
            &mut std::io::stderr(),
            format_args!("skip: qemu-img does not run (install qemu-utils)\n"),
        );
        return;
    }
    check("q", ProfileFilter::Core).await;
    check("q", ProfileFilter::GoPoollet).await;
}
