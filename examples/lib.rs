//! The examples package has no library: see `localnet/`, `node/` and `inspect.rs`.
