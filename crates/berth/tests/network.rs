//! Container networking through CNI: `--network none|bridge|host|container:|NAME`,
//! user networks, `-p`, `port`, `network` commands, and that every veth, netns
//! pin and IPAM lease goes away again.
//!
//! Traffic goes only to 127.0.0.0/8 and to addresses of namespaces these tests
//! create. Each test has its own store, hence its own default bridge
//! (`berth<hash>`) and its own networks with subnets picked from
//! 10.200.0.0–10.250.255.0/24 by hashing the store path; a guard removes the
//! containers, bridges and namespace pins even when the test fails.

mod common;

use std::hash::{Hash, Hasher};
use std::path::PathBuf;

use common::{Store, fixture};
use serde_json::Value;

/// A store with busybox loaded (its networks are torn down by `Store`'s drop).
struct Net {
    s: Store,
}

impl std::ops::Deref for Net {
    type Target = Store;
    fn deref(&self) -> &Store {
        &self.s
    }
}

impl Net {
    fn new() -> Net {
        let s = Store::new();
        s.ok(&["load", "-q", "-i", &fixture("busybox.oci.tar")]);
        Net { s }
    }

    /// network.json of every network of the store.
    fn networks(&self) -> Vec<Value> {
        std::fs::read_dir(self.s.root().join("networks"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| std::fs::read(e.path().join("network.json")).ok())
            .filter_map(|b| serde_json::from_slice(&b).ok())
            .collect()
    }

    fn network(&self, name: &str) -> Value {
        self.networks()
            .into_iter()
            .find(|n| n["name"] == name)
            .unwrap_or_else(|| panic!("network {name} not found"))
    }

    /// A user network with a subnet unique to this test (hash of the store path
    /// plus `salt`, skipping subnets the host or another test already has).
    fn create_network(&self, name: &str, salt: u64) -> String {
        self.create_network_with(name, salt, &[])
    }

    fn create_network_with(&self, name: &str, salt: u64, extra: &[&str]) -> String {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.s.root().hash(&mut h);
        salt.hash(&mut h);
        let start = h.finish();
        for i in 0..200u64 {
            let v = start.wrapping_add(i.wrapping_mul(7919)) % (51 * 256);
            let subnet = format!("10.{}.{}.0/24", 200 + v / 256, v % 256);
            let mut args = vec!["network", "create", "--subnet", &subnet];
            args.extend_from_slice(extra);
            args.push(name);
            let r = self.s.run(&args);
            if r.code == 0 {
                return subnet;
            }
            assert!(
                r.stderr.contains("overlaps"),
                "network create {name} {subnet}: {}",
                r.stderr
            );
        }
        panic!("no free test subnet");
    }

    fn leases(&self, net: &str) -> usize {
        std::fs::read_dir(self.s.root().join(format!("networks/{net}/ipam/{net}")))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|n| n.parse::<std::net::IpAddr>().is_ok())
            })
            .count()
    }

    fn netns_pins(&self) -> usize {
        std::fs::read_dir(self.s.root().join("netns"))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    fn inspect(&self, name: &str, t: &str) -> String {
        self.s
            .ok(&["inspect", "--format", t, name])
            .trim()
            .to_string()
    }
}

/// Interfaces enslaved to a bridge.
fn ports_of(bridge: &str) -> Vec<String> {
    let out = std::process::Command::new("ip")
        .args(["-o", "link", "show", "master", bridge])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn free_port(udp: bool) -> u16 {
    if udp {
        std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    } else {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }
}

fn mounts_under(p: &std::path::Path) -> Vec<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let p = p.display().to_string();
    info.lines()
        .filter(|l| l.split(' ').nth(4).is_some_and(|m| m.starts_with(&p)))
        .map(str::to_string)
        .collect()
}

#[test]
fn none_has_only_loopback() {
    let s = Net::new();
    let out = s.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "busybox",
        "cat",
        "/proc/net/dev",
    ]);
    let ifaces: Vec<&str> = out
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(ifaces, ["lo"]);
    // lo is up.
    let out = s.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "busybox",
        "ip",
        "-o",
        "link",
    ]);
    assert!(out.contains("LOOPBACK,UP"), "{out}");
    assert_eq!(s.netns_pins(), 0);
}

#[test]
fn default_bridge_gives_eth0_a_route_and_the_files() {
    let s = Net::new();
    let out = s.ok(&[
        "run",
        "--rm",
        "--network",
        "bridge",
        "--hostname",
        "box",
        "--add-host",
        "db:10.9.9.9",
        "--add-host",
        "v6:[fd00::9]",
        "--add-host",
        "host.docker.internal:host-gateway",
        "--dns",
        "10.1.1.1",
        "--dns-search",
        "a.test",
        "--dns-search",
        "b.test",
        "--dns-option",
        "ndots:2",
        "busybox",
        "sh",
        "-c",
        "ip -4 -o addr show eth0; ip route; cat /etc/hosts /etc/resolv.conf /etc/hostname",
    ]);
    let net = s.network("bridge");
    let subnet: &str = net["subnet"].as_str().unwrap();
    let gw = net["gateway"].as_str().unwrap();
    let bridge = net["bridge"].as_str().unwrap();
    assert!(bridge.starts_with("berth"), "{bridge}");
    let addr = out
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .expect("an address on eth0");
    let ip = addr.split('/').next().unwrap();
    let prefix = subnet.split('/').nth(1).unwrap();
    assert!(addr.ends_with(&format!("/{prefix}")), "{addr} in {subnet}");
    let base: Vec<u8> = subnet
        .split('/')
        .next()
        .unwrap()
        .split('.')
        .map(|o| o.parse().unwrap())
        .collect();
    let mine: Vec<u8> = ip.split('.').map(|o| o.parse().unwrap()).collect();
    assert_eq!(base[..2], mine[..2], "{ip} not in {subnet}");
    assert!(out.contains(&format!("default via {gw} dev eth0")), "{out}");
    assert!(out.contains("127.0.0.1\tlocalhost"), "{out}");
    assert!(out.contains(&format!("{ip}\tbox")), "{out}");
    assert!(out.contains("10.9.9.9\tdb"), "{out}");
    assert!(out.contains("fd00::9\tv6"), "{out}");
    // host-gateway: the host's address on the default bridge.
    assert!(
        out.contains(&format!("{gw}\thost.docker.internal")),
        "{out}"
    );
    assert!(out.contains("nameserver 10.1.1.1"), "{out}");
    assert!(out.contains("search a.test b.test\n"), "{out}");
    assert!(out.contains("options ndots:2\n"), "{out}");
    assert!(out.trim_end().ends_with("box"), "{out}");
    // Gone after --rm: lease, veth, pin.
    assert_eq!(s.leases("bridge"), 0);
    assert!(ports_of(bridge).is_empty());
    assert_eq!(s.netns_pins(), 0);
    // `network ls` shows the default network.
    assert!(s.ok(&["network", "ls"]).contains(" bridge "));
}

