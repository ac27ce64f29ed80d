//! The UDP socket under a QUIC endpoint, bound here so its buffers can be
//! raised before quinn takes it.

use std::net::{SocketAddr, UdpSocket};

use socket2::{Domain, Protocol, Socket, Type};

/// Binds a UDP socket at `address` with `buffer` bytes of send and receive
/// buffer. The kernel caps the sizes at `net.core.{r,w}mem_max`; a smaller
/// result is logged, not an error.
pub(crate) fn bind_udp(address: SocketAddr, buffer: usize) -> std::io::Result<UdpSocket> {
    let socket = Socket::new(
        Domain::for_address(address),
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    if address.is_ipv6() {
        // IPv4 gets its own socket; a dual-stack one would shadow it.
        socket.set_only_v6(true)?;
    }
    socket.set_recv_buffer_size(buffer)?;
    socket.set_send_buffer_size(buffer)?;
    // Linux reports twice the granted size (bookkeeping overhead).
    let granted = socket.recv_buffer_size()? / 2;
    if granted < buffer {
        tracing::warn!(
            wanted = buffer,
            granted,
            "UDP receive buffer capped by the kernel; raise net.core.rmem_max to avoid packet loss"
        );
    }
    socket.bind(&address.into())?;
    Ok(socket.into())
}
