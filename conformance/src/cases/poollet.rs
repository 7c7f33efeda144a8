//! The go-poollet profile.

use crate::case::Case;

pub(crate) fn cases() -> Vec<Case> {
    Vec::new()
}
