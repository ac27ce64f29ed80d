//! The WAN link: two private network namespaces joined by TUN devices and
//! a forwarder in this process that holds each IP packet for a one-way
//! delay, behind a rate cap with a bounded drop-tail queue and optional
//! random loss. It works below UDP and TCP alike, so QUIC, MConnection and
//! raw quinn cross the same link (there is no `netem` on these machines).
//!
//! The parent creates the link and runs the scenarios in a child process
//! started in namespace A; the child binds the listening side of every
//! pair inside namespace B (a thread enters it, binds and leaves the
//! socket there), so every packet between the two crosses the forwarder.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use p2p_bench::link::LinkConfig;

use crate::namespaces::sh;
use p2p_bench::link::{Bottleneck, Fate};

/// Node A's address inside namespace A.
pub const A_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
/// Node B's address inside namespace B.
pub const B_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);

/// What the forwarder saw, both ways together.
#[derive(Debug, Default)]
pub struct LinkStats {
    pub packets: AtomicU64,
    pub dropped_queue: AtomicU64,
    pub dropped_loss: AtomicU64,
}

/// The two namespaces, their TUN devices and the forwarder threads; the
/// namespaces (and with them the devices) go when this is dropped.
pub struct WanLink {
    pub ns_a: String,
    pub ns_b: String,
    pub stats: Arc<LinkStats>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl WanLink {
    /// Creates the namespaces and devices and starts forwarding. Needs root
    /// and `ip`; says why when it cannot.
    pub fn create(config: LinkConfig) -> Result<WanLink, String> {
        let id = std::process::id() % 1_000_000;
        let (ns_a, ns_b) = (format!("p2pwan{id}a"), format!("p2pwan{id}b"));
        // Interface names hold 15 bytes.
        let (tun_a, tun_b) = (format!("p2pw{id}a"), format!("p2pw{id}b"));
        let stop = Arc::new(AtomicBool::new(false));
        let mut link = WanLink {
            ns_a: ns_a.clone(),
            ns_b: ns_b.clone(),
            stats: Arc::new(LinkStats::default()),
            stop: stop.clone(),
            threads: Vec::new(),
        };
        sh(&format!("ip netns add {ns_a}"))?;
        sh(&format!("ip netns add {ns_b}"))?;
        let dev_a = Arc::new(tun_device(&tun_a)?);
        let dev_b = Arc::new(tun_device(&tun_b)?);
        for (ns, dev, ours, theirs) in [(&ns_a, &tun_a, A_IP, B_IP), (&ns_b, &tun_b, B_IP, A_IP)] {
            sh(&format!("ip link set {dev} netns {ns}"))?;
            sh(&format!("ip -n {ns} link set lo up"))?;
            sh(&format!(
                "ip -n {ns} addr add {ours}/32 peer {theirs}/32 dev {dev}"
            ))?;
            sh(&format!(
                "ip -n {ns} link set {dev} mtu 1500 txqueuelen 10000 up"
            ))?;
        }
        for (from, to) in [(&dev_a, &dev_b), (&dev_b, &dev_a)] {
            let (r, w) = forward(from.clone(), to.clone(), config, link.stats.clone(), &stop);
            link.threads.push(r);
            link.threads.push(w);
        }
        Ok(link)
    }
}

impl Drop for WanLink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let _ = sh(&format!("ip netns del {} 2>/dev/null", self.ns_a));
        let _ = sh(&format!("ip netns del {} 2>/dev/null", self.ns_b));
    }
}

fn tun_device(name: &str) -> Result<tun::Device, String> {
    let mut c = tun::Configuration::default();
    c.tun_name(name);
    // Configured with `ip` once it is in its namespace.
    c.platform_config(|p| {
        p.ensure_root_privileges(false);
    });
    tun::create(&c).map_err(|e| format!("TUN device {name}: {e}"))
}

/// A packet and when it leaves the far end of the link.
type InFlight = (Instant, Vec<u8>);

/// One direction: a reader that stamps each packet with its arrival time
/// at the far end (queueing at the rate cap, then the delay) and a writer
/// that hands it over at that time. Arrival times only grow, so a FIFO
/// is the whole schedule.
fn forward(
    from: Arc<tun::Device>,
    to: Arc<tun::Device>,
    config: LinkConfig,
    stats: Arc<LinkStats>,
    stop: &Arc<AtomicBool>,
) -> (JoinHandle<()>, JoinHandle<()>) {
    // Bounded: at most rate × (delay + queue) is in flight; the bound
    // only ever blocks the reader if the writer stalls.
    let (tx, rx) = mpsc::sync_channel::<InFlight>(1 << 16);
    let stop = stop.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0u8; 65_536];
        let seed = u64::from(std::process::id());
        let mut link = Bottleneck::new(config, Instant::now(), seed);
        while !stop.load(Ordering::Relaxed) {
            let n = match from.recv_timeout(&mut buf, Duration::from_millis(100)) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
                Err(_) => return,
            };
            stats.packets.fetch_add(1, Ordering::Relaxed);
            let at = match link.admit(Instant::now(), n) {
                Fate::Arrives(at) => at,
                Fate::Lost => {
                    stats.dropped_loss.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                Fate::QueueFull => {
                    stats.dropped_queue.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            };
            if tx.send((at, buf[..n].to_vec())).is_err() {
                return;
            }
        }
    });
    let writer = std::thread::spawn(move || {
        while let Ok((at, packet)) = rx.recv() {
            let now = Instant::now();
            if at > now {
                std::thread::sleep(at - now);
            }
            // A full device queue drops, as a link would.
            let _ = to.send(&packet);
        }
    });
    (reader, writer)
}

