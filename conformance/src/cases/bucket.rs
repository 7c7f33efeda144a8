//! Cases for `bucket.v1alpha1.BucketRuntime`.

use crate::case::Case;

pub(crate) fn cases() -> Vec<Case> {
    Vec::new()
}
