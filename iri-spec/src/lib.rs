//! IronCore Runtime Interface (IRI) types and gRPC stubs, wire-identical to IronCore v0.5.0.
//!
//! The `.proto` files under `proto/` are irikit's own, written from the field tables of the
//! IRI reference; the Rust code under `src/generated/` is produced from them by `protox` and
//! `tonic-prost-build` (see `tests/codegen.rs`) and checked in, so no `protoc` is needed.
//!
//! Modules mirror the proto packages: `iri_spec::machine::v1alpha1`, `iri_spec::volume::v1alpha1`,
//! `iri_spec::bucket::v1alpha1`, `iri_spec::meta::v1alpha1` and `iri_spec::event::v1alpha1`.
//! `iri_spec::irikit::reservation::v1alpha1` is irikit's own extension (reservation-based
//! scheduling, IronCore IEP-11, which published no messages); see [`reservation`] for its client
//! helper.
//!
//! Besides the generated code this crate holds the small helpers every IRI user needs:
//! [`endpoint`] (parsing and discovery as IronCore's Go code does it, plus `connect`),
//! [`keys`] (the poollet label and annotation keys), [`kind`] (the IRI object kinds as types:
//! [`kind::IriKind`] and [`kind::Attachment`]) and [`selector`] (label-selector matching).

#[rustfmt::skip]
#[allow(
    clippy::all,
    clippy::pedantic,
    missing_docs,
    unreachable_pub,
    rustdoc::all
)]
mod generated;

pub use generated::*;

pub mod endpoint;
pub mod keys;
pub mod kind;
pub mod reservation;
pub mod selector;
pub mod serve;

/// The encoded `FileDescriptorSet` of every IronCore IRI package, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!("generated/descriptor.bin");

/// The encoded `FileDescriptorSet` of irikit's own extension packages
/// (`irikit.reservation.v1alpha1`), which import `meta.v1alpha1` from [`FILE_DESCRIPTOR_SET`].
/// Kept apart so the IronCore set stays exactly IronCore's.
pub const IRIKIT_FILE_DESCRIPTOR_SET: &[u8] = include_bytes!("generated/irikit_descriptor.bin");
