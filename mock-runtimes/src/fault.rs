//! Fault injection: per-RPC rules (when) with effects (what), off by default.
//!
//! A rule matches one [`Method`] (or every method) and fires according to its [`Trigger`]; the
//! first firing rule's [`Effect`] is applied before the call reaches the runtime logic. Every
//! injected fault is recorded in the call log (`Call::fault`). Counting for `Nth`/`FirstN`
//! starts when the rule is installed and counts calls of the rule's method(s).

use std::{fmt, time::Duration};

use rand::{Rng, SeedableRng, rngs::StdRng};
use tonic::Code;

use crate::Method;

/// When a fault rule fires.
#[derive(Debug, Clone, PartialEq)]
pub enum Trigger {
    /// On every matching call.
    Always,
    /// Only on the n-th matching call (1-based).
    Nth(u64),
    /// On the first n matching calls.
    FirstN(u64),
    /// Each matching call with probability `p` (0..=1), drawn from an RNG seeded with `seed`,
    /// so a run is reproducible.
    Probability {
        /// Probability in 0..=1 (clamped).
        p: f64,
        /// Seed of the rule's RNG.
        seed: u64,
    },
}

/// What a firing fault rule does to the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Wait, then serve the call normally.
    Delay(Duration),
    /// Fail with this status code and message, without touching any state.
    Error {
        /// The gRPC code.
        code: Code,
        /// The status message.
        message: String,
    },
    /// Never answer; the call ends when the client cancels it (or the mock shuts down).
    Hang,
    /// Close the transport connection the call came in on (in-process, unix and TCP alike).
    DropConnection,
}

impl Effect {
    /// An [`Effect::Error`].
    pub fn error(code: Code, message: impl Into<String>) -> Self {
        Effect::Error {
            code,
            message: message.into(),
        }
    }

    /// An [`Effect::Delay`].
    pub fn delay(d: Duration) -> Self {
        Effect::Delay(d)
    }
}

impl fmt::Display for Effect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Effect::Delay(d) => write!(f, "delay {d:?}"),
            Effect::Error { code, message } => write!(f, "error {code:?}: {message}"),
            Effect::Hang => f.write_str("hang"),
            Effect::DropConnection => f.write_str("drop connection"),
        }
    }
}

/// A fault rule: which method(s), when, and what.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultRule {
    /// The method it applies to; `None` = every method.
    pub method: Option<Method>,
    /// When it fires.
    pub trigger: Trigger,
    /// What it does.
    pub effect: Effect,
}

impl FaultRule {
    /// A rule for one method.
    pub fn new(method: Method, trigger: Trigger, effect: Effect) -> Self {
        FaultRule {
            method: Some(method),
            trigger,
            effect,
        }
    }

    /// A rule for every method.
    pub fn any_method(trigger: Trigger, effect: Effect) -> Self {
        FaultRule {
            method: None,
            trigger,
            effect,
        }
    }
}

/// Identifies an installed rule, for [`crate::MockHandle::remove_fault`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FaultId(pub(crate) u64);

struct Installed {
    id: FaultId,
    rule: FaultRule,
    seen: u64,
    rng: Option<StdRng>,
}

/// The installed rules of one mock.
#[derive(Default)]
pub(crate) struct FaultPlan {
    rules: Vec<Installed>,
    next_id: u64,
}

impl FaultPlan {
    pub(crate) fn add(&mut self, rule: FaultRule) -> FaultId {
        let id = FaultId(self.next_id);
        self.next_id += 1;
        let rng = match rule.trigger {
            Trigger::Probability { seed, .. } => Some(StdRng::seed_from_u64(seed)),
            _ => None,
        };
        self.rules.push(Installed {
            id,
            rule,
            seen: 0,
            rng,
        });
        id
    }

    pub(crate) fn remove(&mut self, id: FaultId) -> bool {
        let before = self.rules.len();
        self.rules.retain(|r| r.id != id);
        before != self.rules.len()
    }

    pub(crate) fn clear(&mut self) {
        self.rules.clear();
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Counts the call against every matching rule and returns the effect of the first that fires.
    pub(crate) fn decide(&mut self, method: Method) -> Option<Effect> {
        let mut fired = None;
        for installed in &mut self.rules {
            if installed.rule.method.is_some_and(|m| m != method) {
                continue;
            }
            installed.seen += 1;
            let fires = match installed.rule.trigger {
                Trigger::Always => true,
                Trigger::Nth(n) => installed.seen == n,
                Trigger::FirstN(n) => installed.seen <= n,
                Trigger::Probability { p, .. } => {
                    let draw: f64 = installed.rng.as_mut().map_or(1.0, |rng| rng.random());
                    draw < p.clamp(0.0, 1.0)
                }
            };
            if fires && fired.is_none() {
                fired = Some(installed.rule.effect.clone());
            }
        }
        fired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fires(plan: &mut FaultPlan, method: Method, n: usize) -> Vec<bool> {
        (0..n).map(|_| plan.decide(method).is_some()).collect()
    }

    #[test]
    fn triggers() {
        let e = Effect::Hang;
        let mut plan = FaultPlan::default();
        plan.add(FaultRule::new(
            Method::CreateMachine,
            Trigger::Nth(2),
            e.clone(),
        ));
        assert_eq!(
            fires(&mut plan, Method::CreateMachine, 4),
            [false, true, false, false]
        );
        assert_eq!(fires(&mut plan, Method::DeleteMachine, 2), [false, false]);

        let mut plan = FaultPlan::default();
        plan.add(FaultRule::any_method(Trigger::FirstN(2), e.clone()));
        assert_eq!(
            fires(&mut plan, Method::ListVolumes, 3),
            [true, true, false]
        );

        let mut a = FaultPlan::default();
        a.add(FaultRule::new(
            Method::Exec,
            Trigger::Probability { p: 0.5, seed: 42 },
            e.clone(),
        ));
        let mut b = FaultPlan::default();
        b.add(FaultRule::new(
            Method::Exec,
            Trigger::Probability { p: 0.5, seed: 42 },
            e,
        ));
        let (xa, xb) = (
            fires(&mut a, Method::Exec, 200),
            fires(&mut b, Method::Exec, 200),
        );
        assert_eq!(xa, xb, "same seed, same draws");
        let hits = xa.iter().filter(|x| **x).count();
        assert!((60..140).contains(&hits), "{hits}");
    }
}
