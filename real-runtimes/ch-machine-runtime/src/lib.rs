//! Cloud Hypervisor machine runtime for the IronCore Runtime Interface (IRI).
//!
//! One `cloud-hypervisor` process per machine, driven over its REST API by a small private
//! client ([`vmm`] holds the [`vmm::Vmm`] trait that keeps the VMM replaceable), state in one
//! JSON file per machine, and [`sim`], the CH API simulator shipped as the `ch-sim` binary.

pub mod sim;
