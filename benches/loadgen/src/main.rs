//! Placeholder: replaced by the load generator.
fn main() {}