#[test]
fn containers_on_a_user_network_reach_each_other_by_ip() {
    let s = Net::new();
    let subnet = s.create_network("appnet", 1);
    s.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "appnet",
        "busybox",
        "sh",
        "-c",
        "echo hello-net > /tmp/i; httpd -f -p 80 -h /tmp",
    ]);
    let ip = s.inspect("web", "{{.NetworkSettings.IPAddress}}");
    assert!(
        ip.starts_with(&subnet[..subnet.rfind('.').unwrap()]),
        "{ip} in {subnet}"
    );
    let out = s.ok(&[
        "run",
        "--rm",
        "--network",
        "appnet",
        "busybox",
        "sh",
        "-c",
        &format!("for i in 1 2 3 4 5; do printf 'GET /i HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {ip} 80 && break; sleep 0.2; done"),
    ]);
    assert!(out.contains("hello-net"), "{out}");
    let v: Value = serde_json::from_str(&s.ok(&["network", "inspect", "appnet"])).unwrap();
    assert_eq!(v[0]["IPAM"]["Config"][0]["Subnet"], subnet.as_str());
    assert_eq!(v[0]["Containers"].as_object().unwrap().len(), 1);
    // In use: refused, nothing removed.
    let err = s.fails(&["network", "rm", "appnet"]);
    assert!(err.contains("active endpoints"), "{err}");
    assert!(s.ok(&["network", "ls"]).contains("appnet"));
    s.ok(&["rm", "-f", "web"]);
    assert_eq!(s.leases("appnet"), 0);
    let bridge = s.network("appnet")["bridge"].as_str().unwrap().to_string();
    assert!(ports_of(&bridge).is_empty());
    s.ok(&["network", "rm", "appnet"]);
    assert!(!PathBuf::from("/sys/class/net").join(&bridge).exists());
    assert!(!s.ok(&["network", "ls"]).contains("appnet"));
}

#[test]
fn published_port_reachable_from_the_host() {
    let s = Net::new();
    let port = free_port(false);
    s.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "bridge",
        "-p",
        &format!("127.0.0.1:{port}:80"),
        "-p",
        "127.0.0.1::81",
        "busybox",
        "sh",
        "-c",
        "echo published > /tmp/i; httpd -f -p 80 -h /tmp",
    ]);
    http_get_until(port, "published");
    let p = s.ok(&["port", "web", "80"]);
    assert_eq!(p.trim(), format!("127.0.0.1:{port}"));
    // The random one got a real port.
    let all = s.ok(&["port", "web"]);
    let random = all
        .lines()
        .find_map(|l| l.strip_prefix("81/tcp -> 127.0.0.1:"))
        .expect("81/tcp published");
    assert_ne!(random.parse::<u16>().unwrap(), 0);
    assert_eq!(
        s.inspect("web", "{{json .NetworkSettings.Ports}}"),
        format!(
            r#"{{"80/tcp":[{{"HostIp":"127.0.0.1","HostPort":"{port}"}}],"81/tcp":[{{"HostIp":"127.0.0.1","HostPort":"{random}"}}]}}"#
        )
    );
    s.ok(&["rm", "-f", "web"]);
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    let rules = std::process::Command::new("iptables")
        .args(["-t", "nat", "-S"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&rules.stdout).contains(&format!("--dport {port} ")),
        "port mapping left behind"
    );
}

/// Two free consecutive TCP ports on 127.0.0.1 (the first of them).
fn free_port_pair() -> u16 {
    for _ in 0..100 {
        let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let p = a.local_addr().unwrap().port();
        if p < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
    panic!("no two consecutive free ports");
}

#[test]
fn publish_all_maps_every_exposed_port_and_a_range_maps_in_order() {
    let s = Net::new();
    let ctx = common::scratch();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox\nEXPOSE 80 81/tcp 5353/udp\n",
    )
    .unwrap();
    s.ok(&[
        "build",
        "-q",
        "-t",
        "exposer",
        &ctx.path().display().to_string(),
    ]);
    // -P: each EXPOSEd port on a random host port of its own.
    s.ok(&[
        "run",
        "-d",
        "--name",
        "all",
        "--network",
        "bridge",
        "-P",
        "exposer",
        "sh",
        "-c",
        "echo exposed > /tmp/i; httpd -f -p 80 -h /tmp",
    ]);
    let ports = s.ok(&["port", "all"]);
    let host_port = |spec: &str| -> u16 {
        ports
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{spec} -> ")))
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("{spec} not published: {ports}"))
    };
    let (p80, p81, p53) = (
        host_port("80/tcp"),
        host_port("81/tcp"),
        host_port("5353/udp"),
    );
    assert!(p80 != 0 && p81 != 0 && p53 != 0 && p80 != p81, "{ports}");
    // Bound on every host address, so 127.0.0.1 reaches it too.
    http_get_until(p80, "exposed");
    s.ok(&["rm", "-f", "all"]);
    // A range: host ports P and P+1 to the container's 80 and 81, in order.
    let p = free_port_pair();
    let spec = format!("127.0.0.1:{p}-{}:80-81", p + 1);
    s.ok(&[
        "run",
        "-d",
        "--name",
        "ranged",
        "--network",
        "bridge",
        "-p",
        &spec,
        "busybox",
        "sh",
        "-c",
        "mkdir /tmp/a /tmp/b; echo port-80 > /tmp/a/i; echo port-81 > /tmp/b/i; \
         httpd -p 80 -h /tmp/a; httpd -f -p 81 -h /tmp/b",
    ]);
    assert_eq!(
        s.ok(&["port", "ranged", "81"]).trim(),
        format!("127.0.0.1:{}", p + 1)
    );
    http_get_until(p, "port-80");
    http_get_until(p + 1, "port-81");
    s.ok(&["rm", "-f", "ranged"]);
}

