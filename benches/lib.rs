//! The benchmark package has no library: see `transports/` and `micro.rs`.
