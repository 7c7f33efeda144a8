//! Time and ids: a wall clock that follows tokio's (pausable) clock, and IronCore-style ids.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::{RngCore, SeedableRng, rngs::StdRng};
use tokio::time::Instant;

/// Wall-clock time derived from tokio's clock, so `tokio::time::pause()` and `advance()` move
/// timestamps (`created_at`, `event_time`) together with the state machine's delays.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    base_wall: SystemTime,
    base_instant: Instant,
}

impl Clock {
    pub(crate) fn new() -> Self {
        Clock {
            base_wall: SystemTime::now(),
            base_instant: Instant::now(),
        }
    }

    pub(crate) fn wall(&self) -> SystemTime {
        self.base_wall + Instant::now().saturating_duration_since(self.base_instant)
    }

    fn since_epoch(&self) -> Duration {
        self.wall().duration_since(UNIX_EPOCH).unwrap_or_default()
    }

    /// Unix nanoseconds (metadata timestamps).
    pub(crate) fn unix_nanos(&self) -> i64 {
        i64::try_from(self.since_epoch().as_nanos()).unwrap_or(i64::MAX)
    }

    /// Unix seconds (event times).
    pub(crate) fn unix_secs(&self) -> i64 {
        i64::try_from(self.since_epoch().as_secs()).unwrap_or(i64::MAX)
    }
}

/// Generates ids as IronCore's idgen does: 63 lowercase hex chars whose first 12 are not all digits.
#[derive(Debug)]
pub(crate) struct IdGen {
    rng: StdRng,
}

impl IdGen {
    pub(crate) fn new(seed: Option<u64>) -> Self {
        IdGen {
            rng: match seed {
                Some(seed) => StdRng::seed_from_u64(seed),
                None => StdRng::from_os_rng(),
            },
        }
    }

    pub(crate) fn next_id(&mut self) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut id = String::with_capacity(63);
        // Sixteen hex digits per 64-bit draw: 4 draws instead of 63.
        let mut word = 0u64;
        for i in 0..63 {
            if i % 16 == 0 {
                word = self.rng.next_u64();
            }
            id.push(char::from(HEX[(word & 0xf) as usize]));
            word >>= 4;
        }
        if id.as_bytes()[..12].iter().all(u8::is_ascii_digit) {
            // Same rule as idgen: the prefix must not look like a number. 'a' keeps it hex.
            id.replace_range(0..1, "a");
        }
        id
    }
}

/// Whether `id` has the IronCore idgen shape.
pub fn is_idgen_id(id: &str) -> bool {
    id.len() == 63
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && !id.as_bytes()[..12].iter().all(u8::is_ascii_digit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_idgen_shape_and_are_unique() {
        let mut ids = IdGen::new(Some(7));
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            let id = ids.next_id();
            assert!(is_idgen_id(&id), "{id}");
            assert!(seen.insert(id));
        }
        assert!(!is_idgen_id(&"1".repeat(63)));
        assert!(!is_idgen_id("abc"));
    }
}