#[test]
fn published_udp_port_reachable_from_the_host() {
    // busybox has no UDP server: the test listens inside the container's own
    // network namespace (a thread that joins it).
    let s = Net::new();
    let port = free_port(true);
    s.ok(&[
        "run",
        "-d",
        "--name",
        "udp",
        "--network",
        "bridge",
        "-p",
        &format!("127.0.0.1:{port}:9999/udp"),
        "busybox",
        "sleep",
        "60",
    ]);
    let ns = s.inspect("udp", "{{.NetworkSettings.SandboxKey}}");
    let (tx, rx) = std::sync::mpsc::channel();
    let listener = std::thread::spawn(move || {
        let f = std::fs::File::open(&ns).unwrap();
        rustix::thread::move_into_link_name_space(
            std::os::fd::AsFd::as_fd(&f),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .unwrap();
        let sock = std::net::UdpSocket::bind("0.0.0.0:9999").unwrap();
        sock.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        tx.send(()).unwrap();
        let mut buf = [0u8; 64];
        let n = sock.recv(&mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    });
    rx.recv().unwrap();
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..20 {
        sock.send_to(b"over-udp", ("127.0.0.1", port)).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        if listener.is_finished() {
            break;
        }
    }
    assert_eq!(listener.join().unwrap(), "over-udp");
}

#[test]
fn host_network_sees_the_hosts_interfaces() {
    let s = Net::new();
    let out = s.ok(&[
        "run",
        "--rm",
        "--network",
        "host",
        "busybox",
        "cat",
        "/proc/net/dev",
    ]);
    let names = |t: &str| -> std::collections::BTreeSet<String> {
        t.lines()
            .skip(2)
            .filter_map(|l| l.split(':').next())
            .map(|n| n.trim().to_string())
            .collect()
    };
    let host = std::fs::read_to_string("/proc/net/dev").unwrap();
    let (theirs, ours) = (names(&out), names(&host));
    // Every interface the container saw is the host's (veths and the bridges
    // of other tests' networks may come and go while parallel tests run).
    assert!(
        theirs.len() > 1
            && theirs
                .iter()
                .all(|n| ours.contains(n)
                    || ["veth", "br-", "berth"].iter().any(|p| n.starts_with(p))),
        "{theirs:?} vs {ours:?}"
    );
    assert!(s.inspect_settings_mode("host"));
}

impl Net {
    fn inspect_settings_mode(&self, want: &str) -> bool {
        let id = self.s.ok(&["create", "--network", want, "busybox", "true"]);
        let mode = self.inspect(id.trim(), "{{.NetworkSettings.NetworkMode}}");
        self.s.ok(&["rm", id.trim()]);
        mode == want
    }
}

#[test]
fn container_mode_shares_a_stack() {
    let s = Net::new();
    s.create_network("shared", 2);
    s.ok(&[
        "run",
        "-d",
        "--name",
        "a",
        "--network",
        "shared",
        "busybox",
        "sleep",
        "60",
    ]);
    let ip = s.inspect("a", "{{.NetworkSettings.IPAddress}}");
    let out = s.ok(&[
        "run",
        "--rm",
        "--network",
        "container:a",
        "busybox",
        "ip",
        "-4",
        "-o",
        "addr",
        "show",
        "eth0",
    ]);
    assert!(out.contains(&format!("inet {ip}/")), "{out}");
}

#[test]
fn two_hundred_cycles_leave_no_lease_veth_pin_or_responder() {
    let s = Net::new();
    s.create_network("cyc", 3);
    let bridge = s.network("cyc")["bridge"].as_str().unwrap().to_string();
    let id = s.ok(&["create", "--network", "cyc", "busybox", "sleep", "30"]);
    s.ok(&["start", id.trim()]);
    assert_eq!(s.leases("cyc"), 1);
    assert_eq!(ports_of(&bridge).len(), 1);
    assert_eq!(s.netns_pins(), 1);
    s.ok(&["rm", "-f", id.trim()]);
    assert_eq!(s.leases("cyc"), 0);
    // 200 cycles in 4 concurrent lanes of 50 (under a minute on 2 busy cores,
    // and attach/detach race each other on the same IPAM store and responder).
    std::thread::scope(|sc| {
        for lane in 0..4 {
            let s = &s;
            sc.spawn(move || {
                for i in 0..50 {
                    let id = s.ok(&["create", "--network", "cyc", "busybox", "sleep", "30"]);
                    let id = id.trim();
                    s.ok(&["start", id]);
                    s.ok(&["rm", "-f", id]);
                    assert!(s.leases("cyc") <= 4, "lane {lane} cycle {i}");
                }
            });
        }
    });
    assert_eq!(s.leases("cyc"), 0);
    assert!(ports_of(&bridge).is_empty());
    assert_eq!(s.netns_pins(), 0);
    assert!(mounts_under(&s.root()).iter().all(|m| !m.contains("nsfs")));
    // The network's DNS responder ends once nothing is attached.
    for _ in 0..60 {
        if s.dns_pid("cyc").is_none() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(s.dns_pid("cyc"), None);
}

#[test]
fn bad_input_is_refused_and_leaves_nothing() {
    let s = Net::new();
    // Unknown network.
    let err = s.fails(&["run", "--rm", "--network", "nope", "busybox", "true"]);
    assert!(err.contains("network nope not found"), "{err}");
    // Invalid port specs.
    for p in ["99999:80", "a:b", "80/sctp"] {
        let err = s.fails(&[
            "run",
            "--rm",
            "--network",
            "bridge",
            "-p",
            p,
            "busybox",
            "true",
        ]);
        assert!(
            err.contains("port specification") || err.contains("proto"),
            "{p}: {err}"
        );
    }
    // A port a host process holds, and one another container publishes.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let spec = format!("127.0.0.1:{port}:80");
    let err = s.fails(&[
        "run",
        "-d",
        "--network",
        "bridge",
        "-p",
        &spec,
        "busybox",
        "true",
    ]);
    assert!(err.contains("failed to bind host port"), "{err}");
    drop(held);
    s.ok(&[
        "run",
        "-d",
        "--name",
        "p1",
        "--network",
        "bridge",
        "-p",
        &spec,
        "busybox",
        "sleep",
        "30",
    ]);
    let err = s.fails(&[
        "run",
        "-d",
        "--network",
        "bridge",
        "-p",
        &spec,
        "busybox",
        "true",
    ]);
    assert!(err.contains("port is already allocated"), "{err}");
    s.ok(&["rm", "-f", "p1"]);
    // Options `run` refuses before anything is made: addresses that are not
    // addresses, --ip and --network-alias off user networks (Docker's rule),
    // MACs that are malformed or multicast or have no network to go on.
    const NOT_UNICAST: &str = "is not a valid unicast MAC address";
    const USER_IP: &str = "user specified IP address is supported on user defined networks only";
    const USER_ALIAS: &str =
        "network-scoped alias is supported only for containers in user defined networks";
    let cases: [(&[&str], &str); 12] = [
        (
            &["--dns", "dns.example"],
            "\"dns.example\" for \"--dns\" flag: dns.example is not an IP address",
        ),
        (
            &["--add-host", "db"],
            "\"db\" for \"--add-host\" flag: expected NAME:IP",
        ),
        (
            &["--add-host", "db:10.0.0.300"],
            "\"10.0.0.300\" is not an IP address",
        ),
        (&["--add-host", ":10.0.0.3"], "invalid host name \"\""),
        (&["--network", "bridge", "--ip", "10.88.0.50"], USER_IP),
        (&["--network", "none", "--ip", "10.88.0.50"], USER_IP),
        (
            &["--network", "bridge", "--network-alias", "svc"],
            USER_ALIAS,
        ),
        (&["--network", "host", "--network-alias", "svc"], USER_ALIAS),
        (&["--mac-address", "02:42:ac:11:00"], NOT_UNICAST),
        (&["--mac-address", "zz:42:ac:11:00:02"], NOT_UNICAST),
        (&["--mac-address", "01:00:5e:00:00:01"], NOT_UNICAST),
        (
            &["--network", "none", "--mac-address", "02:42:ac:11:00:02"],
            "conflicting options: --mac-address and the network mode none",
        ),
    ];
    for (opts, want) in cases {
        let mut args = vec!["run", "--rm"];
        args.extend_from_slice(opts);
        args.extend(["busybox", "true"]);
        let err = s.fails(&args);
        assert!(err.contains(want), "{opts:?}: {err}");
    }
    s.ok(&[
        "run",
        "-d",
        "--name",
        "onbr",
        "--network",
        "bridge",
        "busybox",
        "sleep",
        "30",
    ]);
    let err = s.fails(&["network", "connect", "--ip", "10.88.0.50", "bridge", "onbr"]);
    assert!(err.contains("user specified IP address"), "{err}");
    let err = s.fails(&["network", "connect", "--alias", "svc", "bridge", "onbr"]);
    assert!(err.contains("network-scoped alias"), "{err}");
    s.ok(&["rm", "-f", "onbr"]);
    // Ports with a network mode that has none.
    s.fails(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-p",
        "80",
        "busybox",
        "true",
    ]);
    assert_eq!(s.ok(&["ps", "-aq"]), "");
    // Overlapping subnet: with another network, and with a host route.
    let subnet = s.create_network("first", 4);
    let err = s.fails(&["network", "create", "--subnet", &subnet, "second"]);
    assert!(err.contains("overlaps"), "{err}");
    // A host route (this host has 192.0.2.0/24 or similar on its uplink).
    let routes = std::fs::read_to_string("/proc/net/route").unwrap();
    let host_net = routes.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let len = u32::from_str_radix(f.get(7)?, 16).ok()?.count_ones();
        let dst = u32::from_str_radix(f.get(1)?, 16).ok()?;
        (8..=30)
            .contains(&len)
            .then(|| format!("{}/{len}", std::net::Ipv4Addr::from(u32::from_be(dst))))
    });
    if let Some(net) = host_net {
        let err = s.fails(&["network", "create", "--subnet", &net, "third"]);
        assert!(err.contains("overlaps"), "{net}: {err}");
    }
    assert!(!s.ok(&["network", "ls"]).contains("second"));
    assert!(!s.root().join("networks/second").exists());
    // Bad names and subnets.
    s.fails(&["network", "create", "--subnet", "10.0.0.1/8", "x1"]);
    s.fails(&["network", "create", "bridge"]);
    s.fails(&["network", "rm", "nope"]);
    s.fails(&["network", "rm", "bridge"]);
    assert_eq!(s.netns_pins(), 0);
}

