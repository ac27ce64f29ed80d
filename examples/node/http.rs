//! A minimal HTTP server for `GET /metrics` (Prometheus text format).
//! Bounded like everything facing the network: a few connections at once
//! and two per client IP (so one client trickling bytes cannot keep the
//! scraper out), a small request, headers within a short deadline and the
//! whole exchange within a longer one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use p2p_router::transport::SourceSlots;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// The server's bounds.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub connections: usize,
    pub per_ip: usize,
    pub max_request: usize,
    /// Time for the request's headers to arrive.
    pub header_deadline: Duration,
    /// Time for the whole exchange.
    pub deadline: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            connections: 16,
            per_ip: 2,
            max_request: 8 * 1024,
            header_deadline: Duration::from_secs(2),
            deadline: Duration::from_secs(5),
        }
    }
}

/// Serves until `stop` is cancelled.
pub async fn serve(listener: TcpListener, registry: Arc<Registry>, stop: CancellationToken) {
    serve_with(listener, registry, stop, Limits::default()).await;
}

async fn serve_with(
    listener: TcpListener,
    registry: Arc<Registry>,
    stop: CancellationToken,
    limits: Limits,
) {
    let slots = Arc::new(Semaphore::new(limits.connections));
    // One client (an IPv4 address or an IPv6 /64) gets `per_ip` of them.
    let per_ip = SourceSlots::new(limits.per_ip);
    let mut conns = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            a = listener.accept() => a,
        };
        let Ok((stream, from)) = accepted else {
            continue;
        };
        // Over a limit: drop the connection at once.
        let Some(ip_slot) = per_ip.try_take(from.ip()) else {
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let registry = registry.clone();
        conns.spawn(async move {
            let _slots = (slot, ip_slot);
            let answered = tokio::time::timeout(limits.deadline, answer(stream, &registry, limits));
            if let Err(e) = answered.await {
                tracing::debug!(%from, error = %e, "metrics request timed out");
            }
        });
    }
    conns.shutdown().await;
}

async fn answer(mut stream: TcpStream, registry: &Registry, limits: Limits) -> std::io::Result<()> {
    let mut request = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    let headers_by = tokio::time::Instant::now() + limits.header_deadline;
    // Read up to the end of the headers.
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        let Ok(read) = tokio::time::timeout_at(headers_by, stream.read(&mut buf)).await else {
            return respond(&mut stream, "408 Request Timeout", "").await;
        };
        let n = read?;
        if n == 0 {
            return Ok(());
        }
        request.extend_from_slice(&buf[..n]);
        if request.len() > limits.max_request {
            return respond(&mut stream, "431 Request Header Fields Too Large", "").await;
        }
    }
    let line = request.split(|b| *b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|b| *b == b' ');
    let (method, path) = (parts.next(), parts.next());
    match (method, path) {
        (Some(b"GET"), Some(b"/metrics")) => {
            let mut body = String::new();
            if prometheus_client::encoding::text::encode(&mut body, registry).is_err() {
                return respond(&mut stream, "500 Internal Server Error", "").await;
            }
            respond(&mut stream, "200 OK", &body).await
        }
        (Some(b"GET"), _) => respond(&mut stream, "404 Not Found", "try /metrics\n").await,
        _ => respond(&mut stream, "405 Method Not Allowed", "").await,
    }
}

async fn respond(stream: &mut TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

/// Binds the metrics listener (the port may be 0: the bound one is
/// returned).
pub async fn bind(address: SocketAddr) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(address).await?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn server(limits: Limits) -> (SocketAddr, CancellationToken) {
        let (listener, addr) = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let stop = CancellationToken::new();
        tokio::spawn(serve_with(
            listener,
            Arc::new(Registry::default()),
            stop.clone(),
            limits,
        ));
        (addr, stop)
    }

    async fn from(ip: &str, to: SocketAddr) -> TcpStream {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{ip}:0").parse().unwrap()).unwrap();
        socket.connect(to).await.unwrap()
    }

    /// Limits whose header deadline a test can wait out.
    fn short_deadline() -> Limits {
        Limits {
            header_deadline: Duration::from_millis(300),
            ..Limits::default()
        }
    }

    /// A scraper from an address of its own gets the metrics.
    async fn assert_scraper_served(addr: SocketAddr) {
        let mut scraper = from("127.0.0.2", addr).await;
        scraper
            .write_all(b"GET /metrics HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        assert!(reply(&mut scraper).await.starts_with("HTTP/1.1 200 OK"));
    }

    /// What the server sends before it closes.
    async fn reply(stream: &mut TcpStream) -> String {
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn a_trickling_client_keeps_only_its_own_slots_and_times_out() {
        let (addr, stop) = server(short_deadline()).await;
        // Two slow clients from one IP: the third from it is turned away.
        let mut slow = Vec::new();
        for _ in 0..2 {
            let mut s = from("127.0.0.1", addr).await;
            s.write_all(b"GET /met").await.unwrap();
            slow.push(s);
        }
        let mut third = from("127.0.0.1", addr).await;
        assert_eq!(reply(&mut third).await, "", "closed at once");
        // The scraper from another IP is answered meanwhile.
        assert_scraper_served(addr).await;
        // The slow ones get 408 once their headers are overdue.
        for mut s in slow {
            assert!(reply(&mut s).await.starts_with("HTTP/1.1 408"));
        }
        stop.cancel();
    }

    #[tokio::test]
    async fn an_oversized_request_is_refused() {
        let (addr, stop) = server(Limits::default()).await;
        let mut s = from("127.0.0.1", addr).await;
        let _ = s.write_all(&vec![b'a'; 9 * 1024]).await;
        assert!(reply(&mut s).await.starts_with("HTTP/1.1 431"));
        stop.cancel();
    }

    #[tokio::test]
    async fn a_connection_flood_from_many_ips_is_bounded_and_passes() {
        let limits = short_deadline();
        let (addr, stop) = server(limits).await;
        // 100 idle connections from 50 addresses: at most `connections`
        // are held, the rest are closed at once.
        let mut flood = Vec::new();
        for i in 0..100 {
            flood.push(from(&format!("127.0.3.{}", 1 + i / 2), addr).await);
        }
        let mut timed_out = 0;
        for mut s in flood {
            let reply = reply(&mut s).await;
            if reply.starts_with("HTTP/1.1 408") {
                timed_out += 1;
            } else {
                assert_eq!(reply, "", "closed at once");
            }
        }
        assert!(timed_out <= limits.connections, "{timed_out} held");
        // Once it is over, the scraper is served.
        assert_scraper_served(addr).await;
        stop.cancel();
    }
}
