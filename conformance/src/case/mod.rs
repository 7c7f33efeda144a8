//! The case model: a stable dotted id, a one-line rule, a service, a profile and an async body
//! that ends in [`Outcome::Passed`], [`Outcome::Skipped`] (with a reason) or a failure.

pub mod verdict;

use std::{fmt, sync::Arc};

use futures::future::BoxFuture;

pub use self::verdict::{
    Level, Outcome, Profile, Requirement, Service, Skip, gone_at_once, pass, skip,
    skip_gone_at_once,
};
use crate::ctx::Ctx;

/// A case body: gets its own [`Ctx`], returns `Ok(outcome)` or an error (a failure).
pub type CaseFn = Arc<dyn Fn(Ctx) -> BoxFuture<'static, anyhow::Result<Outcome>> + Send + Sync>;

/// One conformance case.
#[derive(Clone)]
pub struct Case {
    /// Stable dotted id, e.g. `machine.delete.unknown_id_not_found`; never renumbered.
    pub id: String,
    /// The service it needs.
    pub service: Service,
    /// The profile it belongs to.
    pub profile: Profile,
    /// The level it belongs to.
    pub level: Level,
    /// Runs alone, after the other cases of its level (it disturbs shared state, e.g. cuts
    /// the poollet off its runtime).
    pub exclusive: bool,
    /// One line: the rule it checks.
    pub description: String,
    /// Must or should ([`Case::must`], [`Case::should`]; default must).
    pub requirement: Requirement,
    /// Why the level holds: a reference section or what breaks (one line). Cases that declare
    /// none get their group's evidence from [`crate::requirement`].
    pub evidence: String,
    /// The body.
    pub run: CaseFn,
}

impl fmt::Debug for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Case")
            .field("id", &self.id)
            .field("service", &self.service)
            .field("profile", &self.profile)
            .field("level", &self.level)
            .field("requirement", &self.requirement)
            .finish_non_exhaustive()
    }
}

impl Case {
    /// An RPC-level case from an async function.
    pub fn new<F, Fut>(
        id: impl Into<String>,
        service: Service,
        profile: Profile,
        description: impl Into<String>,
        f: F,
    ) -> Self
    where
        F: Fn(Ctx) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<Outcome>> + Send + 'static,
    {
        Case {
            id: id.into(),
            service,
            profile,
            level: Level::Rpc,
            exclusive: false,
            description: description.into(),
            requirement: Requirement::Must,
            evidence: String::new(),
            run: Arc::new(move |ctx| Box::pin(f(ctx))),
        }
    }

    /// The same case on the lifecycle level.
    pub fn lifecycle(mut self) -> Self {
        self.level = Level::Lifecycle;
        self
    }

    /// The same case as a `must`, with its evidence (reference section or what breaks).
    pub fn must(mut self, evidence: impl Into<String>) -> Self {
        self.requirement = Requirement::Must;
        self.evidence = evidence.into();
        self
    }

    /// The same case as a `should`, with its evidence (which IronCore runtime deviates, and
    /// why the poollets tolerate it).
    pub fn should(mut self, evidence: impl Into<String>) -> Self {
        self.requirement = Requirement::Should;
        self.evidence = evidence.into();
        self
    }

    /// The same case, run alone after the other cases of its level.
    pub fn exclusive(mut self) -> Self {
        self.exclusive = true;
        self
    }
}