/// The MTU of `dev` as `ip` shows it.
fn mtu_of(dev: &str) -> String {
    let out = std::process::Command::new("ip")
        .args(["-o", "link", "show", "dev", dev])
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&out.stdout).to_string();
    line.split_whitespace()
        .skip_while(|w| *w != "mtu")
        .nth(1)
        .unwrap_or_default()
        .to_string()
}

#[test]
fn a_network_mtu_reaches_the_bridge_and_both_ends_of_each_veth() {
    let s = Net::new();
    // Docker's key; a lower MTU is what a host with a tunnelled uplink needs.
    s.create_network_with("small", 11, &["-o", "com.docker.network.driver.mtu=1400"]);
    // Podman's key; larger than Ethernet's.
    s.create_network_with("jumbo", 12, &["--opt", "mtu=9000"]);
    for (net, mtu) in [("small", "1400"), ("jumbo", "9000")] {
        let opt = s.ok(&[
            "network",
            "inspect",
            "--format",
            "{{index .Options \"com.docker.network.driver.mtu\"}}",
            net,
        ]);
        assert_eq!(opt.trim(), mtu, "{net}");
        let bridge = s.network(net)["bridge"].as_str().unwrap().to_string();
        assert_eq!(mtu_of(&bridge), mtu, "{net}: bridge {bridge}");
        let name = format!("m-{net}");
        s.ok(&[
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            net,
            "busybox",
            "sleep",
            "60",
        ]);
        let inside = s.ok(&["exec", &name, "cat", "/sys/class/net/eth0/mtu"]);
        assert_eq!(inside.trim(), mtu, "{net}: the container's eth0");
        let ports = ports_of(&bridge);
        assert_eq!(ports.len(), 1, "{ports:?}");
        assert!(
            ports[0].contains(&format!(" mtu {mtu} ")),
            "{net}: the host end {}",
            ports[0]
        );
        s.ok(&["rm", "-f", &name]);
    }
    // The default stays Ethernet's.
    let out = s.ok(&[
        "run",
        "--rm",
        "--network",
        "bridge",
        "busybox",
        "cat",
        "/sys/class/net/eth0/mtu",
    ]);
    assert_eq!(out.trim(), "1500");
    // Bad options: a clear error naming the option, and no network left behind.
    for (opt, want) in [
        (
            "com.docker.network.driver.mtu=abc",
            "invalid MTU \"abc\" in network option com.docker.network.driver.mtu",
        ),
        ("mtu=67", "invalid MTU \"67\" in network option mtu"),
        ("mtu=65536", "invalid MTU \"65536\""),
        (
            "com.docker.network.driver.mtux=1400",
            "unsupported network option \"com.docker.network.driver.mtux\"",
        ),
    ] {
        let err = s.fails(&["network", "create", "-o", opt, "badopt"]);
        assert!(err.contains(want), "{opt}: {err}");
        assert!(!s.root().join("networks/badopt").exists(), "{opt}");
    }
    assert!(!s.ok(&["network", "ls"]).contains("badopt"));
}

