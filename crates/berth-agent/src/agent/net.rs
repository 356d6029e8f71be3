//! The guest's network interfaces: the address, netmask and default route
//! the host's network (CNI) gave the container, set with the classic ioctls
//! (no netlink library: an IPv4 address and one route are all it takes).

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use berth_agent::Interface;

use super::sys::check;

/// Configures each interface, found by its MAC address; a VM resumed
/// from a snapshot has the template's address on its NIC, and the n-th
/// interface without a match is given the n-th address asked for.
pub fn configure(ifaces: &[Interface]) -> Result<(), String> {
    let mut spare = ethernet()
        .into_iter()
        .filter(|(_, mac)| !ifaces.iter().any(|i| i.mac.eq_ignore_ascii_case(mac)));
    for i in ifaces {
        let name = match by_mac(&i.mac) {
            Some(n) => n,
            None => {
                let (name, _) = spare
                    .next()
                    .ok_or_else(|| format!("no network interface for MAC {}", i.mac))?;
                let sock = socket().map_err(|e| format!("socket: {e}"))?;
                set_mac(&sock, &name, &i.mac)
                    .map_err(|e| format!("{name}: set MAC {}: {e}", i.mac))?;
                name
            }
        };
        let addr: Ipv4Addr = i
            .address
            .parse()
            .map_err(|_| format!("bad address {:?} for {name}", i.address))?;
        if i.prefix > 32 {
            return Err(format!("bad prefix /{} for {name}", i.prefix));
        }
        let mask = Ipv4Addr::from(u32::MAX.checked_shl(32 - u32::from(i.prefix)).unwrap_or(0));
        let sock = socket().map_err(|e| format!("socket: {e}"))?;
        if i.mtu != 0 {
            set_mtu(&sock, &name, i.mtu).map_err(|e| format!("{name}: set MTU {}: {e}", i.mtu))?;
        }
        ioctl_addr(&sock, &name, libc::SIOCSIFADDR, addr)
            .map_err(|e| format!("{name}: set address {addr}: {e}"))?;
        ioctl_addr(&sock, &name, libc::SIOCSIFNETMASK, mask)
            .map_err(|e| format!("{name}: set netmask {mask}: {e}"))?;
        up(&sock, &name).map_err(|e| format!("{name}: up: {e}"))?;
        if !i.gateway.is_empty() {
            let gw: Ipv4Addr = i
                .gateway
                .parse()
                .map_err(|_| format!("bad gateway {:?} for {name}", i.gateway))?;
            default_route(&sock, gw).map_err(|e| format!("default route via {gw}: {e}"))?;
        }
    }
    Ok(())
}

/// The interface whose /sys/class/net/NAME/address is `mac`.
fn by_mac(mac: &str) -> Option<String> {
    let want = mac.to_ascii_lowercase();
    std::fs::read_dir("/sys/class/net")
        .ok()?
        .flatten()
        .find_map(|e| {
            let a = std::fs::read_to_string(e.path().join("address")).ok()?;
            (a.trim() == want).then(|| e.file_name().to_string_lossy().into_owned())
        })
}

/// Ethernet interfaces (name, MAC), by name.
fn ethernet() -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = std::fs::read_dir("/sys/class/net")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            // ARPHRD_ETHER
            std::fs::read_to_string(e.path().join("type")).is_ok_and(|t| t.trim() == "1")
        })
        .filter_map(|e| {
            let a = std::fs::read_to_string(e.path().join("address")).ok()?;
            Some((
                e.file_name().to_string_lossy().into_owned(),
                a.trim().to_string(),
            ))
        })
        .collect();
    v.sort();
    v
}

fn set_mac(sock: &OwnedFd, name: &str, mac: &str) -> std::io::Result<()> {
    let bytes: Vec<u8> = mac
        .split(':')
        .map(|h| u8::from_str_radix(h, 16))
        .collect::<Result<_, _>>()
        .ok()
        .filter(|b: &Vec<u8>| b.len() == 6)
        .ok_or_else(|| std::io::Error::other(format!("bad MAC address {mac:?}")))?;
    let mut r = ifreq(name);
    // SAFETY: writing the hwaddr member of the union, a plain sockaddr.
    unsafe {
        r.ifr_ifru.ifru_hwaddr.sa_family = libc::ARPHRD_ETHER;
        for (d, s) in r.ifr_ifru.ifru_hwaddr.sa_data.iter_mut().zip(&bytes) {
            *d = *s as libc::c_char;
        }
    }
    // SAFETY: r is a valid ifreq naming the interface, with the hwaddr set.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFHWADDR, &r) })?;
    Ok(())
}

fn set_mtu(sock: &OwnedFd, name: &str, mtu: u32) -> std::io::Result<()> {
    let mut r = ifreq(name);
    r.ifr_ifru.ifru_mtu = i32::try_from(mtu).map_err(std::io::Error::other)?;
    // SAFETY: r is a valid ifreq naming the interface, with the MTU member set.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFMTU, &r) })?;
    Ok(())
}

fn socket() -> std::io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the descriptor is owned right after.
    let s =
        check(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: s is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(s) })
}

fn ifreq(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is plain data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req
        .ifr_name
        .iter_mut()
        .zip(name.bytes().take(libc::IFNAMSIZ - 1))
    {
        *d = s as libc::c_char;
    }
    req
}

fn sockaddr(a: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(a).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size; the kernel reads
    // the family to know which it is.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

fn ioctl_addr(sock: &OwnedFd, name: &str, req: libc::c_ulong, a: Ipv4Addr) -> std::io::Result<()> {
    let mut r = ifreq(name);
    r.ifr_ifru.ifru_addr = sockaddr(a);
    // SAFETY: r is a valid ifreq naming the interface, with the address member set.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), req, &r) })?;
    Ok(())
}

fn up(sock: &OwnedFd, name: &str) -> std::io::Result<()> {
    let mut r = ifreq(name);
    // SAFETY: r is a valid ifreq naming the interface; the kernel fills its flags.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut r) })?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    unsafe { r.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short };
    // SAFETY: r is a valid ifreq; the kernel only reads it.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &r) })?;
    Ok(())
}

fn default_route(sock: &OwnedFd, gw: Ipv4Addr) -> std::io::Result<()> {
    // SAFETY: rtentry is plain data; all zeroes is a valid value (no device).
    let mut rt: libc::rtentry = unsafe { std::mem::zeroed() };
    rt.rt_dst = sockaddr(Ipv4Addr::UNSPECIFIED);
    rt.rt_genmask = sockaddr(Ipv4Addr::UNSPECIFIED);
    rt.rt_gateway = sockaddr(gw);
    rt.rt_flags = (libc::RTF_UP | libc::RTF_GATEWAY) as libc::c_ushort;
    // SAFETY: rt is a valid rtentry; the kernel only reads it.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCADDRT, &rt) })?;
    Ok(())
}
