//! An example handler service (being written).

fn main() {}
