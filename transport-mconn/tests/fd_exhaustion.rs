//! With no file descriptor left, `accept()` fails with EMFILE for as long
//! as a connection waits in the backlog. The accept loop must back off
//! rather than spin, and serve again once descriptors are free. Its own
//! test binary: it lowers this process's descriptor limit.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::Read;

use std::time::Duration;

use p2p_router::NodeKey;

/// User plus system CPU time of this process, from /proc (Linux), read
/// through a handle opened beforehand (no descriptor is left to open one).
fn cpu_time(stat_file: &std::fs::File) -> Duration {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; 4096];
    let n = stat_file.read_at(&mut buf, 0).unwrap();
    let stat = String::from_utf8_lossy(&buf[..n]).into_owned();
    // Fields after the command name (which may hold spaces).
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // The kernel reports in USER_HZ, 100 on Linux.
    Duration::from_millis(ticks * 10)
}

fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd").unwrap().count() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_accept_loop_backs_off_on_emfile_and_recovers() {
    if !std::path::Path::new("/proc/self/stat").exists() {
        eprintln!("skipped: needs Linux /proc");
        return;
    }
    let key = NodeKey::from_seed([7; 32]);
    let transport = common::fast_listener(&key).await;
    let address = transport.local_addrs()[0];

    let stat_file = std::fs::File::open("/proc/self/stat").unwrap();
    let (soft, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap();
    // Room for the client socket only, then fill every other slot.
    let limit = open_fds() + 16;
    rlimit::setrlimit(rlimit::Resource::NOFILE, limit, hard).unwrap();
    let mut filler = Vec::new();
    while let Ok(f) = std::fs::File::open("/dev/null") {
        filler.push(f);
    }
    // The last descriptor: the server cannot take this connection.
    filler.pop();
    let mut client = std::net::TcpStream::connect(address).unwrap();
    assert!(
        std::fs::File::open("/dev/null").is_err(),
        "no descriptor left"
    );

    // A spinning loop burns a core while EMFILE lasts; a backing-off one
    // is nearly idle. The wait is the measurement window itself (CPU time
    // over real time), not a wait for an event, so it cannot be paused.
    let before = cpu_time(&stat_file);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let spent = cpu_time(&stat_file) - before;
    assert!(
        spent < Duration::from_millis(400),
        "accept loop spun: {spent:?} CPU in 1 s"
    );

    // Descriptors free again: the waiting connection is accepted and the
    // server starts its SecretConnection handshake (its ephemeral key).
    drop(filler);
    rlimit::setrlimit(rlimit::Resource::NOFILE, soft, hard).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut first = [0u8; 8];
    tokio::task::spawn_blocking(move || client.read_exact(&mut first))
        .await
        .unwrap()
        .unwrap();
}
