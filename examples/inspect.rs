//! Shows the core in action without a network: loads (or creates) a node key,
//! prints the node id, then parses and resolves each address given.
//!
//! ```text
//! cargo run --example inspect -- [--key node_key.json] [ADDRESS...]
//! ```

use std::process::ExitCode;

use p2p_router::{NodeKey, PeerAddress};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let key = match args.iter().position(|a| a == "--key") {
        Some(i) if i + 1 < args.len() => {
            let path = args.remove(i + 1);
            args.remove(i);
            match NodeKey::load_or_generate(&path) {
                Ok(key) => key,
                Err(e) => {
                    eprintln!("key file {path}: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        _ => NodeKey::generate(),
    };
    let id = key.node_id();
    println!("node id: {id}");
    if args.is_empty() {
        args.push(format!("quic://{id}@localhost:26656"));
    }
    let mut ok = true;
    for arg in args {
        match arg.parse::<PeerAddress>() {
            Err(e) => {
                println!("{arg}: invalid: {e}");
                ok = false;
            }
            Ok(address) => match address.resolve().await {
                Ok(endpoints) => {
                    let list: Vec<String> = endpoints.iter().map(ToString::to_string).collect();
                    println!("{address} -> {}", list.join(", "));
                }
                Err(e) => {
                    println!("{address}: does not resolve: {e}");
                    ok = false;
                }
            },
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
