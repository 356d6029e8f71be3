//! Small blocking HTTP pieces for the registry tests: free ports, a tiny
//! one-request-per-connection server (token server, fake registries), a faulty
//! proxy in front of a real registry, and a server that never answers.
//!
//! Plain std threads and sockets: every connection is answered with
//! `Connection: close`, which every client handles, so no HTTP framing beyond
//! Content-Length is needed.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

pub const LOCALHOST: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);

/// A port that was free a moment ago on `ip`. Callers that hand it to another
/// process must cope with losing a race for it (see `Registry::start`).
pub fn free_port(ip: Ipv4Addr) -> u16 {
    TcpListener::bind((ip, 0))
        .expect("bind port 0")
        .local_addr()
        .unwrap()
        .port()
}

/// Whether something accepts connections at `addr`.
pub fn accepting(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

// ---------------------------------------------------------------------------
// encodings

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Base64: standard alphabet with padding, or (`url`) base64url without
/// padding as JWTs use.
pub fn b64(data: &[u8], url: bool) -> String {
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk.len();
        let v = (chunk[0] as u32) << 16
            | (*chunk.get(1).unwrap_or(&0) as u32) << 8
            | *chunk.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= n {
                let c = B64[(v >> (18 - 6 * i) & 63) as usize];
                out.push(match (url, c) {
                    (true, b'+') => '-',
                    (true, b'/') => '_',
                    _ => c as char,
                });
            } else if !url {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes either base64 alphabet, padded or not.
pub fn b64_decode(s: &str) -> Option<Vec<u8>> {
    let mut bits = 0u32;
    let mut nbits = 0;
    let mut out = Vec::new();
    for c in s.trim_end_matches('=').bytes() {
        let v = match c {
            b'-' => 62,
            b'_' => 63,
            _ => B64.iter().position(|&b| b == c)? as u32,
        };
        bits = bits << 6 | v;
        nbits += 6;
        if nbits >= 8 {
            nbits -= 8;
            out.push((bits >> nbits) as u8);
        }
    }
    Some(out)
}

/// Percent-decoding of a query component (`+` is a space).
pub fn pct_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---------------------------------------------------------------------------
// a tiny server

/// One parsed request.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    /// Decoded `key=value` pairs of a query string or form body.
    pub fn pairs(s: &str) -> Vec<(String, String)> {
        s.split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (pct_decode(k), pct_decode(v))
            })
            .collect()
    }

    pub fn query(&self) -> Vec<(String, String)> {
        Request::pairs(self.target.split_once('?').map(|x| x.1).unwrap_or(""))
    }
}

/// Reads one request head (and a Content-Length body). `None` on a clean EOF.
fn read_request(r: &mut BufReader<TcpStream>) -> io::Result<Option<(Request, Vec<u8>)>> {
    let mut raw = Vec::new();
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    raw.extend_from_slice(line.as_bytes());
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        raw.extend_from_slice(line.as_bytes());
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    r.read_exact(&mut body)?;
    Ok(Some((
        Request {
            method,
            target,
            headers,
            body,
        },
        raw,
    )))
}

/// What a handler answers.
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Send Content-Length (otherwise the body ends when the connection does).
    pub content_length: bool,
}

impl Response {
    pub fn new(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            content_length: true,
        }
    }

    pub fn json(status: u16, v: &serde_json::Value) -> Response {
        Response::new(status)
            .header("Content-Type", "application/json")
            .body(serde_json::to_vec(v).unwrap())
    }

    pub fn header(mut self, k: &str, v: &str) -> Response {
        self.headers.push((k.into(), v.into()));
        self
    }

    pub fn body(mut self, b: Vec<u8>) -> Response {
        self.body = b;
        self
    }

    fn write(&self, w: &mut impl Write, head_only: bool) -> io::Result<()> {
        let mut h = format!("HTTP/1.1 {} X\r\n", self.status);
        for (k, v) in &self.headers {
            h.push_str(&format!("{k}: {v}\r\n"));
        }
        if self.content_length {
            h.push_str(&format!("Content-Length: {}\r\n", self.body.len()));
        }
        h.push_str("Connection: close\r\n\r\n");
        w.write_all(h.as_bytes())?;
        if !head_only {
            w.write_all(&self.body)?;
        }
        w.flush()
    }
}

