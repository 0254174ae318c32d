//! The cluster's UDP socket, with kernel buffers sized for replication traffic.

use socket2::{Domain, Protocol, Socket, Type};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

/// Binds a UDP socket on `listen` with send and receive buffers of `buffer_bytes`. Where the
/// kernel grants less (its `net.core.rmem_max` / `wmem_max`), a process allowed to
/// (CAP_NET_ADMIN) forces the size; otherwise a warning names the sysctl to raise, since
/// a small receive buffer drops datagrams under load and QUIC slows down for them.
pub fn bind_udp(listen: SocketAddr, buffer_bytes: usize) -> std::io::Result<std::net::UdpSocket> {
    let socket = Socket::new(
        Domain::for_address(listen),
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    if listen.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    let _ = socket.set_recv_buffer_size(buffer_bytes);
    let _ = socket.set_send_buffer_size(buffer_bytes);
    // Linux reports twice what was set (its bookkeeping share), so "granted" is half of it.
    let granted = |size: std::io::Result<usize>| size.map_or(0, |s| s / 2);
    if granted(socket.recv_buffer_size()) < buffer_bytes {
        force(&socket, libc::SO_RCVBUFFORCE, buffer_bytes);
    }
    if granted(socket.send_buffer_size()) < buffer_bytes {
        force(&socket, libc::SO_SNDBUFFORCE, buffer_bytes);
    }
    let (recv, send) = (
        granted(socket.recv_buffer_size()),
        granted(socket.send_buffer_size()),
    );
    if recv < buffer_bytes || send < buffer_bytes {
        tracing::warn!(
            asked = buffer_bytes,
            receive = recv,
            send,
            "cluster socket buffers are smaller than cluster.socket_buffer_bytes: raise the \
             sysctls net.core.rmem_max and net.core.wmem_max, or replication will drop \
             datagrams and slow down under load"
        );
    }
    socket.bind(&listen.into())?;
    Ok(socket.into())
}

/// Sets a buffer size past the sysctl cap; allowed only with CAP_NET_ADMIN, else no change.
fn force(socket: &Socket, option: libc::c_int, bytes: usize) {
    let value = bytes.min(i32::MAX as usize) as libc::c_int;
    // SAFETY: a valid socket descriptor, an int option value of the size passed.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            std::ptr::addr_of!(value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}
