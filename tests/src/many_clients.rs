//! Many UDP clients at once, without as many sockets: one SIP request from
//! each, written as frames on the client's veth (AF_PACKET), so that the real
//! XDP program on the server's side creates a flow per client.

use std::time::{Duration, Instant};

use crate::{
    netns::{CLIENT_IF, Lab},
    packets::{INVITE, SERVER_V4, udp4_between},
};

/// Clients per source address: ports 1024..61024.
const PORTS_PER_ADDRESS: u32 = 60_000;

/// Writes one UDP SIP request from each of `flows` distinct clients on the client's veth.
pub fn send_from_clients(client_ns: &str, flows: u32) -> f64 {
    Lab::in_namespace(client_ns, || {
        // SAFETY: plain socket(2); the fd is closed below.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        assert!(fd >= 0, "AF_PACKET socket");
        let name = std::ffi::CString::new(CLIENT_IF).unwrap();
        // SAFETY: a NUL-terminated interface name.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) } as i32;
        // SAFETY: an all-zero sockaddr_ll is valid before its fields are set.
        let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        to.sll_family = libc::AF_PACKET as u16;
        to.sll_ifindex = ifindex;
        to.sll_halen = 6;
        let started = Instant::now();
        let mut sent = 0;
        while sent < flows {
            let address = [192, 0, 2, 100 + (sent / PORTS_PER_ADDRESS) as u8];
            let port = 1024 + (sent % PORTS_PER_ADDRESS) as u16;
            let frame = udp4_between((address, port), (SERVER_V4, 5060), INVITE);
            // SAFETY: a valid buffer and a sockaddr_ll of the right size.
            let n = unsafe {
                libc::sendto(
                    fd,
                    frame.as_ptr().cast(),
                    frame.len(),
                    0,
                    (&raw const to).cast(),
                    size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            if n < 0 {
                // The veth's queue is full for a moment (ENOBUFS): let it drain.
                std::thread::sleep(Duration::from_micros(200));
                continue;
            }
            sent += 1;
        }
        // SAFETY: the fd from socket(2) above.
        unsafe { libc::close(fd) };
        started.elapsed().as_secs_f64()
    })
}