#[test]
fn mac_address_is_set_by_the_tuning_plugin_and_released() {
    let s = Net::new();
    s.create_network("macnet", 16);
    s.ok(&[
        "run",
        "-d",
        "--name",
        "m1",
        "--network",
        "macnet",
        "--mac-address",
        "02:42:AC:1E:00:07",
        "busybox",
        "sleep",
        "60",
    ]);
    let inside = s.ok(&["exec", "m1", "cat", "/sys/class/net/eth0/address"]);
    assert_eq!(inside.trim(), "02:42:ac:1e:00:07");
    assert_eq!(
        s.inspect("m1", "{{.NetworkSettings.MacAddress}}"),
        "02:42:ac:1e:00:07"
    );
    // Another container reaches it: the bridge learns the new address.
    let ip = s.inspect("m1", "{{.NetworkSettings.IPAddress}}");
    // Docker's idiom for a container's addresses, through `range`.
    assert_eq!(
        s.inspect(
            "m1",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}"
        ),
        ip
    );
    s.ok(&[
        "run",
        "--rm",
        "--network",
        "macnet",
        "busybox",
        "ping",
        "-c1",
        "-W2",
        &ip,
    ]);
    let neigh = s.ok(&[
        "run",
        "--rm",
        "--network",
        "macnet",
        "busybox",
        "sh",
        "-c",
        &format!("ping -c1 -W2 {ip} >/dev/null; cat /proc/net/arp"),
    ]);
    assert!(neigh.contains("02:42:ac:1e:00:07"), "{neigh}");
    // The tuning plugin keeps the interface's old settings while the
    // container runs; its DEL runs with the rest and removes them.
    let id = s.inspect("m1", "{{.Id}}");
    let tuning_state = || -> Vec<String> {
        std::fs::read_dir("/run/cni/tuning")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(&id))
            .collect()
    };
    assert_eq!(tuning_state().len(), 1);
    s.ok(&["rm", "-f", "m1"]);
    assert!(tuning_state().is_empty(), "{:?}", tuning_state());
    assert_eq!(s.leases("macnet"), 0);
}

#[test]
fn network_ls_filters_as_docker_does() {
    let s = Net::new();
    s.create_network_with("front-a", 13, &["--label", "tier=web"]);
    s.create_network_with("front-b", 14, &["--label", "tier=db"]);
    s.create_network("back", 15);
    let ls = |f: &[&str]| {
        let mut args = vec!["network", "ls", "--format", "{{.Name}}"];
        for x in f {
            args.extend(["--filter", x]);
        }
        let mut v: Vec<String> = s.ok(&args).lines().map(str::to_string).collect();
        v.sort();
        v
    };
    assert_eq!(ls(&["name=front"]), ["front-a", "front-b"]);
    // One key's values are alternatives; different keys all apply.
    assert_eq!(ls(&["name=front-a", "name=back"]), ["back", "front-a"]);
    assert_eq!(ls(&["name=front", "label=tier=db"]), ["front-b"]);
    assert_eq!(ls(&["label=tier"]), ["front-a", "front-b"]);
    assert_eq!(ls(&["type=builtin"]), ["bridge"]);
    assert_eq!(
        ls(&["type=custom", "driver=bridge"]),
        ["back", "front-a", "front-b"]
    );
    let id = s.ok(&["network", "inspect", "--format", "{{.Id}}", "back"]);
    let subnet = s.ok(&[
        "network",
        "inspect",
        "--format",
        "{{range .IPAM.Config}}{{.Subnet}}{{end}}",
        "back",
    ]);
    assert_eq!(subnet.trim(), s.network("back")["subnet"].as_str().unwrap());
    assert_eq!(ls(&[&format!("id={}", &id[..8])]), ["back"]);
    let q = s.ok(&["network", "ls", "-q", "--filter", "name=back"]);
    assert_eq!(q.trim(), &id[..12]);
    // Bad filters.
    let err = s.fails(&["network", "ls", "--filter", "colour=red"]);
    assert!(err.contains("invalid filter 'colour'"), "{err}");
    let err = s.fails(&["network", "ls", "--filter", "name"]);
    assert!(err.contains("expected name=value"), "{err}");
    let err = s.fails(&["network", "ls", "--filter", "type=other"]);
    assert!(err.contains("'type'='other'"), "{err}");
}

#[test]
fn network_prune_removes_unused_networks() {
    let s = Net::new();
    s.create_network("used", 5);
    s.create_network("unused", 6);
    s.ok(&[
        "create",
        "--name",
        "c",
        "--network",
        "used",
        "busybox",
        "true",
    ]);
    let out = s.ok(&["network", "prune", "-f"]);
    assert!(out.contains("unused") && !out.contains("\nused"), "{out}");
    let ls = s.ok(&["network", "ls", "--format", "{{.Name}}"]);
    assert_eq!(ls.lines().collect::<Vec<_>>(), ["bridge", "used"]);
    // system prune: the stopped container goes, then the network it used.
    s.create_network("unused2", 7);
    let out = s.ok(&["system", "prune", "-f"]);
    assert!(out.contains("Deleted Networks:\n"), "{out}");
    assert!(
        out.contains("\nused\n") && out.contains("\nunused2\n"),
        "{out}"
    );
    let ls = s.ok(&["network", "ls", "--format", "{{.Name}}"]);
    assert_eq!(ls.lines().collect::<Vec<_>>(), ["bridge"]);
}

