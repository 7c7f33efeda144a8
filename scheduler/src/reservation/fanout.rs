//! The reservation mode's fanout bookkeeping (see [`super::ReservationConfig::fanout`]): which
//! pools a Machine's own Reservation asks next, and how many Reservations ask each pool now.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use super::{State, pool_supports_reservations};
use crate::core::Request;

impl State {
    /// Records that Machine `key`'s Reservation asks `pools` (replacing what it asked).
    pub(super) fn ask(&mut self, key: &str, pools: Vec<String>) {
        self.unask(key);
        for p in &pools {
            *self.asking.entry(p.clone()).or_default() += 1;
        }
        if let Some(w) = self.waiting.get_mut(key) {
            w.asked = pools;
        }
    }

    pub(super) fn unask(&mut self, key: &str) {
        let Some(w) = self.waiting.get_mut(key) else {
            return;
        };
        for p in std::mem::take(&mut w.asked) {
            if let Some(n) = self.asking.get_mut(&p) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.asking.remove(&p);
                }
            }
        }
    }

    /// Up to `n` pools to ask for `req`, best first: serving reservations, passing the
    /// Machine's filters, not in `skip`; not rejecting lately, then most free less asked,
    /// then by name.
    pub(super) fn pools_to_ask(
        &self,
        req: &Request,
        n: usize,
        skip: &[String],
        now: Instant,
    ) -> Vec<String> {
        let candidates = self
            .pools
            .iter()
            .filter(|(name, pool)| pool_supports_reservations(pool) && !skip.contains(name))
            .filter_map(|(name, _)| Some((name.as_str(), self.cache.eligible(name, req)?)));
        let mut order = ask_order(candidates, &self.asking, &self.rejected_at, now);
        order.truncate(n);
        order
    }
}

/// How long a pool's rejection puts it after the others when choosing pools to ask.
pub const REJECTED_LATELY: Duration = Duration::from_secs(1);

/// The order in which to ask `candidates` (pool name, free capacity) to hold a reservation,
/// as the reservation-mode scheduler and a machine broker ask theirs: pools that rejected one
/// within [`REJECTED_LATELY`] of `now` last; then the most free less the reservations asking
/// the pool now (`asking`); then by name.
pub fn ask_order<'a>(
    candidates: impl Iterator<Item = (&'a str, i128)>,
    asking: &HashMap<String, usize>,
    rejected_at: &HashMap<String, Instant>,
    now: Instant,
) -> Vec<String> {
    ranked_asks(candidates, asking, rejected_at, now).0
}

/// [`ask_order`], and how many of its first pools look able to accept: free capacity left
/// after the asks and not rejecting lately. The others (full by their last status, or
/// rejecting) most likely reject; one asking pools in turns asks those all in one last turn
/// instead of one by one.
pub fn ranked_asks<'a>(
    candidates: impl Iterator<Item = (&'a str, i128)>,
    asking: &HashMap<String, usize>,
    rejected_at: &HashMap<String, Instant>,
    now: Instant,
) -> (Vec<String>, usize) {
    let mut ranked: Vec<(bool, i128, &str)> = candidates
        .map(|(name, free)| {
            let asked = asking.get(name).copied().unwrap_or(0);
            let rejecting = rejected_at
                .get(name)
                .is_some_and(|at| now.saturating_duration_since(*at) < REJECTED_LATELY);
            (
                rejecting,
                free - i128::try_from(asked).unwrap_or(i128::MAX),
                name,
            )
        })
        .collect();
    ranked.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)).then(a.2.cmp(b.2)));
    let promising = ranked
        .iter()
        .take_while(|(rejecting, free, _)| !rejecting && *free > 0)
        .count();
    let order = ranked
        .into_iter()
        .map(|(_, _, name)| name.to_owned())
        .collect();
    (order, promising)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_pools_come_first_and_count_as_promising() {
        let now = Instant::now();
        let asking = HashMap::from([("busy".to_owned(), 2)]);
        let rejected_at = HashMap::from([("rejecting".to_owned(), now)]);
        let candidates = [
            ("full", 0),
            ("busy", 2),
            ("rejecting", 9),
            ("free", 3),
            ("freest", 5),
        ];
        let (order, promising) = ranked_asks(candidates.into_iter(), &asking, &rejected_at, now);
        // Most free first; "busy" has 2 free less 2 being asked; the rejecting one last
        // however free it looks.
        assert_eq!(order, ["freest", "free", "busy", "full", "rejecting"]);
        assert_eq!(promising, 2, "only freest and free look able to accept");
        assert_eq!(
            ask_order(candidates.into_iter(), &asking, &rejected_at, now),
            order
        );
        // A rejection more than REJECTED_LATELY ago no longer counts.
        let later = now + REJECTED_LATELY;
        let (order, promising) = ranked_asks(candidates.into_iter(), &asking, &rejected_at, later);
        assert_eq!(order, ["rejecting", "freest", "free", "busy", "full"]);
        assert_eq!(promising, 3);
    }
}
