//! irikit's control-plane object model: IronCore's `compute` and `storage` objects as serde
//! types in their YAML shape, Kubernetes quantities, IronCore's validation rules, and the
//! [`store::Store`] trait with an in-memory and an etcd backend.

pub mod compute;
pub mod coordination;
pub mod core;
pub mod meta;
pub mod object;
pub mod quantity;
pub mod reservation;
pub mod storage;
pub mod store;
pub mod validation;

pub use object::{Kind, Object, Resource, parse_yaml_documents};
pub use quantity::{Quantity, ResourceList};
pub use store::{ListOptions, Store, StoreExt};
