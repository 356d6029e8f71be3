//! `-p/--publish`: `[IP:][HOSTPORT[-END]:]PORT[-END][/tcp|udp]`, as Docker
//! reads it, into the portmap plugin's `portMappings`.

use serde::{Deserialize, Serialize};

use crate::NetError;

/// One published port (one entry of portmap's `portMappings`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    /// Port on the host.
    pub host_port: u16,
    /// Port in the container.
    pub container_port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
    /// Host address to bind ("" = every address).
    #[serde(rename = "hostIP", default)]
    pub host_ip: String,
}

fn port_range(s: &str, spec: &str) -> Result<(u16, u16), NetError> {
    let bad = || NetError::Invalid(format!("invalid port specification: \"{spec}\""));
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let a: u16 = a.parse().map_err(|_| bad())?;
    let b: u16 = b.parse().map_err(|_| bad())?;
    if a == 0 || b < a {
        return Err(bad());
    }
    Ok((a, b))
}

/// Parses one `-p` value. A missing host port (`80`, `127.0.0.1::80`) is 0:
/// [`assign_random`] picks one.
pub fn parse(spec: &str) -> Result<Vec<PortMapping>, NetError> {
    let bad = || NetError::Invalid(format!("invalid port specification: \"{spec}\""));
    let (rest, proto) = match spec.rsplit_once('/') {
        Some((r, p)) => (r, p.to_ascii_lowercase()),
        None => (spec, "tcp".to_string()),
    };
    if proto != "tcp" && proto != "udp" {
        return Err(NetError::Invalid(format!(
            "invalid proto \"{proto}\" in port specification \"{spec}\" (tcp or udp)"
        )));
    }
    let parts: Vec<&str> = rest.rsplitn(3, ':').collect();
    let (ip, host, ctr) = match parts.as_slice() {
        [c] => ("", "", *c),
        [c, h] => ("", *h, *c),
        [c, h, ip] => (*ip, *h, *c),
        _ => return Err(bad()),
    };
    let ip = ip.trim_start_matches('[').trim_end_matches(']');
    if !ip.is_empty() && ip.parse::<std::net::Ipv4Addr>().is_err() {
        return Err(NetError::Invalid(format!(
            "invalid IP address \"{ip}\" in port specification \"{spec}\""
        )));
    }
    let (c0, c1) = port_range(ctr, spec)?;
    let n = u32::from(c1 - c0);
    let (h0, h1) = if host.is_empty() {
        (0, 0)
    } else {
        port_range(host, spec)?
    };
    if h0 != 0 && u32::from(h1 - h0) != n {
        return Err(NetError::Invalid(format!(
            "invalid port specification \"{spec}\": the host and container port ranges differ in size"
        )));
    }
    Ok((0..=n)
        .map(|i| PortMapping {
            host_port: if h0 == 0 { 0 } else { h0 + i as u16 },
            container_port: c0 + i as u16,
            protocol: proto.clone(),
            host_ip: ip.to_string(),
        })
        .collect())
}

/// Gives every mapping with host port 0 a free port of the host (the kernel's
/// choice for an ephemeral bind), and checks the fixed ones are free.
pub fn assign_random(ms: &mut [PortMapping]) -> Result<(), NetError> {
    for m in ms.iter_mut() {
        let ip = if m.host_ip.is_empty() {
            "0.0.0.0"
        } else {
            &m.host_ip
        };
        let addr = format!("{ip}:{}", m.host_port);
        let port = if m.protocol == "udp" {
            std::net::UdpSocket::bind(&addr).and_then(|s| s.local_addr())
        } else {
            std::net::TcpListener::bind(&addr).and_then(|s| s.local_addr())
        }
        .map_err(|e| {
            NetError::Invalid(format!(
                "failed to bind host port {addr}/{}: {e}",
                m.protocol
            ))
        })?
        .port();
        m.host_port = port;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(s: &str) -> PortMapping {
        let v = parse(s).unwrap();
        assert_eq!(v.len(), 1);
        v.into_iter().next().unwrap()
    }

    #[test]
    fn docker_forms() {
        let m = one("8080:80");
        assert_eq!(
            (m.host_port, m.container_port, m.protocol.as_str()),
            (8080, 80, "tcp")
        );
        let m = one("127.0.0.1:8080:80");
        assert_eq!(m.host_ip, "127.0.0.1");
        assert_eq!(one("8080:80/udp").protocol, "udp");
        assert_eq!(one("80").host_port, 0);
        assert_eq!(one("127.0.0.1::80").host_port, 0);
        let r = parse("9000-9002:80-82").unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!((r[2].host_port, r[2].container_port), (9002, 82));
    }

    #[test]
    fn bad_specs() {
        for s in [
            "99999:80",
            "a:b",
            "80/sctp",
            "1-3:80-81",
            "x.y:1:2",
            "0",
            "",
            "1:2:3:4",
        ] {
            assert!(parse(s).is_err(), "{s}");
        }
    }
}