/// Which end of a pair a socket belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The dialing side: this process's own namespace.
    A,
    /// The listening side: namespace B on the WAN, else loopback.
    B,
}

/// Namespace B's path, set in the child that runs over the WAN.
static PEER_NAMESPACE: OnceLock<PathBuf> = OnceLock::new();
/// The QUIC windows on the WAN link.
static WINDOWS: OnceLock<Windows> = OnceLock::new();

/// The QUIC windows for a path, ours and raw quinn's alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windows {
    /// Each stream's receive window (`QuicConfig::stream_receive_window`).
    pub stream: u32,
    /// The congestion window's cap (`QuicConfig::max_congestion_window`).
    pub congestion: u64,
}

impl Windows {
    /// The windows for `link`: the congestion window capped just under
    /// one bandwidth-delay product, stream windows of two.
    ///
    /// - The cap is what limits a bulk channel. BBR alone keeps about two
    ///   BDPs in flight, and the second stands in the bottleneck's queue
    ///   in front of every small message (50 ms p50 here). Capped at what
    ///   the path holds, the window is refilled as acknowledgments arrive
    ///   (one per two packets), and quinn still sends the higher-priority
    ///   channel's data first. 95 %: the window counts packet headers
    ///   too, and a cap of 1.1 BDP measured a standing queue again (p50
    ///   30.9 ms); 95 % costs 5 % of the bulk rate.
    /// - The stream window must not be what limits: a receiver returns
    ///   stream credit in steps of an eighth of the window, so a stream
    ///   held at its window sends in bursts of that size (78 KiB, 6 ms of
    ///   this link) that queue at the bottleneck in front of the small
    ///   channel. At two BDPs the credit stays ahead of need. (A send
    ///   window of one BDP limits the writer instead, and a small
    ///   channel's write then waits for room behind the bulk one: p99
    ///   29–34 ms.)
    ///
    /// Measured on the 50 ms link (quick runs): stream windows of one
    /// BDP and no cap, bulk 10.8 MB/s and the small channel's p50/p99
    /// 28.2/31.7 ms; these windows, 11.4 MB/s and 25.5/27.2 ms.
    pub fn for_link(link: &LinkConfig) -> Self {
        let bdp = link.bdp_bytes();
        Self {
            stream: (2 * bdp).clamp(128 * 1024, 64 << 20) as u32,
            congestion: (bdp * 95 / 100).max(128 * 1024),
        }
    }
}

/// Makes this process the WAN child: side B binds inside `namespace`,
/// and QUIC connections (ours and raw quinn's) get `windows`.
pub fn join(namespace: &str, windows: Windows) {
    let _ = PEER_NAMESPACE.set(PathBuf::from("/run/netns").join(namespace));
    let _ = WINDOWS.set(windows);
}

/// The windows QUIC uses on the WAN link (`None`: its defaults).
pub fn windows() -> Option<Windows> {
    WINDOWS.get().copied()
}

pub fn on_wan() -> bool {
    PEER_NAMESPACE.get().is_some()
}

/// The address a socket of `side` binds: loopback, or the side's end of
/// the WAN link.
pub fn bind_ip(side: Side) -> IpAddr {
    match (on_wan(), side) {
        (false, _) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        (true, Side::A) => IpAddr::V4(A_IP),
        (true, Side::B) => IpAddr::V4(B_IP),
    }
}

/// Runs `f` where `side`'s sockets must be created: side B's on a thread
/// that entered namespace B (a socket stays in the namespace it was made
/// in), everything else right here.
pub fn on_side<T: Send>(side: Side, f: impl FnOnce() -> T + Send) -> T {
    let Some(path) = PEER_NAMESPACE.get().filter(|_| side == Side::B) else {
        return f();
    };
    // Sockets made there may register with this runtime (quinn's do).
    let runtime = tokio::runtime::Handle::try_current().ok();
    std::thread::scope(|s| {
        s.spawn(|| {
            let ns = std::fs::File::open(path).expect("namespace B");
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .expect("enter namespace B");
            let _entered = runtime.as_ref().map(tokio::runtime::Handle::enter);
            f()
        })
        .join()
        .expect("bind thread")
    })
}

/// [`on_side`] for a future that creates its sockets when first polled
/// (such as a transport's async `bind`).
pub async fn on_side_async<F>(side: Side, f: F) -> F::Output
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    if side == Side::A || !on_wan() {
        return f.await;
    }
    let runtime = tokio::runtime::Handle::current();
    // The worker waits for the binding thread; the other workers run on.
    tokio::task::block_in_place(|| on_side(side, || runtime.block_on(f)))
}
