//! `reservation-bench`: not built yet (see the crate README).
fn main() {}
