//! The per-network DNS responder: answers A queries for the names of the
//! containers attached to one user network (names, aliases, short IDs) and
//! forwards everything else to the host's resolvers. Message parsing and
//! serialising is hickory-proto's; the loop is plain blocking sockets (one
//! thread per forwarded query), since a network's DNS traffic is small.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};

/// TTL of local answers (Docker's embedded DNS uses 600).
const TTL: u32 = 600;

/// Names → addresses of the containers on the network (`None`: not ours).
pub type Lookup = dyn Fn(&str) -> Option<Vec<Ipv4Addr>> + Send + Sync;

/// The resolvers to forward to: `nameserver` lines of a resolv.conf (port
/// 53). Loopback ones are returned too; [`forward`] refuses them.
pub fn upstreams(resolv_conf: &str) -> Vec<SocketAddr> {
    resolv_conf
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("nameserver")).then_some(())?;
            let ip: IpAddr = w.next()?.parse().ok()?;
            Some(SocketAddr::new(ip, 53))
        })
        .collect()
}

/// What to do with one query.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// Send this reply.
    Reply(Vec<u8>),
    /// Not a local name: forward the query as it is.
    Forward,
    /// Unreadable: drop it.
    Drop,
}

/// Answers `query` from `lookup` when it names a container of the network.
pub fn answer(query: &[u8], lookup: &Lookup) -> Outcome {
    let Ok(req) = Message::from_vec(query) else {
        return Outcome::Drop;
    };
    if req.metadata.message_type != MessageType::Query {
        return Outcome::Drop;
    }
    let [q] = req.queries.as_slice() else {
        return Outcome::Forward;
    };
    if req.metadata.op_code != OpCode::Query {
        return Outcome::Forward;
    }
    let name = q.name().to_ascii();
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let Some(addrs) = lookup(&name) else {
        return Outcome::Forward;
    };
    let mut resp = reply_to(&req, ResponseCode::NoError);
    resp.metadata.authoritative = true;
    // A name of ours: A records for A/ANY, an empty NOERROR for anything else
    // (AAAA, MX...), never a forward that would leak the name.
    if matches!(q.query_type(), RecordType::A | RecordType::ANY) {
        for a in addrs {
            resp.add_answer(Record::from_rdata(q.name().clone(), TTL, RData::A(A(a))));
        }
    }
    resp.to_vec().map_or(Outcome::Drop, Outcome::Reply)
}

fn reply_to(req: &Message, code: ResponseCode) -> Message {
    let mut resp = Message::error_msg(req.metadata.id, req.metadata.op_code, code);
    resp.metadata.recursion_desired = req.metadata.recursion_desired;
    resp.metadata.recursion_available = true;
    resp.add_queries(req.queries.iter().cloned());
    if req.edns.is_some() {
        resp.set_edns(Edns::new());
    }
    resp
}

/// A SERVFAIL for `query` (None if it cannot be read).
pub fn servfail(query: &[u8]) -> Option<Vec<u8>> {
    let req = Message::from_vec(query).ok()?;
    reply_to(&req, ResponseCode::ServFail).to_vec().ok()
}

/// Forwards `query` to the first upstream that answers within 2 s (UDP).
/// Loopback upstreams (a host stub resolver such as 127.0.0.53) are not
/// used: the answer is SERVFAIL rather than a loop — unless `allow_loopback`
/// (an upstream given explicitly, `BERTH_DNS_UPSTREAM`).
pub fn forward(query: &[u8], upstreams: &[SocketAddr], allow_loopback: bool) -> Option<Vec<u8>> {
    let id = query.get(..2)?;
    for up in upstreams
        .iter()
        .filter(|u| allow_loopback || !u.ip().is_loopback())
    {
        let bind: SocketAddr = if up.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let Ok(s) = UdpSocket::bind(bind) else {
            continue;
        };
        if s.connect(up).is_err() || s.send(query).is_err() {
            continue;
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut buf = [0u8; 4096];
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let _ = s.set_read_timeout(Some(left.max(Duration::from_millis(1))));
            match s.recv(&mut buf) {
                Ok(n) if buf[..n.min(2)] == *id => return Some(buf[..n].to_vec()),
                Ok(_) => continue,
                Err(_) => break,
            }
        }
    }
    servfail(query)
}