#[test]
fn a_dead_monitors_network_is_released_by_rm() {
    let s = Net::new();
    s.create_network("crash", 7);
    let id = s.ok(&["run", "-d", "--network", "crash", "busybox", "sleep", "60"]);
    let id = id.trim();
    assert_eq!(s.leases("crash"), 1);
    let rec: Value = serde_json::from_slice(
        &std::fs::read(s.root().join(format!("containers/{id}/record.json"))).unwrap(),
    )
    .unwrap();
    let monitor = rec["state"]["monitor_pid"].as_i64().unwrap();
    assert!(monitor > 0);
    // SAFETY: kill takes integers; the monitor is this test's own container's.
    unsafe { libc::kill(monitor as i32, libc::SIGKILL) };
    std::thread::sleep(std::time::Duration::from_millis(200));
    // The namespace is still pinned and the lease held until rm cleans up.
    assert_eq!(s.leases("crash"), 1);
    s.ok(&["rm", "-f", id]);
    assert_eq!(s.leases("crash"), 0);
    assert_eq!(s.netns_pins(), 0);
    let bridge = s.network("crash")["bridge"].as_str().unwrap().to_string();
    assert!(ports_of(&bridge).is_empty());
}

#[test]
fn fixed_ip_alias_and_internal_network() {
    let s = Net::new();
    let subnet = s.create_network("plain", 8);
    let ip = format!("{}.77", &subnet[..subnet.rfind('.').unwrap()]);
    let out = s.ok(&[
        "run",
        "--rm",
        "--network",
        "plain",
        "--ip",
        &ip,
        "--hostname",
        "h1",
        "--network-alias",
        "svc",
        "busybox",
        "sh",
        "-c",
        "ip -4 -o addr show eth0; ip route; tail -n1 /etc/hosts",
    ]);
    assert!(out.contains(&format!("inet {ip}/24")), "{out}");
    assert!(out.contains("default via"), "{out}");
    assert!(out.trim_end().ends_with(&format!("{ip}\th1 svc")), "{out}");
    // --ip outside the subnet is refused at create.
    let err = s.fails(&[
        "create",
        "--network",
        "plain",
        "--ip",
        "192.0.2.200",
        "busybox",
    ]);
    assert!(err.contains("subnet"), "{err}");
    // An internal network has no route out.
    s.create_network_with("inner", 9, &["--internal"]);
    assert_eq!(
        s.ok(&["network", "inspect", "--format", "{{.Internal}}", "inner"])
            .trim(),
        "true"
    );
    let out = s.ok(&[
        "run",
        "--rm",
        "--network",
        "inner",
        "busybox",
        "ip",
        "route",
    ]);
    assert!(!out.contains("default"), "{out}");
    assert!(out.contains("dev eth0"), "{out}");
    assert_eq!(s.leases("plain"), 0);
}

impl Net {
    fn gateway(&self, net: &str) -> String {
        self.network(net)["gateway"].as_str().unwrap().to_string()
    }

    /// The PID of a network's DNS responder, if it runs.
    fn dns_pid(&self, net: &str) -> Option<i32> {
        let pid: i32 =
            std::fs::read_to_string(self.s.root().join(format!("networks/{net}/dns.pid")))
                .ok()?
                .trim()
                .parse()
                .ok()?;
        alive(pid).then_some(pid)
    }
}

/// GETs /i from 127.0.0.1:`port` until the answer contains `want` (the
/// server may still be starting); fails the test after ~10 s.
fn http_get_until(port: u16, want: &str) {
    let mut got = String::new();
    for _ in 0..100 {
        use std::io::{Read, Write};
        if let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            c.set_read_timeout(Some(std::time::Duration::from_secs(3)))
                .unwrap();
            let _ = c.write_all(b"GET /i HTTP/1.0\r\n\r\n");
            got.clear();
            let _ = c.read_to_string(&mut got);
            if got.contains(want) {
                return;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("127.0.0.1:{port} never answered with {want:?}: {got}");
}

/// A process that exists and is not a zombie.
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .is_some_and(|r| !r.trim_start().starts_with('Z'))
    })
}

/// `nslookup NAME SERVER` inside a running container: the addresses it printed
/// after the name (empty if it did not resolve).
fn lookup(s: &Net, container: &str, name: &str, server: &str) -> String {
    let r = s.run(&[
        "exec",
        container,
        "sh",
        "-c",
        &format!("timeout 5 nslookup {name} {server}"),
    ]);
    if r.code != 0 {
        return String::new();
    }
    r.stdout
        .split(&format!("Name:\t{name}"))
        .nth(1)
        .or_else(|| r.stdout.split(&format!("Name: {name}")).nth(1))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn names_and_aliases_resolve_on_a_user_network_not_on_bridge() {
    let s = Net::new();
    s.create_network("dnsnet", 10);
    let gw = s.gateway("dnsnet");
    let run = |name: &str, extra: &[&str]| {
        let mut a = vec!["run", "-d", "--name", name, "--network", "dnsnet"];
        a.extend_from_slice(extra);
        a.extend_from_slice(&["busybox", "sleep", "120"]);
        s.ok(&a);
        s.inspect(name, "{{.NetworkSettings.IPAddress}}")
    };
    let web = run("web", &["--network-alias", "websvc"]);
    let _client = run("client", &[]);
    // Started after the client: must resolve too.
    let late = run("late", &["--network-alias", "latesvc"]);
    let resolv = s.ok(&["exec", "client", "cat", "/etc/resolv.conf"]);
    assert!(resolv.contains(&format!("nameserver {gw}")), "{resolv}");
    assert!(lookup(&s, "client", "web", &gw).contains(&web));
    assert!(lookup(&s, "client", "websvc", &gw).contains(&web));
    assert!(lookup(&s, "client", "late", &gw).contains(&late));
    assert!(lookup(&s, "client", "latesvc", &gw).contains(&late));
    let short = s.inspect("late", "{{.Id}}")[..12].to_string();
    assert!(lookup(&s, "client", &short, &gw).contains(&late));
    // Through resolv.conf, as programs do.
    let out = s.ok(&["exec", "client", "ping", "-c1", "-W2", "websvc"]);
    assert!(out.contains(&web), "{out}");
    // Gone with its container.
    s.ok(&["rm", "-f", "late"]);
    assert_eq!(lookup(&s, "client", "late", &gw), "");
    // No names on the default bridge (no responder on its gateway).
    s.ok(&[
        "run",
        "-d",
        "--name",
        "bweb",
        "--network",
        "bridge",
        "busybox",
        "sleep",
        "60",
    ]);
    s.ok(&[
        "run",
        "-d",
        "--name",
        "bcli",
        "--network",
        "bridge",
        "busybox",
        "sleep",
        "60",
    ]);
    let bgw = s.gateway("bridge");
    let resolv = s.ok(&["exec", "bcli", "cat", "/etc/resolv.conf"]);
    assert!(!resolv.contains(&bgw), "{resolv}");
    assert_eq!(lookup(&s, "bcli", "bweb", &bgw), "");
    assert!(s.dns_pid("bridge").is_none());
    // The responder ends once the network has no container left.
    let pid = s.dns_pid("dnsnet").expect("a responder");
    s.ok(&["rm", "-f", "web", "client"]);
    for _ in 0..60 {
        if !alive(pid) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(!alive(pid), "responder {pid} still runs");
}

/// A fake upstream resolver on 127.0.0.1 that answers every A query with
/// 192.0.2.44; returns its address.
fn fake_upstream() -> std::net::SocketAddr {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            if n < 12 {
                continue;
            }
            let mut r = buf[..n].to_vec();
            r[2] |= 0x80; // QR
            r[3] = 0x80; // RA, NOERROR
            let is_a = r[n - 4..n - 2] == [0, 1];
            if is_a {
                r[7] = 1; // ANCOUNT
                r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 44]);
            }
            let _ = sock.send_to(&r, from);
        }
    });
    addr
}

