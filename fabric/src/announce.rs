//! A gratuitous ARP on a real interface: what a migration orchestrator sends once a VF's
//! address and MAC arrived on the destination's interface, so that switches learn the MAC's
//! new port before the VF sends anything (QEMU's `announce-self` does the same for a NIC). On
//! the UDP fabric the kernel owns the interface, so this goes through an `AF_PACKET` socket;
//! the TAP bridge announces its VF itself ([`crate::tap::TapBridge::announce`]).

use crate::tap::Endpoint;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use vhca_device::Mac;

const ETH_P_ARP: u16 = 0x0806;

/// Sends one RFC 5227 announcement (a broadcast ARP request for `ip` from `mac` with sender and
/// target address both `ip`) out of interface `ifname`. Needs `CAP_NET_RAW`.
pub fn gratuitous_arp(ifname: &str, mac: Mac, ip: Ipv4Addr) -> io::Result<()> {
    let mut frames = Vec::new();
    Endpoint::new(mac, ip).announce(&mut frames);
    let frame = frames
        .first()
        .ok_or_else(|| io::Error::other("no announcement frame"))?;
    let name = std::ffi::CString::new(ifname).map_err(io::Error::other)?;
    // SAFETY: `name` is a NUL-terminated string that lives across the call.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: socket(2) with constant arguments; the descriptor is owned right away.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            i32::from(ETH_P_ARP.to_be()),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value to fill in.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = ETH_P_ARP.to_be();
    addr.sll_ifindex = ifindex as i32;
    addr.sll_halen = 6;
    addr.sll_addr[..6].copy_from_slice(&[0xff; 6]);
    // SAFETY: the buffer and the address are live for the call and their exact sizes are
    // passed, as sendto(2) requires.
    let n = unsafe {
        libc::sendto(
            sock.as_raw_fd(),
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