/// A server on a thread; it stops accepting when dropped.
pub struct Server {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Server {
    pub fn host(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

/// Accepts connections on `ip` (a fresh port) and runs `conn` for each on its
/// own thread.
fn accept_loop(ip: Ipv4Addr, conn: impl Fn(TcpStream) + Send + Sync + 'static) -> Server {
    let l = TcpListener::bind((ip, 0)).expect("bind test server");
    let addr = l.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let conn = Arc::new(conn);
    thread::spawn(move || {
        for s in l.incoming() {
            if flag.load(Ordering::SeqCst) {
                break;
            }
            let Ok(s) = s else { continue };
            let conn = conn.clone();
            thread::spawn(move || conn(s));
        }
    });
    Server { addr, stop }
}

/// Serves `handler` on `ip`, one request per connection.
pub fn serve(
    ip: Ipv4Addr,
    handler: impl Fn(&Request) -> Response + Send + Sync + 'static,
) -> Server {
    accept_loop(ip, move |s| {
        let mut r = BufReader::new(s.try_clone().unwrap());
        if let Ok(Some((req, _))) = read_request(&mut r) {
            let resp = handler(&req);
            let mut w = s;
            let _ = resp.write(&mut w, req.method == "HEAD");
            let _ = w.shutdown(Shutdown::Both);
        }
    })
}

/// Accepts connections and never answers: the "registry that hangs".
pub fn hang(ip: Ipv4Addr) -> Server {
    let held = Arc::new(Mutex::new(Vec::new()));
    accept_loop(ip, move |s| held.lock().unwrap().push(s))
}

// ---------------------------------------------------------------------------
// a faulty proxy

/// What the proxy does to the requests it targets (GETs whose path contains
/// its pattern).
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// Flips one bit in the middle of the blob.
    Corrupt,
    /// Sends the full Content-Length header but only the first half of the
    /// blob, then closes. A Range request for the rest gets its head and
    /// nothing else, so resuming can never complete the blob.
    Truncate,
    /// Like Truncate, but keeps the connection open without sending more.
    Stall,
    /// Answers the first `n` targeted requests with this status itself
    /// (`usize::MAX`: every one); later ones go through untouched.
    Status(u16, usize),
    /// Cuts the first targeted answer after half the blob and closes, like
    /// Truncate; later requests (a resumption with Range) go through.
    DropOnce,
    /// Like DropOnce, but later requests reach the registry without their
    /// Range header: a server that ignores Range and sends the whole blob.
    DropOnceIgnoreRange,
    /// Holds each targeted answer back for a while before sending it, so that
    /// requests made concurrently are seen in flight together.
    Hold(Duration),
    /// Nothing: the proxy only logs.
    None,
}

/// What a proxy shares between its connections.
#[derive(Default)]
struct ProxyState {
    /// Targeted requests seen so far.
    seen: AtomicUsize,
    /// Every request, in arrival order.
    log: Mutex<Vec<Request>>,
    /// Blob GETs being answered now, and the most at once.
    blob_gets: AtomicUsize,
    max_blob_gets: AtomicUsize,
}

/// A proxy in front of a registry that damages responses for one blob.
pub struct Proxy {
    pub server: Server,
    /// How many responses for the blob were damaged.
    pub hits: Arc<AtomicUsize>,
    state: Arc<ProxyState>,
}

impl Proxy {
    pub fn host(&self) -> String {
        self.server.host()
    }

    /// Every request the proxy got so far (bodies included).
    pub fn requests(&self) -> Vec<Request> {
        self.state.log.lock().unwrap().clone()
    }