#[test]
fn other_names_are_forwarded_upstream() {
    let s = Net::new();
    s.create_network("fwd", 11);
    let gw = s.gateway("fwd");
    let up = fake_upstream();
    let out = s
        .cmd(&[
            "run",
            "-d",
            "--name",
            "c",
            "--network",
            "fwd",
            "busybox",
            "sleep",
            "60",
        ])
        .env("BERTH_DNS_UPSTREAM", up.to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(lookup(&s, "c", "outside.example", &gw).contains("192.0.2.44"));
}

#[test]
fn connect_and_disconnect_a_running_container() {
    let s = Net::new();
    let sub_b = s.create_network("netb", 12);
    s.create_network("neta", 13);
    s.ok(&[
        "run",
        "-d",
        "--name",
        "srv",
        "--network",
        "netb",
        "busybox",
        "sh",
        "-c",
        "echo on-b > /tmp/i; httpd -f -p 80 -h /tmp",
    ]);
    let srv = s.inspect("srv", "{{.NetworkSettings.IPAddress}}");
    s.ok(&[
        "run",
        "-d",
        "--name",
        "cli",
        "--network",
        "neta",
        "busybox",
        "sleep",
        "120",
    ]);
    let fixed = format!("{}.99", &sub_b[..sub_b.rfind('.').unwrap()]);
    s.ok(&[
        "network", "connect", "--ip", &fixed, "--alias", "clib", "netb", "cli",
    ]);
    let out = s.ok(&["exec", "cli", "ip", "-4", "-o", "addr", "show", "eth1"]);
    assert!(out.contains(&format!("inet {fixed}/24")), "{out}");
    // Its own name resolves to the new address too (/etc/hosts, as Docker).
    let hosts = s.ok(&["exec", "cli", "cat", "/etc/hosts"]);
    let hostname = s.ok(&["exec", "cli", "hostname"]);
    assert!(
        hosts.contains(&format!("{fixed}\t{}", hostname.trim())),
        "{hosts}"
    );
    let out = s.ok(&[
        "exec",
        "cli",
        "sh",
        "-c",
        &format!("for i in 1 2 3 4 5; do printf 'GET /i HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {srv} 80 && break; sleep 0.2; done; ip route"),
    ]);
    assert!(out.contains("on-b"), "{out}");
    // The default route stays the first network's.
    assert_eq!(out.matches("default via").count(), 1, "{out}");
    // inspect shows both networks; the network shows the container.
    let nets = s.inspect("cli", "{{json .NetworkSettings.Networks}}");
    let v: Value = serde_json::from_str(&nets).unwrap();
    assert!(!v["neta"]["IPAddress"].as_str().unwrap().is_empty());
    assert_eq!(v["netb"]["IPAddress"], fixed.as_str());
    let v: Value = serde_json::from_str(&s.ok(&["network", "inspect", "netb"])).unwrap();
    assert_eq!(v[0]["Containers"].as_object().unwrap().len(), 2);
    // Names on netb include the connected container's alias.
    let gwb = s.gateway("netb");
    let got = lookup(&s, "srv", "clib", &gwb);
    assert!(
        got.contains(&fixed),
        "{got:?} {:?} {:?}",
        {
            let r = s.run(&["exec", "srv", "nslookup", "clib", &gwb]);
            (r.code, r.stdout, r.stderr)
        },
        s.dns_pid("netb")
    );
    // Bad input.
    let err = s.fails(&["network", "connect", "netb", "cli"]);
    assert!(err.contains("already exists"), "{err}");
    let err = s.fails(&["network", "connect", "nope", "cli"]);
    assert!(err.contains("not found"), "{err}");
    // A network in use by a connected container cannot be removed.
    s.fails(&["network", "rm", "netb"]);
    assert_eq!(s.leases("netb"), 2);
    s.ok(&["network", "disconnect", "netb", "cli"]);
    let out = s.ok(&["exec", "cli", "ip", "-o", "link"]);
    assert!(!out.contains("eth1"), "{out}");
    assert!(!s.ok(&["exec", "cli", "cat", "/etc/hosts"]).contains(&fixed));
    assert_eq!(s.leases("netb"), 1);
    let err = s.fails(&["network", "disconnect", "netb", "cli"]);
    assert!(err.contains("not connected"), "{err}");
    s.ok(&["network", "disconnect", "-f", "netb", "cli"]);
    // Connected, then removed without disconnecting: every attachment is released.
    s.ok(&["network", "connect", "netb", "cli"]);
    assert_eq!(s.leases("netb"), 2);
    s.ok(&["rm", "-f", "cli"]);
    assert_eq!(s.leases("netb"), 1);
    assert_eq!(s.leases("neta"), 0);
    let bridge = s.network("neta")["bridge"].as_str().unwrap().to_string();
    assert!(ports_of(&bridge).is_empty());
}

/// `--isolation vm` joins the same networks: its tap is joined to the CNI
/// interface of the hypervisor's namespace. Names resolve both ways, `-p`
/// reaches the guest from 127.0.0.1, and everything is released with it.
#[test]
fn a_vm_joins_user_networks_and_publishes_ports() {
    let s = Net::new();
    // Jumbo frames: the guest's NIC and its tap get the network's MTU.
    s.create_network_with("vmnet", 30, &["-o", "mtu=9000"]);
    let port = free_port(false);
    s.ok(&[
        "run",
        "-d",
        "--isolation",
        "vm",
        "--name",
        "vmweb",
        "--network",
        "vmnet",
        "--network-alias",
        "vmsvc",
        "-p",
        &format!("127.0.0.1:{port}:80"),
        "busybox",
        "sh",
        "-c",
        "echo served-by-a-vm > /tmp/i; dd if=/dev/zero of=/tmp/big bs=1k count=300 2>/dev/null; httpd -f -p 80 -h /tmp",
    ]);
    let vm_ip = s.inspect("vmweb", "{{.NetworkSettings.IPAddress}}");
    assert!(!vm_ip.is_empty());
    // The guest has the address CNI gave, and a default route via the gateway.
    let addr = s.ok(&["exec", "vmweb", "ip", "-4", "addr", "show", "eth0"]);
    assert!(addr.contains(&format!("inet {vm_ip}/")), "{addr}");
    let gw = s.gateway("vmnet");
    assert!(
        s.ok(&["exec", "vmweb", "ip", "route"])
            .contains(&format!("default via {gw}"))
    );
    // From the host, through the published port.
    http_get_until(port, "served-by-a-vm");
    // A container reaches the VM by its name and alias; the VM resolves the container.
    s.ok(&[
        "run",
        "-d",
        "--name",
        "ctr",
        "--network",
        "vmnet",
        "busybox",
        "sleep",
        "120",
    ]);
    let ctr_ip = s.inspect("ctr", "{{.NetworkSettings.IPAddress}}");
    for name in ["vmweb", "vmsvc"] {
        let page = s.ok(&["exec", "ctr", "wget", "-qO-", &format!("http://{name}/i")]);
        assert_eq!(page, "served-by-a-vm\n", "{name}");
    }
    let out = s.ok(&["exec", "vmweb", "ping", "-c1", "-W2", "ctr"]);
    assert!(out.contains(&ctr_ip), "{out}");
    for n in ["vmweb", "ctr"] {
        let mtu = s.ok(&["exec", n, "cat", "/sys/class/net/eth0/mtu"]);
        assert_eq!(mtu.trim(), "9000", "{n}");
    }
    // Full-size frames cross the tap both ways: 300 KiB each way in segments
    // of up to 8960 bytes (a tap that dropped them would stall the transfer).
    let big = s.ok(&[
        "exec",
        "ctr",
        "sh",
        "-c",
        "wget -qO- http://vmweb/big | wc -c",
    ]);
    assert_eq!(big.trim(), "307200");
    // busybox's nc ends a connection at EOF on its own stdin: give the
    // listener one that stays open.
    s.ok(&[
        "exec",
        "-d",
        "vmweb",
        "sh",
        "-c",
        "sleep 120 | nc -l -p 81 > /tmp/up",
    ]);
    let sent = s.run(&[
        "exec",
        "ctr",
        "sh",
        "-c",
        "for i in $(seq 50); do dd if=/dev/zero bs=1k count=300 2>/dev/null | nc -w 5 vmweb 81 && exit 0; sleep 0.1; done; exit 1",
    ]);
    assert_eq!(sent.code, 0, "upload to the VM: {}", sent.stderr);
    // The sender is done once its data is sent; the guest's nc may still be
    // writing it out.
    let got = s.ok(&[
        "exec",
        "vmweb",
        "sh",
        "-c",
        "for i in $(seq 100); do [ $(wc -c < /tmp/up) -ge 307200 ] && break; sleep 0.1; done; wc -c < /tmp/up",
    ]);
    assert_eq!(got.trim(), "307200");
    // A second VM of the same shape resumes the guest saved by the first
    // one's start, yet has a MAC address of its own and reaches the first.
    s.ok(&[
        "run",
        "-d",
        "--isolation",
        "vm",
        "--name",
        "vm2",
        "--network",
        "vmnet",
        "--mac-address",
        "02:42:0A:00:00:42",
        "busybox",
        "sleep",
        "120",
    ]);
    let mac = |n: &str| s.ok(&["exec", n, "cat", "/sys/class/net/eth0/address"]);
    let (m1, m2) = (mac("vmweb"), mac("vm2"));
    assert_ne!(m1, m2);
    assert_ne!(m1.trim(), "02:00:00:00:00:01", "not the template's");
    // The one asked for, in the guest and in inspect.
    assert_eq!(m2.trim(), "02:42:0a:00:00:42");
    assert_eq!(
        s.inspect("vm2", "{{.NetworkSettings.MacAddress}}"),
        "02:42:0a:00:00:42"
    );
    let page = s.ok(&["exec", "vm2", "wget", "-qO-", "http://vmweb/i"]);
    assert_eq!(page, "served-by-a-vm\n");
    s.ok(&["rm", "-f", "vm2"]);
    // Its one NIC is fixed at boot: connecting another network is refused.
    s.create_network("vmnet2", 31);
    let e = s.fails(&["network", "connect", "vmnet2", "vmweb"]);
    assert!(e.contains("runs in a VM"), "{e}");
    // Released with the VM: no netns pin, no lease, no host port.
    let id = s.inspect("vmweb", "{{.Id}}");
    s.ok(&["rm", "-f", "vmweb"]);
    assert!(!s.root().join("netns").join(&id).exists());
    assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());
}

/// The responder serves from a worker its watchdog restarts: killing the
/// worker does not take the network's names away.
#[test]
fn a_killed_dns_worker_is_restarted() {
    let s = Net::new();
    s.create_network("wdnet", 40);
    let gw = s.gateway("wdnet");
    for name in ["a", "b"] {
        s.ok(&[
            "run",
            "-d",
            "--name",
            name,
            "--network",
            "wdnet",
            "busybox",
            "sleep",
            "120",
        ]);
    }
    let b = s.inspect("b", "{{.NetworkSettings.IPAddress}}");
    assert!(lookup(&s, "a", "b", &gw).contains(&b));
    let watchdog = s.dns_pid("wdnet").expect("a responder");
    let workers = |pid: i32| -> Vec<i32> {
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    };
    let first = workers(watchdog);
    assert_eq!(first.len(), 1, "one worker: {first:?}");
    // SAFETY: kill takes integers; the worker is a process this test's berth started.
    unsafe { libc::kill(first[0], libc::SIGKILL) };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let now = workers(watchdog);
        if now.len() == 1 && now[0] != first[0] && lookup(&s, "a", "b", &gw).contains(&b) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "names did not come back: {now:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(s.dns_pid("wdnet"), Some(watchdog), "the same watchdog");
}
