//! IPv4 subnets and the host's routes: networks get subnets that no host route
//! (and no other network of the store) overlaps.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use crate::NetError;

/// An IPv4 network, `a.b.c.d/len` (host bits cleared).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Net {
    /// Network address.
    pub addr: Ipv4Addr,
    /// Prefix length.
    pub len: u8,
}

impl Ipv4Net {
    /// A network from an address (host bits cleared) and a prefix length.
    pub fn new(addr: Ipv4Addr, len: u8) -> Ipv4Net {
        let len = len.min(32);
        Ipv4Net {
            addr: Ipv4Addr::from(u32::from(addr) & mask(len)),
            len,
        }
    }

    /// The network mask as an integer.
    pub fn mask(&self) -> u32 {
        mask(self.len)
    }

    /// Whether `ip` lies inside.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr)
    }

    /// Whether the two networks share any address.
    pub fn overlaps(&self, other: &Ipv4Net) -> bool {
        let m = mask(self.len.min(other.len));
        u32::from(self.addr) & m == u32::from(other.addr) & m
    }

    /// The `n`th address (1 = the first host, Docker's gateway).
    pub fn nth(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr).wrapping_add(n))
    }
}

fn mask(len: u8) -> u32 {
    if len == 0 { 0 } else { u32::MAX << (32 - len) }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for Ipv4Net {
    type Err = NetError;

    /// `a.b.c.d/len`; host bits set are refused, as Docker does.
    fn from_str(s: &str) -> Result<Ipv4Net, NetError> {
        let bad = || {
            NetError::Invalid(format!(
                "invalid subnet {s:?}: expected IPv4 CIDR like 10.1.0.0/16"
            ))
        };
        let (a, l) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = a.parse().map_err(|_| bad())?;
        let len: u8 = l.parse().map_err(|_| bad())?;
        if !(8..=30).contains(&len) {
            return Err(NetError::Invalid(format!(
                "invalid subnet {s}: the prefix length must be between 8 and 30"
            )));
        }
        let net = Ipv4Net::new(addr, len);
        if net.addr != addr {
            return Err(NetError::Invalid(format!(
                "invalid subnet {s}: host bits are set (did you mean {net}?)"
            )));
        }
        Ok(net)
    }
}

/// The host's IPv4 routes (every table `/proc/net/route` shows), without the
/// default route.
pub fn host_routes() -> Vec<Ipv4Net> {
    let text = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    parse_proc_route(&text)
}

/// Parses `/proc/net/route` (addresses are little-endian hex).
pub fn parse_proc_route(text: &str) -> Vec<Ipv4Net> {
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 {
            continue;
        }
        let (Ok(dst), Ok(m)) = (u32::from_str_radix(f[1], 16), u32::from_str_radix(f[7], 16))
        else {
            continue;
        };
        if m == 0 {
            continue;
        }
        // The kernel prints the big-endian value as a native integer.
        let dst = Ipv4Addr::from(u32::from_be(dst));
        out.push(Ipv4Net::new(dst, m.count_ones() as u8));
    }
    out
}

/// Candidate pools, in order: 10.88.0.0/16 … 10.254.0.0/16, then
/// 172.17.0.0/16 … 172.31.0.0/16, then 192.168.0.0/20 … 192.168.240.0/20.
pub fn candidates() -> impl Iterator<Item = Ipv4Net> {
    (88..=254u8)
        .map(|b| Ipv4Net::new(Ipv4Addr::new(10, b, 0, 0), 16))
        .chain((17..=31u8).map(|b| Ipv4Net::new(Ipv4Addr::new(172, b, 0, 0), 16)))
        .chain((0..16u8).map(|b| Ipv4Net::new(Ipv4Addr::new(192, 168, b * 16, 0), 20)))
}

/// The first candidate that overlaps none of `taken`.
pub fn choose(taken: &[Ipv4Net]) -> Option<Ipv4Net> {
    candidates().find(|c| !taken.iter().any(|t| t.overlaps(c)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_overlap() {
        let a: Ipv4Net = "10.88.0.0/16".parse().unwrap();
        assert!(a.contains("10.88.3.4".parse().unwrap()));
        assert!(!a.contains("10.89.0.1".parse().unwrap()));
        assert!(a.overlaps(&"10.88.5.0/24".parse().unwrap()));
        assert!(!a.overlaps(&"10.89.0.0/16".parse().unwrap()));
        assert!("10.88.0.1/16".parse::<Ipv4Net>().is_err());
        assert!("10.88.0.0".parse::<Ipv4Net>().is_err());
        assert!("x/16".parse::<Ipv4Net>().is_err());
        assert_eq!(a.nth(1).to_string(), "10.88.0.1");
    }

    #[test]
    fn proc_route() {
        let text = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
br0\t0000580A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n";
        let r = parse_proc_route(text);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].to_string(), "192.0.2.0/24");
        assert_eq!(r[1].to_string(), "10.88.0.0/16");
        assert_eq!(choose(&r).unwrap().to_string(), "10.89.0.0/16");
    }
}