    /// The most blob GETs (`/blobs/sha256:…`) the proxy had in flight at once.
    pub fn max_blob_gets_in_flight(&self) -> usize {
        self.state.max_blob_gets.load(Ordering::SeqCst)
    }
}

/// Proxies every request on a fresh 127.0.0.1 port to `upstream`, applying
/// `fault` to GET responses for the blob `digest` (`sha256:…`).
pub fn proxy(upstream: SocketAddr, digest: &str, fault: Fault) -> Proxy {
    proxy_matching(upstream, &format!("/blobs/{digest}"), fault)
}

/// Like [`proxy`], applying `fault` to every GET whose path contains
/// `pattern` (`/manifests/`, `/blobs/sha256:`).
pub fn proxy_matching(upstream: SocketAddr, pattern: &str, fault: Fault) -> Proxy {
    let hits = Arc::new(AtomicUsize::new(0));
    let state = Arc::new(ProxyState::default());
    let (counter, st) = (hits.clone(), state.clone());
    let pattern = pattern.to_string();
    let server = accept_loop(LOCALHOST, move |client| {
        let _ = proxy_one(client, upstream, &pattern, fault, &counter, &st);
    });
    Proxy {
        server,
        hits,
        state,
    }
}

/// Header lines of a raw head with `Connection` replaced by `close` and the
/// headers named in `drop` left out.
fn rewrite_head(head: &str, drop: &[&str]) -> String {
    let mut out = String::new();
    for l in head.split("\r\n").filter(|l| !l.is_empty()) {
        let low = l.to_ascii_lowercase();
        let name = low.split(':').next().unwrap_or("").trim();
        if name != "connection" && !drop.contains(&name) {
            out.push_str(l);
            out.push_str("\r\n");
        }
    }
    out + "Connection: close\r\n\r\n"
}

fn force_close(head: &str) -> String {
    rewrite_head(head, &[])
}

/// Counts a blob GET in flight for as long as it lives.
struct InFlight<'a>(&'a ProxyState);

impl<'a> InFlight<'a> {
    fn new(s: &'a ProxyState) -> InFlight<'a> {
        let n = s.blob_gets.fetch_add(1, Ordering::SeqCst) + 1;
        s.max_blob_gets.fetch_max(n, Ordering::SeqCst);
        InFlight(s)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.blob_gets.fetch_sub(1, Ordering::SeqCst);
    }
}

fn proxy_one(
    client: TcpStream,
    upstream: SocketAddr,
    pattern: &str,
    fault: Fault,
    hits: &AtomicUsize,
    state: &ProxyState,
) -> io::Result<()> {
    let mut r = BufReader::new(client.try_clone()?);
    let Some((req, raw)) = read_request(&mut r)? else {
        return Ok(());
    };
    state.log.lock().unwrap().push(req.clone());
    let in_flight = (req.method == "GET" && req.path().contains("/blobs/sha256:"))
        .then(|| InFlight::new(state));
    let target = req.method == "GET" && req.path().contains(pattern);
    // How many targeted requests came before this one.
    let nth = if target {
        state.seen.fetch_add(1, Ordering::SeqCst)
    } else {
        0
    };
    let mut w = client;
    if let (true, Fault::Status(status, n)) = (target, fault)
        && nth < n
    {
        hits.fetch_add(1, Ordering::SeqCst);
        let resp = Response::json(
            status,
            &serde_json::json!({"errors": [{"code": "UNAVAILABLE", "message": "injected by the test proxy"}]}),
        );
        resp.write(&mut w, false)?;
        return w.shutdown(Shutdown::Both);
    }
    let drop_headers: &[&str] = match fault {
        Fault::DropOnceIgnoreRange if target && nth > 0 => &["range"],
        _ => &[],
    };
    // One request per upstream connection: ask the registry to close after
    // answering, then read its answer to EOF (no need to parse its framing).
    let mut up = TcpStream::connect(upstream)?;
    up.write_all(rewrite_head(&String::from_utf8_lossy(&raw), drop_headers).as_bytes())?;
    up.write_all(&req.body)?;
    let mut resp = Vec::new();
    up.read_to_end(&mut resp)?;
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
        .unwrap_or(resp.len());
    let (head, body) = resp.split_at(split);
    let head = String::from_utf8_lossy(head).into_owned();
    let mut body = body.to_vec();
    if let (true, Fault::Hold(d)) = (target, fault) {
        thread::sleep(d);
    }
    // No longer in flight once the answer starts: a client may read a whole
    // body and send its next request before this thread gets to run again.
    drop(in_flight);
    let status_ok = head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.1 206");
    let damage = match fault {
        Fault::Corrupt | Fault::Truncate | Fault::Stall => true,
        Fault::DropOnce | Fault::DropOnceIgnoreRange => nth == 0,
        Fault::Status(..) | Fault::Hold(_) | Fault::None => false,
    };
    if !(target && status_ok && damage) {
        w.write_all(force_close(&head).as_bytes())?;
        w.write_all(&body)?;
        return w.shutdown(Shutdown::Both);
    }
    hits.fetch_add(1, Ordering::SeqCst);
    // Where this body starts in the blob and how long the blob is.
    let (start, total) = head
        .lines()
        .find_map(|l| {
            let v = l.to_ascii_lowercase();
            let v = v
                .strip_prefix("content-range:")?
                .trim()
                .strip_prefix("bytes")?;
            let (range, total) = v.trim().split_once('/')?;
            let start = range.split('-').next()?.trim().parse().ok()?;
            Some((start, total.trim().parse().ok()?))
        })
        .unwrap_or((0usize, body.len()));
    let mid = total / 2;
    w.write_all(force_close(&head).as_bytes())?;
    match fault {
        Fault::Corrupt => {
            if (start..start + body.len()).contains(&mid) {
                body[mid - start] ^= 0x01;
            }
            w.write_all(&body)?;
        }
        _ => {
            let keep = mid.saturating_sub(start).min(body.len());
            w.write_all(&body[..keep])?;
            w.flush()?;
            if let Fault::Stall = fault {
                // Hold the connection open, silent, until the test ends.
                let until = Instant::now() + Duration::from_secs(600);
                while Instant::now() < until {
                    thread::sleep(Duration::from_secs(1));
                }
            }
        }
    }
    w.shutdown(Shutdown::Both)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        assert_eq!(b64(b"alice:s3cret", false), "YWxpY2U6czNjcmV0");
        assert_eq!(b64(b"ab", false), "YWI=");
        assert_eq!(b64(b"ab", true), "YWI");
        assert_eq!(b64(&[0xfb, 0xff], true), "-_8");
        assert_eq!(b64_decode("YWI=").unwrap(), b"ab");
        assert_eq!(b64_decode("-_8").unwrap(), vec![0xfb, 0xff]);
        assert_eq!(
            pct_decode("repository%3Aa%2Fb%3Apull%2Cpush"),
            "repository:a/b:pull,push"
        );
    }
}
