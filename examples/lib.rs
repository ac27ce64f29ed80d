//! What the example programs share; the programs themselves are
//! `localnet/`, `node/` and `inspect.rs`.

/// Logs to stderr, filtered by `RUST_LOG` (else `default`), without colour
/// codes when stderr is a file or a pipe.
pub fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
