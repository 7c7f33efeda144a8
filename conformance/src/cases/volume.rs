//! Cases for `volume.v1alpha1.VolumeRuntime`.

use crate::case::Case;

pub(crate) fn cases() -> Vec<Case> {
    Vec::new()
}
