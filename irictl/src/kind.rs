//! The kinds of things irictl gets, creates, deletes, attaches and detaches, with IronCore's
//! aliases (`mach`, `vols`, `volsnap`, `nic`, ...).

use std::fmt;

/// What a command acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `machine.v1alpha1.Machine`.
    Machine,
    /// `volume.v1alpha1.Volume` (or, for attach/detach/update, a machine's `Volume`).
    Volume,
    /// `volume.v1alpha1.VolumeSnapshot`.
    VolumeSnapshot,
    /// `bucket.v1alpha1.Bucket`.
    Bucket,
    /// `bucket.v1alpha1.BucketClass`.
    BucketClass,
    /// A machine's `NetworkInterface`.
    NetworkInterface,
    /// The runtime's `Status` (classes and capacity).
    Status,
    /// `ListEvents`.
    Events,
    /// `Version`.
    Version,
    /// irikit's `irikit.reservation.v1alpha1.Reservation` (on the machine endpoint).
    Reservation,
}

impl Kind {
    const ALIASES: &'static [(Kind, &'static [&'static str])] = &[
        (Kind::Machine, &["machine", "machines", "mach", "machs"]),
        (Kind::Volume, &["volume", "volumes", "vol", "vols"]),
        (
            Kind::VolumeSnapshot,
            &["volumesnapshot", "volumesnapshots", "volsnap", "volsnaps"],
        ),
        (Kind::Bucket, &["bucket", "buckets"]),
        (
            Kind::BucketClass,
            &["bucketclass", "bucketclasses", "bc", "bcs"],
        ),
        (
            Kind::NetworkInterface,
            &["networkinterface", "networkinterfaces", "nic", "nics"],
        ),
        (Kind::Status, &["status"]),
        (Kind::Events, &["events", "event"]),
        (Kind::Version, &["version"]),
        (
            Kind::Reservation,
            &["reservation", "reservations", "rsv", "rsvs"],
        ),
    ];

    /// Parse a kind or alias (case-insensitive, so `Machine` and `VolumeSnapshot` work too)
    /// and check that the command `verb` supports it.
    pub(crate) fn parse_for(text: &str, verb: &str, allowed: &[Kind]) -> anyhow::Result<Kind> {
        let lower = text.to_ascii_lowercase();
        let found = Kind::ALIASES
            .iter()
            .find(|(_, names)| names.contains(&lower.as_str()))
            .map(|(kind, _)| *kind);
        match found {
            Some(kind) if allowed.contains(&kind) => Ok(kind),
            _ => {
                let names = allowed
                    .iter()
                    .map(|k| k.to_string())
                    .collect::<Vec<_>>()
                    .join(", ");
                anyhow::bail!("{verb}: unknown kind {text:?}: want one of {names}")
            }
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Machine => "machine",
            Kind::Volume => "volume",
            Kind::VolumeSnapshot => "volumesnapshot",
            Kind::Bucket => "bucket",
            Kind::BucketClass => "bucketclass",
            Kind::NetworkInterface => "networkinterface",
            Kind::Status => "status",
            Kind::Events => "events",
            Kind::Version => "version",
            Kind::Reservation => "reservation",
        })
    }
}

/// Kinds `get` supports.
pub(crate) const GET_KINDS: &[Kind] = &[
    Kind::Machine,
    Kind::Volume,
    Kind::VolumeSnapshot,
    Kind::Bucket,
    Kind::BucketClass,
    Kind::Status,
    Kind::Events,
    Kind::Version,
    Kind::Reservation,
];

/// Kinds `create` and `delete` support.
pub(crate) const OBJECT_KINDS: &[Kind] = &[
    Kind::Machine,
    Kind::Volume,
    Kind::VolumeSnapshot,
    Kind::Bucket,
    Kind::Reservation,
];

/// Kinds `attach` and `detach` support.
pub(crate) const ATTACH_KINDS: &[Kind] = &[Kind::Volume, Kind::NetworkInterface];

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn aliases() {
        for (text, want) in [
            ("machs", Kind::Machine),
            ("Machine", Kind::Machine),
            ("vol", Kind::Volume),
            ("volsnaps", Kind::VolumeSnapshot),
            ("VolumeSnapshot", Kind::VolumeSnapshot),
            ("nic", Kind::NetworkInterface),
            ("event", Kind::Events),
            ("rsv", Kind::Reservation),
            ("Reservation", Kind::Reservation),
        ] {
            let all = [GET_KINDS, ATTACH_KINDS].concat();
            assert_eq!(Kind::parse_for(text, "x", &all).unwrap(), want, "{text}");
        }
        let err = Kind::parse_for("nic", "delete", OBJECT_KINDS).unwrap_err();
        assert_eq!(
            err.to_string(),
            "delete: unknown kind \"nic\": want one of machine, volume, volumesnapshot, bucket, reservation"
        );
    }
}
