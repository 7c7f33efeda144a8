//! iri-conformance: a conformance suite for IRI runtimes (IronCore's CRI for machines and volumes), in the spirit of critest and csi-sanity, usable as a library and as the `iri-conformance` binary.
//!
//! * [`cases::all`] — every case, each with a stable dotted id (`machine.delete.unknown_id_not_found`),
//!   a one-line rule, a service, a profile (`core`, `go-poollet`) and a requirement level
//!   (`must`, `should`) with its evidence ([`requirement`]).
//! * [`runner::run`] — runs selected cases in parallel against [`runner::Targets`] (endpoints or the
//!   embedded iri-mock), each under a timeout with per-RPC deadlines; every object carries the
//!   run-id label [`ctx::RUN_ID_LABEL`] and is deleted at the end, even on failure or cancellation;
//!   leftovers of earlier runs are reported and deleted at start.
//! * [`lifecycle`] — the lifecycle level: irikit's control plane (`irikit_controlplane::ControlPlane`:
//!   store, schedulers, machinepoollet) runs in-process against the runtime, and `lifecycle.*`
//!   cases check what they propagate.
//! * [`report`] — human summary, JUnit XML, JSON. [`bench`] — per-RPC latency percentiles.
//!
//! Cases talk to a runtime only through the generated gRPC clients; the embedded mock is reached
//! over an in-process duplex channel like any other endpoint.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use iri_conformance::{cases, runner};
//! let targets = runner::Targets::embedded().await?;
//! let config = runner::RunConfig::default();
//! let selected = config.selection.apply(cases::all());
//! let report = runner::run(&config, &targets, selected, Default::default(), &|_| {}).await;
//! assert!(report.success(false));
//! # Ok(()) }
//! ```

pub mod bench;
pub mod breaker;
pub mod case;
pub mod cases;
pub mod ctx;
pub mod lifecycle;
pub mod report;
pub mod requirement;
pub mod runner;

pub use case::{Case, Level, Outcome, Profile, Requirement, Service};
pub use ctx::{Ctx, Params};
pub use runner::{RunConfig, RunReport, Targets};
