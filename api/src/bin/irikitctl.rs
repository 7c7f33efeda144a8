//! irikitctl placeholder
fn main() {}