/// The forwarding configuration of a responder.
#[derive(Clone, Debug, Default)]
pub struct Upstreams {
    /// Where to forward.
    pub servers: Vec<SocketAddr>,
    /// Loopback servers allowed (explicitly configured).
    pub allow_loopback: bool,
}

fn handle(query: &[u8], lookup: &Lookup, up: &Upstreams) -> Option<Vec<u8>> {
    match answer(query, lookup) {
        Outcome::Reply(r) => Some(r),
        Outcome::Forward => forward(query, &up.servers, up.allow_loopback),
        Outcome::Drop => None,
    }
}

/// Serves UDP on `udp` and TCP on `tcp` until `keep_running` (asked every
/// couple of seconds) says no.
pub fn serve(
    udp: UdpSocket,
    tcp: Option<TcpListener>,
    lookup: Arc<Lookup>,
    up: Upstreams,
    keep_running: &dyn Fn() -> bool,
) {
    if let Some(tcp) = tcp {
        let (lookup, up) = (lookup.clone(), up.clone());
        std::thread::spawn(move || {
            for conn in tcp.incoming().flatten() {
                let (lookup, up) = (lookup.clone(), up.clone());
                std::thread::spawn(move || serve_tcp(conn, &*lookup, &up));
            }
        });
    }
    let udp = Arc::new(udp);
    let _ = udp.set_read_timeout(Some(Duration::from_secs(2)));
    let mut checked = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        if checked.elapsed() >= Duration::from_secs(2) {
            if !keep_running() {
                return;
            }
            checked = Instant::now();
        }
        let Ok((n, from)) = udp.recv_from(&mut buf) else {
            continue;
        };
        let q = buf[..n].to_vec();
        match answer(&q, &*lookup) {
            Outcome::Reply(r) => {
                let _ = udp.send_to(&r, from);
            }
            Outcome::Drop => {}
            Outcome::Forward => {
                let (udp, up) = (udp.clone(), up.clone());
                std::thread::spawn(move || {
                    if let Some(r) = forward(&q, &up.servers, up.allow_loopback) {
                        let _ = udp.send_to(&r, from);
                    }
                });
            }
        }
    }
}

fn serve_tcp(mut c: TcpStream, lookup: &Lookup, up: &Upstreams) {
    let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
    loop {
        let mut len = [0u8; 2];
        if c.read_exact(&mut len).is_err() {
            return;
        }
        let mut q = vec![0u8; u16::from_be_bytes(len) as usize];
        if c.read_exact(&mut q).is_err() {
            return;
        }
        let Some(r) = handle(&q, lookup, up) else {
            return;
        };
        let mut out = (r.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(&r);
        if c.write_all(&out).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use hickory_proto::rr::Name;

    fn query(name: &str, t: RecordType) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.id = 77;
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
        m.to_vec().unwrap()
    }

    fn lookup(n: &str) -> Option<Vec<Ipv4Addr>> {
        (n == "web").then(|| vec![Ipv4Addr::new(10, 1, 2, 3)])
    }

    #[test]
    fn local_names_answered_others_forwarded() {
        let Outcome::Reply(r) = answer(&query("WEB.", RecordType::A), &lookup) else {
            panic!("not answered");
        };
        let m = Message::from_vec(&r).unwrap();
        assert_eq!(m.metadata.id, 77);
        assert_eq!(m.metadata.message_type, MessageType::Response);
        assert_eq!(m.answers.len(), 1);
        assert_eq!(m.answers[0].data, RData::A(A(Ipv4Addr::new(10, 1, 2, 3))));
        // AAAA of a local name: empty, not forwarded.
        let Outcome::Reply(r) = answer(&query("web", RecordType::AAAA), &lookup) else {
            panic!("not answered");
        };
        let m = Message::from_vec(&r).unwrap();
        assert!(m.answers.is_empty());
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert_eq!(
            answer(&query("example.org", RecordType::A), &lookup),
            Outcome::Forward
        );
        assert_eq!(answer(b"junk", &lookup), Outcome::Drop);
    }

    #[test]
    fn loopback_upstreams_get_servfail() {
        let ups = upstreams("search x\nnameserver 127.0.0.53\n");
        assert_eq!(ups, vec!["127.0.0.53:53".parse().unwrap()]);
        let r = forward(&query("example.org", RecordType::A), &ups, false).unwrap();
        let m = Message::from_vec(&r).unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    }
}
