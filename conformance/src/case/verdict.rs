//! What classifies a case and its result: the service it needs, its profile, level and
//! requirement, and the outcome (passed, skipped with a reason, failed), with the helpers a case
//! body ends in. Below the case model ([`super::Case`]) and the case context, which both use it.

use std::fmt;

use serde::Serialize;

/// The IRI service a case talks to; the case is skipped when the runtime has no endpoint for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Service {
    /// `machine.v1alpha1.MachineRuntime`.
    Machine,
    /// `volume.v1alpha1.VolumeRuntime`.
    Volume,
    /// `bucket.v1alpha1.BucketRuntime`.
    Bucket,
}

impl Service {
    /// Every service, in report order.
    pub const ALL: [Service; 3] = [Service::Machine, Service::Volume, Service::Bucket];

    /// Lowercase name (`machine`, `volume`, `bucket`).
    pub fn name(self) -> &'static str {
        match self {
            Service::Machine => "machine",
            Service::Volume => "volume",
            Service::Bucket => "bucket",
        }
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which rule set a case belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// The IRI runtime contract (reference §1, §2, §7.4).
    Core,
    /// What IronCore's Go poollets need beyond the wire (reference §1.8, §3.4, §7.4).
    GoPoollet,
}

impl Profile {
    /// Kebab-case name.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Core => "core",
            Profile::GoPoollet => "go-poollet",
        }
    }
}

/// Which level of the suite a case belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// One runtime, RPC by RPC (the case talks to the runtime directly).
    Rpc,
    /// irikit's store, schedulers and poollets drive the runtime; the case applies objects to
    /// the store and checks what the poollet propagates (issue 6).
    Lifecycle,
}

impl Level {
    /// Lowercase name (`rpc`, `lifecycle`).
    pub fn name(self) -> &'static str {
        match self {
            Level::Rpc => "rpc",
            Level::Lifecycle => "lifecycle",
        }
    }
}

/// How binding a case is (reference §2.1a, last sentence).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Requirement {
    /// A violation breaks IronCore's Go poollets (reference §2.2, §7.4) or contradicts
    /// behaviour every IronCore runtime shares: a failure fails the run.
    Must,
    /// irikit's stricter recommendation where IronCore's own runtimes deviate in ways the
    /// poollets tolerate: a failure is a warning unless the run is `--strict`.
    Should,
}

impl Requirement {
    /// Lowercase name (`must`, `should`).
    pub fn name(self) -> &'static str {
        match self {
            Requirement::Must => "must",
            Requirement::Should => "should",
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The result of one case (youki's contest model).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every check held.
    Passed,
    /// The case could not run here; the reason is always printed.
    Skipped(String),
    /// A check failed, the case errored or timed out; the full error chain.
    Failed(String),
}

impl Outcome {
    /// `passed`, `skipped` or `failed`.
    pub fn status(&self) -> &'static str {
        match self {
            Outcome::Passed => "passed",
            Outcome::Skipped(_) => "skipped",
            Outcome::Failed(_) => "failed",
        }
    }

    /// Whether this is the skip of [`skip_gone_at_once`]: a deletion-phase case found the
    /// object already gone (legal, and a race with the runtime's teardown).
    pub fn is_gone_at_once(&self) -> bool {
        matches!(self, Outcome::Skipped(why) if why.contains(GONE_AT_ONCE))
    }

    /// The skip reason or failure message.
    pub fn message(&self) -> Option<&str> {
        match self {
            Outcome::Passed => None,
            Outcome::Skipped(m) | Outcome::Failed(m) => Some(m),
        }
    }
}

/// Thrown (as an `anyhow::Error`) by a case helper to end the case as skipped with a reason.
#[derive(Debug, Clone, thiserror::Error)]
#[error("skipped: {0}")]
pub struct Skip(pub String);

/// Shorthand for `Ok(Outcome::Passed)`.
#[allow(clippy::unnecessary_wraps)]
pub fn pass() -> anyhow::Result<Outcome> {
    Ok(Outcome::Passed)
}

/// Shorthand for `Ok(Outcome::Skipped(reason))`.
#[allow(clippy::unnecessary_wraps)]
pub fn skip(reason: impl Into<String>) -> anyhow::Result<Outcome> {
    Ok(Outcome::Skipped(reason.into()))
}

const GONE_AT_ONCE: &str = "was gone at once";

/// The skip of a deletion-phase case whose `object` (`machine`, `volume`, ...) the runtime had
/// already forgotten when it was listed again, so `what` is not observable
/// ([`Outcome::is_gone_at_once`]).
pub fn skip_gone_at_once(object: &str, what: &str) -> anyhow::Result<Outcome> {
    skip(gone_at_once(object, what).0)
}

/// The [`Skip`] of [`skip_gone_at_once`], for a helper to return as its error (the runner
/// reports it as the same skip).
pub fn gone_at_once(object: &str, what: &str) -> Skip {
    Skip(format!(
        "the {object} {GONE_AT_ONCE}; {what} is not observable"
    ))
}
