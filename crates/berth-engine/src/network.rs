//! Container networking in the engine: `--network` modes, the files a
//! container's resolver reads (/etc/hosts, /etc/hostname, /etc/resolv.conf),
//! and attaching/detaching a started container through CNI.
//!
//! Lifecycle: `create` validates the mode and the `-p` specs and writes the
//! three files into the container directory (bind-mounted read-write, as
//! Docker does). The monitor, in the runtime's `before_start` hook (the child
//! exists in its new network namespace but waits), pins the namespace at
//! `<root>/netns/<id>`, runs CNI ADD there and rewrites /etc/hosts with the
//! address; the state goes to `<container>/net.json`. When the process exits
//! (and on `rm`, for a container whose monitor died), [`detach`] runs CNI DEL,
//! which releases the lease, veth and port mappings, and unmounts the pin.
//!
//! `network connect` adds eth1, eth2… to a running container (CNI ADD in the
//! pin, [`Link`]s in net.json's `connected`); `network disconnect` and
//! [`detach`] DEL them. On user networks (not `bridge`) containers resolve
//! each other by name through the network's DNS responder ([`dns`]), which
//! their resolv.conf names (the gateway).

use std::fs;
use std::path::{Path, PathBuf};

use berth_net::cni::{self, CniResult};
use berth_net::{NetError, Networks, PortMapping, netns, ports};
use oci_spec::runtime::{LinuxNamespaceBuilder, LinuxNamespaceType, Mount, MountBuilder, Spec};
use serde::{Deserialize, Serialize};

use crate::Engine;
use crate::containers::{Container, Status};

pub mod dns;
use crate::spec::{RunOptions, SpecError};

/// The interface name inside the container.
pub const IFNAME: &str = "eth0";

/// `--network`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Only a loopback interface.
    None,
    /// The host's stack (no network namespace).
    Host,
    /// Another container's namespace.
    Container(String),
    /// A CNI network by name (`bridge` is the default one).
    Network(String),
}

impl Mode {
    /// Reads `--network` (absent or `default`: `bridge`, as Docker).
    pub fn parse(s: Option<&str>) -> Mode {
        match s {
            Some("none") => Mode::None,
            Some("host") => Mode::Host,
            None | Some("") | Some("default") => Mode::Network(berth_net::networks::DEFAULT.into()),
            Some(s) => match s.strip_prefix("container:") {
                Some(c) => Mode::Container(c.to_string()),
                None => Mode::Network(s.to_string()),
            },
        }
    }

    /// The name Docker shows (`NetworkMode`).
    pub fn name(&self) -> String {
        match self {
            Mode::None => "none".into(),
            Mode::Host => "host".into(),
            Mode::Container(c) => format!("container:{c}"),
            Mode::Network(n) => n.clone(),
        }
    }
}

/// One further network a running container was connected to (`network
/// connect`): its interface is eth1, eth2…
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Link {
    /// Network name.
    pub network: String,
    /// Network ID.
    pub network_id: String,
    /// Interface inside the container.
    pub ifname: String,
    /// Address.
    pub ip: String,
    /// Prefix length.
    pub prefix: u8,
    /// Gateway.
    pub gateway: String,
    /// MAC address.
    pub mac: String,
    /// `--alias`es on this network.
    pub aliases: Vec<String>,
    /// `--ip` asked for.
    pub requested_ip: Option<String>,
    /// The CNI result (DEL's prevResult).
    pub result: Option<CniResult>,
}

/// A running container's network state (`<container>/net.json`): the network
/// it was started on (eth0, the top-level fields) and the ones connected since
/// (`connected`, eth1…). CNI DEL runs for every one of them on stop/rm.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct NetState {
    /// Network name.
    pub network: String,
    /// Network ID.
    pub network_id: String,
    /// The pinned namespace.
    pub netns: PathBuf,
    /// Address.
    pub ip: String,
    /// Prefix length.
    pub prefix: u8,
    /// Gateway.
    pub gateway: String,
    /// MAC address.
    pub mac: String,
    /// Published ports (host ports assigned).
    pub ports: Vec<PortMapping>,
    /// The CNI result (DEL's prevResult).
    pub result: Option<CniResult>,
    /// Networks connected while running (`network connect`).
    pub connected: Vec<Link>,
    /// eth0's MTU when the network sets one (0: the default).
    #[serde(default)]
    pub mtu: u32,
    /// The `--mac-address` the tuning plugin gave eth0 ("" for none): its
    /// DEL must run too.
    #[serde(default)]
    pub tuned_mac: String,
}

impl NetState {
    /// Every attachment as a [`Link`]: eth0 first (with `aliases`, the
    /// container's `--network-alias`), then the connected ones.
    pub fn links(&self, aliases: &[String]) -> Vec<Link> {
        let mut out = Vec::new();
        if !self.network.is_empty() {
            out.push(Link {
                network: self.network.clone(),
                network_id: self.network_id.clone(),
                ifname: IFNAME.into(),
                ip: self.ip.clone(),
                prefix: self.prefix,
                gateway: self.gateway.clone(),
                mac: self.mac.clone(),
                aliases: aliases.to_vec(),
                requested_ip: None,
                result: self.result.clone(),
            });
        }
        out.extend(self.connected.iter().cloned());
        out
    }
}

fn net_err(e: NetError) -> SpecError {
    SpecError(e.to_string())
}

fn io(p: &Path) -> impl Fn(std::io::Error) -> SpecError + '_ {
    move |e| SpecError(format!("{}: {e}", p.display()))
}

/// Files the container gets at `/etc/*` from its directory.
const FILES: [(&str, &str); 3] = [
    ("hosts", "/etc/hosts"),
    ("hostname", "/etc/hostname"),
    ("resolv.conf", "/etc/resolv.conf"),
];

/// What `create` needs for a container's network.
pub struct Plan {
    mode: Mode,
    /// Namespace path to join (container: mode).
    join: Option<PathBuf>,
    /// The network's DNS responder (user networks: the gateway).
    nameserver: Option<String>,
}

impl Engine {
    /// The networks of this store.
    pub fn networks(&self) -> Networks {
        Networks::new(self.root())
    }

    /// Where a container's namespace is pinned.
    pub fn netns_path(&self, id: &str) -> PathBuf {
        self.root().join("netns").join(id)
    }

    /// Names of containers (any state) attached to a network: started on it,
    /// or connected to it while running.
    pub fn network_users(&self, name: &str) -> Vec<String> {
        self.containers()
            .list()
            .unwrap_or_default()
            .into_iter()
            .filter(|c| {
                Mode::parse(c.options.network.as_deref()) == Mode::Network(name.into())
                    || self
                        .net_state(&c.id)
                        .is_some_and(|s| s.connected.iter().any(|l| l.network == name))
            })
            .map(|c| c.name)
            .collect()
    }

    /// A container's network state, if it is attached.
    pub fn net_state(&self, id: &str) -> Option<NetState> {
        let b = fs::read(self.containers().dir(id).join("net.json")).ok()?;
        serde_json::from_slice(&b).ok()
    }
}

/// Checks the network options at `create` (unknown network, bad `-p`,
/// `--ip` outside the subnet, a container to join that does not exist).
pub fn plan(engine: &Engine, o: &RunOptions) -> Result<Plan, SpecError> {
    let mode = Mode::parse(o.network.as_deref());
    for d in &o.dns {
        if d.parse::<std::net::IpAddr>().is_err() {
            return Err(SpecError(format!(
                "invalid argument \"{d}\" for \"--dns\" flag: {d} is not an IP address"
            )));
        }
    }
    for h in &o.add_host {
        add_host_entry(h)?;
    }
    // As Docker: the default network has no fixed addresses nor aliases, and
    // the other modes no network to have them on.
    let user_network = matches!(&mode, Mode::Network(n) if n != berth_net::networks::DEFAULT);
    if o.ip.is_some() && !user_network {
        return Err(SpecError(USER_IP_ONLY.into()));
    }
    if !o.network_alias.is_empty() && !user_network {
        return Err(SpecError(USER_ALIAS_ONLY.into()));
    }
    if let Some(m) = &o.mac_address {
        if !valid_mac(m) {
            return Err(SpecError(format!(
                "invalid argument \"{m}\" for \"--mac-address\" flag: {m} is not a valid unicast MAC address"
            )));
        }
        if !matches!(mode, Mode::Network(_)) {
            return Err(SpecError(format!(
                "conflicting options: --mac-address and the network mode {}",
                mode.name()
            )));
        }
    }
    let mut wanted = Vec::new();
    for p in &o.publish {
        wanted.extend(ports::parse(p).map_err(net_err)?);
    }
    check_ports_free(engine, &wanted)?;
    let mut join = None;
    let mut nameserver = None;
    match &mode {
        Mode::Network(n) => {
            let net = if n == berth_net::networks::DEFAULT {
                engine.networks().ensure_default().map_err(net_err)?
            } else {
                engine.networks().get(n).map_err(net_err)?
            };
            if net.name != berth_net::networks::DEFAULT {
                nameserver = Some(net.gateway.clone());
            }
            if let Some(ip) = &o.ip {
                let a: std::net::Ipv4Addr = ip
                    .parse()
                    .map_err(|_| SpecError(format!("invalid IPv4 address: {ip}")))?;
                if !net.net().is_some_and(|s| s.contains(a)) {
                    return Err(SpecError(format!(
                        "invalid address {ip}: it does not belong to the network's subnet {}",
                        net.subnet
                    )));
                }
            }
        }
        Mode::Container(c) => {
            let other = engine
                .containers()
                .resolve(c)
                .map_err(|e| SpecError(e.to_string()))?;
            if other.options.isolation == crate::containers::vm::Isolation::Vm {
                // A VM's stack is inside the guest; its hypervisor's namespace
                // (the host's, without a network) is nothing to share.
                return Err(SpecError(format!(
                    "--network container:{c}: {c} runs in a VM, whose network stack cannot be shared"
                )));
            }
            if o.isolation == crate::containers::vm::Isolation::Vm {
                return Err(SpecError(format!(
                    "--network container:{c} with --isolation vm: a VM has its own network stack"
                )));
            }
            join = Some(match Mode::parse(other.options.network.as_deref()) {
                Mode::Network(_) => engine.netns_path(&other.id),
                // Without a pinned namespace, the one its process has.
                _ => PathBuf::from(format!("/proc/{}/ns/net", other.state.pid)),
            });
        }
        Mode::None | Mode::Host => {}
    }
    if !o.publish.is_empty() && !matches!(mode, Mode::Network(_)) {
        return Err(SpecError(format!(
            "published ports are discarded when using {} network mode",
            mode.name()
        )));
    }
    Ok(Plan {
        mode,
        join,
        nameserver,
    })
}

/// Refuses fixed host ports another container publishes or a host process
/// holds (Docker's "port is already allocated").
fn check_ports_free(engine: &Engine, wanted: &[PortMapping]) -> Result<(), SpecError> {
    let fixed: Vec<PortMapping> = wanted
        .iter()
        .filter(|m| m.host_port != 0)
        .cloned()
        .collect();
    if fixed.is_empty() {
        return Ok(());
    }
    let clash = |a: &PortMapping, b: &PortMapping| {
        a.host_port == b.host_port
            && a.protocol == b.protocol
            && (a.host_ip.is_empty() || b.host_ip.is_empty() || a.host_ip == b.host_ip)
    };
    for c in engine.containers().list().unwrap_or_default() {
        let Some(st) = engine.net_state(&c.id) else {
            continue;
        };
        if let Some(m) = fixed.iter().find(|m| st.ports.iter().any(|p| clash(m, p))) {
            return Err(SpecError(format!(
                "Bind for {}:{} failed: port is already allocated (by container {})",
                if m.host_ip.is_empty() {
                    "0.0.0.0"
                } else {
                    &m.host_ip
                },
                m.host_port,
                c.name
            )));
        }
    }
    ports::assign_random(&mut fixed.clone()).map_err(net_err)
}

impl Plan {
    /// Bind mounts of the generated files, except where the user mounts something.
    pub fn mounts(&self, dir: &Path, user: &[Mount]) -> Vec<Mount> {
        FILES
            .iter()
            .filter(|(_, dest)| !user.iter().any(|m| m.destination() == Path::new(dest)))
            .map(|(file, dest)| {
                MountBuilder::default()
                    .destination(*dest)
                    .typ("bind")
                    .source(dir.join(file))
                    .options(vec!["rbind".to_string(), "rprivate".to_string()])
                    .build()
                    .expect("a bind mount")
            })
            .collect()
    }

    /// Sets the spec's network namespace for the mode.
    pub fn apply(&self, spec: &mut Spec) {
        let Some(linux) = spec.linux_mut() else {
            return;
        };
        let mut nss = linux.namespaces().clone().unwrap_or_default();
        nss.retain(|n| n.typ() != LinuxNamespaceType::Network);
        match (&self.mode, &self.join) {
            (Mode::Host, _) => {}
            (_, Some(path)) => nss.push(
                LinuxNamespaceBuilder::default()
                    .typ(LinuxNamespaceType::Network)
                    .path(path)
                    .build()
                    .expect("namespace"),
            ),
            _ => nss.push(
                LinuxNamespaceBuilder::default()
                    .typ(LinuxNamespaceType::Network)
                    .build()
                    .expect("namespace"),
            ),
        }
        linux.set_namespaces(Some(nss));
    }

    /// Writes /etc/hosts, /etc/hostname and /etc/resolv.conf into `dir`.
    pub fn write_files(&self, dir: &Path, o: &RunOptions, hostname: &str) -> Result<(), SpecError> {
        let p = dir.join("hosts");
        fs::write(&p, hosts(o, hostname, None, self.mode == Mode::Host)).map_err(io(&p))?;
        let p = dir.join("hostname");
        fs::write(&p, format!("{hostname}\n")).map_err(io(&p))?;
        let p = dir.join("resolv.conf");
        let host = fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        // On a user network the network's responder (which forwards what is
        // not a container's name), unless --dns says otherwise.
        let dns = match &self.nameserver {
            Some(gw) if o.dns.is_empty() => vec![gw.clone()],
            _ => o.dns.clone(),
        };
        let r = Resolver {
            servers: &dns,
            search: &o.dns_search,
            options: &o.dns_option,
        };
        fs::write(&p, resolv_conf(&host, &r, self.mode == Mode::Host)).map_err(io(&p))
    }
}

/// Docker's refusals of `--ip` and `--network-alias` off user networks.
const USER_IP_ONLY: &str = "user specified IP address is supported on user defined networks only";
const USER_ALIAS_ONLY: &str =
    "network-scoped alias is supported only for containers in user defined networks";

/// Six colon-separated hex octets, not a multicast address.
pub fn valid_mac(m: &str) -> bool {
    let octets: Vec<&str> = m.split(':').collect();
    octets.len() == 6
        && octets
            .iter()
            .all(|o| o.len() == 2 && o.bytes().all(|b| b.is_ascii_hexdigit()))
        && u8::from_str_radix(octets[0], 16).is_ok_and(|b| b & 1 == 0)
}

/// The list with the tuning plugin after the bridge, and `rc` with its
/// `mac`, when the container asked for a MAC address (`mac` not empty).
fn with_tuned_mac(
    mut list: serde_json::Value,
    mac: &str,
    rc: &mut serde_json::Map<String, serde_json::Value>,
) -> serde_json::Value {
    if !mac.is_empty()
        && let Some(ps) = list.get_mut("plugins").and_then(|p| p.as_array_mut())
    {
        let at = 1.min(ps.len());
        ps.insert(
            at,
            serde_json::json!({"type": "tuning", "capabilities": {"mac": true}}),
        );
        rc.insert("mac".into(), mac.into());
    }
    list
}

/// The value `--add-host NAME:host-gateway` stands for.
pub const HOST_GATEWAY: &str = "host-gateway";

/// One `--add-host` as (name, address): `NAME:IP` (or Docker's older
/// `NAME=IP`), the IP v4 or v6.
fn add_host_entry(h: &str) -> Result<(&str, &str), SpecError> {
    let bad = |why: String| {
        SpecError(format!(
            "invalid argument \"{h}\" for \"--add-host\" flag: {why}"
        ))
    };
    let (name, addr) = h
        .split_once(':')
        .or_else(|| h.split_once('='))
        .ok_or_else(|| bad("expected NAME:IP".into()))?;
    if name.is_empty() || name.chars().any(char::is_whitespace) {
        return Err(bad(format!("invalid host name \"{name}\"")));
    }
    // [::1] as Docker takes it, too.
    let addr = addr.trim_start_matches('[').trim_end_matches(']');
    if addr.parse::<std::net::IpAddr>().is_err() {
        return Err(bad(format!(
            "\"{addr}\" is not an IP address (nor {HOST_GATEWAY})"
        )));
    }
    Ok((name, addr))
}

/// `--add-host NAME:host-gateway` names the host's address on the default
/// `bridge` network (Docker's docker0 address), reachable from every
/// container; replaced here, at create, by that address.
pub fn resolve_host_gateway(engine: &Engine, o: &mut RunOptions) -> Result<(), SpecError> {
    let suffix = format!(":{HOST_GATEWAY}");
    if !o.add_host.iter().any(|h| h.ends_with(&suffix)) {
        return Ok(());
    }
    let gw = engine.networks().ensure_default().map_err(net_err)?.gateway;
    for h in &mut o.add_host {
        if let Some(name) = h.strip_suffix(&suffix) {
            *h = format!("{name}:{gw}");
        }
    }
    Ok(())
}

/// Docker's /etc/hosts: localhost, the container's address and name, `--add-host`.
pub fn hosts(o: &RunOptions, hostname: &str, ip: Option<&str>, host_mode: bool) -> String {
    let mut s = if host_mode {
        fs::read_to_string("/etc/hosts").unwrap_or_default()
    } else {
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n"
            .to_string()
    };
    if !s.is_empty() && !s.ends_with('\n') {
        s.push('\n');
    }
    for h in &o.add_host {
        if let Ok((name, addr)) = add_host_entry(h) {
            s.push_str(&format!("{addr}\t{name}\n"));
        }
    }
    if let Some(ip) = ip {
        let aliases = o.network_alias.join(" ");
        s.push_str(format!("{ip}\t{hostname} {aliases}").trim_end());
        s.push('\n');
    }
    s
}

/// What `--dns`, `--dns-search` and `--dns-option` ask of resolv.conf.
#[derive(Default)]
pub struct Resolver<'a> {
    /// Name servers (empty: the host's).
    pub servers: &'a [String],
    /// Search domains (empty: the host's; `.` alone: none).
    pub search: &'a [String],
    /// Options (empty: the host's).
    pub options: &'a [String],
}

/// resolv.conf from the host's: its resolvers unless they are loopback
/// addresses (unreachable from a namespace; Google's then, as Docker does),
/// and its `search`/`domain`/`options` lines, each replaced by what `r` gives.
pub fn resolv_conf(host: &str, r: &Resolver, host_mode: bool) -> String {
    if host_mode && r.servers.is_empty() && r.search.is_empty() && r.options.is_empty() {
        return host.to_string();
    }
    let mut servers: Vec<String> = Vec::new();
    let mut other = Vec::new();
    for l in host.lines() {
        let l = l.trim();
        match l.split_whitespace().collect::<Vec<_>>().as_slice() {
            ["nameserver", ns, ..] if !ns.starts_with("127.") && *ns != "::1" => {
                servers.push(ns.to_string())
            }
            ["nameserver", ..] => {}
            ["search" | "domain", ..] if !r.search.is_empty() => {}
            ["options", ..] if !r.options.is_empty() => {}
            [k, ..] if *k == "search" || *k == "options" || *k == "domain" => {
                other.push(l.to_string())
            }
            _ => {}
        }
    }
    if r.search.iter().any(|d| d != ".") {
        let domains: Vec<&str> = r
            .search
            .iter()
            .map(String::as_str)
            .filter(|d| *d != ".")
            .collect();
        other.push(format!("search {}", domains.join(" ")));
    }
    if !r.options.is_empty() {
        other.push(format!("options {}", r.options.join(" ")));
    }
    if !r.servers.is_empty() {
        servers = r.servers.to_vec();
    } else if servers.is_empty() {
        servers = vec!["8.8.8.8".into(), "8.8.4.4".into()];
    }
    let mut s = String::new();
    for o in other {
        s.push_str(&o);
        s.push('\n');
    }
    for ns in servers {
        s.push_str(&format!("nameserver {ns}\n"));
    }
    s
}

/// Sets up a started (still waiting) container's network: called from the
/// runtime's `before_start` hook with the container's PID.
pub fn attach(engine: &Engine, c: &Container, pid: i32) -> Result<(), String> {
    let mode = Mode::parse(c.options.network.as_deref());
    let Mode::Network(name) = mode else {
        if mode == Mode::None {
            let ns = PathBuf::from(format!("/proc/{pid}/ns/net"));
            netns::loopback_up(&ns).map_err(|e| e.to_string())?;
        }
        return Ok(());
    };
    let r = (|| -> Result<(), String> {
        let nets = engine.networks();
        let net = if name == berth_net::networks::DEFAULT {
            nets.ensure_default()
        } else {
            nets.get(&name)
        }
        .map_err(|e| e.to_string())?;
        let list = nets.conflist(&net).map_err(|e| e.to_string())?;
        let path = engine.netns_path(&c.id);
        netns::pin(pid, &path).map_err(|e| e.to_string())?;
        let mut ports = Vec::new();
        for p in &c.options.publish {
            ports.extend(ports::parse(p).map_err(|e| e.to_string())?);
        }
        ports::assign_random(&mut ports).map_err(|e| e.to_string())?;
        let mut state = NetState {
            network: net.name.clone(),
            network_id: net.id.clone(),
            netns: path.clone(),
            ports: ports.clone(),
            mtu: net.mtu.unwrap_or(0),
            tuned_mac: c
                .options
                .mac_address
                .as_deref()
                .unwrap_or_default()
                .to_ascii_lowercase(),
            ..Default::default()
        };
        // Recorded before ADD, so a DEL follows even if the monitor dies half-way.
        write_state(engine, &c.id, &state)?;
        let mut rc = serde_json::Map::new();
        if !ports.is_empty() {
            rc.insert(
                "portMappings".into(),
                serde_json::to_value(&ports).expect("json"),
            );
        }
        let list = without_unused_portmap(list, &ports);
        let mut list = with_tuned_mac(list, &state.tuned_mac, &mut rc);
        if let Some(ip) = &c.options.ip {
            // host-local takes a requested address from the `ips` runtime config / args.
            list["plugins"][0]["ipam"]["ranges"][0][0]["rangeStart"] = ip.clone().into();
            list["plugins"][0]["ipam"]["ranges"][0][0]["rangeEnd"] = ip.clone().into();
        }
        let a = cni::Attachment {
            container_id: &c.id,
            netns: &path,
            ifname: IFNAME,
            runtime_config: rc,
        };
        let result = cni::add(&list, &a).map_err(|e| e.to_string())?;
        netns::loopback_up(&path).map_err(|e| e.to_string())?;
        if let Some((ip, prefix, gw, mac)) = result.address_of(IFNAME) {
            state.ip = ip;
            state.prefix = prefix;
            state.gateway = if gw.is_empty() {
                net.gateway.clone()
            } else {
                gw
            };
            state.mac = mac;
        }
        if !state.tuned_mac.is_empty() {
            state.mac = state.tuned_mac.clone();
        }
        state.result = Some(result);
        write_state(engine, &c.id, &state)?;
        if net.name != berth_net::networks::DEFAULT {
            // Name resolution: the network's responder, started if it does not
            // run. Not fatal: the container works without names (the reason
            // is in the network's dns.err).
            let _ = dns::ensure(engine, &net.name);
        }
        let dir = engine.containers().dir(&c.id);
        let hostname = fs::read_to_string(dir.join("hostname")).unwrap_or_default();
        let hs = hosts(&c.options, hostname.trim(), Some(&state.ip), false);
        fs::write(dir.join("hosts"), hs).map_err(|e| e.to_string())?;
        Ok(())
    })();
    if r.is_err() {
        detach(engine, &c.id);
    }
    r
}

/// The list without the portmap plugin when nothing is published: one plugin
/// execution (and its iptables calls) less per start and stop.
fn without_unused_portmap(mut list: serde_json::Value, ports: &[PortMapping]) -> serde_json::Value {
    if ports.is_empty()
        && let Some(ps) = list.get_mut("plugins").and_then(|p| p.as_array_mut())
    {
        ps.retain(|p| p.get("type").and_then(|t| t.as_str()) != Some("portmap"));
    }
    list
}

fn write_state(engine: &Engine, id: &str, s: &NetState) -> Result<(), String> {
    let p = engine.containers().dir(id).join("net.json");
    let tmp = p.with_extension("json.tmp");
    fs::write(&tmp, serde_json::to_vec_pretty(s).expect("json"))
        .and_then(|_| fs::rename(&tmp, &p))
        .map_err(|e| format!("{}: {e}", p.display()))
}

/// Releases what [`attach`] set up (CNI DEL: lease, veth, port mappings; the
/// pinned namespace). Idempotent; errors are best-effort ignored so `rm`
/// always completes.
pub fn detach(engine: &Engine, id: &str) {
    let dir = engine.containers().dir(id);
    let path = engine.netns_path(id);
    if let Some(state) = engine.net_state(id) {
        let nets = engine.networks();
        for l in state.connected.iter().rev() {
            del_link(engine, id, &path, l);
        }
        if let Ok(net) = nets.get(&state.network)
            && let Ok(list) = nets.conflist(&net)
        {
            let mut rc = serde_json::Map::new();
            if !state.ports.is_empty() {
                rc.insert(
                    "portMappings".into(),
                    serde_json::to_value(&state.ports).expect("json"),
                );
            }
            let list = without_unused_portmap(list, &state.ports);
            let list = with_tuned_mac(list, &state.tuned_mac, &mut rc);
            let a = cni::Attachment {
                container_id: id,
                netns: &path,
                ifname: IFNAME,
                runtime_config: rc,
            };
            let _ = cni::del(&list, state.result.as_ref(), &a);
        }
        let _ = fs::remove_file(dir.join("net.json"));
    }
    let _ = netns::unpin(&path);
}

fn del_link(engine: &Engine, id: &str, netns: &Path, l: &Link) {
    let nets = engine.networks();
    if let Ok(net) = nets.get(&l.network)
        && let Ok(list) = nets.conflist(&net)
    {
        let a = cni::Attachment {
            container_id: id,
            netns,
            ifname: &l.ifname,
            runtime_config: Default::default(),
        };
        let list = without_unused_portmap(list, &[]);
        let _ = cni::del(&list, l.result.as_ref(), &a);
    }
}

/// `network connect [--ip] [--alias] NETWORK CONTAINER`: a running
/// container gets one more interface (eth1, eth2…) on `network` (CNI ADD in
/// its pinned namespace), recorded in its net.json so stop/rm DEL it.
pub fn connect(
    engine: &Engine,
    network: &str,
    container: &str,
    ip: Option<&str>,
    aliases: &[String],
) -> Result<Link, String> {
    let c = engine
        .containers()
        .resolve(container)
        .map_err(|e| e.to_string())?;
    let nets = engine.networks();
    let net = if network == berth_net::networks::DEFAULT {
        nets.ensure_default()
    } else {
        nets.get(network)
    }
    .map_err(|e| e.to_string())?;
    if net.name == berth_net::networks::DEFAULT {
        if ip.is_some() {
            return Err(USER_IP_ONLY.into());
        }
        if !aliases.is_empty() {
            return Err(USER_ALIAS_ONLY.into());
        }
    }
    let mode = Mode::parse(c.options.network.as_deref());
    if !matches!(mode, Mode::Network(_)) {
        return Err(format!(
            "container cannot be connected to network {} in {} network mode",
            net.name,
            mode.name()
        ));
    }
    if c.options.isolation == crate::containers::vm::Isolation::Vm {
        // The VM has one NIC, fixed when it booted.
        return Err(format!(
            "container {} runs in a VM: connecting it to another network while it runs is not supported",
            c.name
        ));
    }
    let mut state = match engine.net_state(&c.id) {
        Some(s) if c.state.status == Some(Status::Running) => s,
        _ => return Err(format!("container {} is not running", c.name)),
    };
    let links = state.links(&c.options.network_alias);
    if links.iter().any(|l| l.network == net.name) {
        return Err(format!(
            "endpoint with name {} already exists in network {}",
            c.name, net.name
        ));
    }
    if let Some(ip) = ip {
        let a: std::net::Ipv4Addr = ip
            .parse()
            .map_err(|_| format!("invalid IPv4 address: {ip}"))?;
        if !net.net().is_some_and(|s| s.contains(a)) {
            return Err(format!(
                "invalid address {ip}: it does not belong to the network's subnet {}",
                net.subnet
            ));
        }
    }
    let ifname = (1..)
        .map(|i| format!("eth{i}"))
        .find(|n| !links.iter().any(|l| &l.ifname == n))
        .expect("a free name");
    let mut link = Link {
        network: net.name.clone(),
        network_id: net.id.clone(),
        ifname: ifname.clone(),
        aliases: aliases.to_vec(),
        requested_ip: ip.map(str::to_string),
        ..Default::default()
    };
    // Recorded before ADD, so a DEL follows whatever happens next.
    state.connected.push(link.clone());
    write_state(engine, &c.id, &state)?;
    let mut list = without_unused_portmap(nets.conflist(&net).map_err(|e| e.to_string())?, &[]);
    // The default route stays the first network's (Docker's behaviour).
    if let Some(ipam) = list["plugins"][0]["ipam"].as_object_mut() {
        ipam.remove("routes");
    }
    if let Some(ip) = ip {
        list["plugins"][0]["ipam"]["ranges"][0][0]["rangeStart"] = ip.into();
        list["plugins"][0]["ipam"]["ranges"][0][0]["rangeEnd"] = ip.into();
    }
    let a = cni::Attachment {
        container_id: &c.id,
        netns: &state.netns,
        ifname: &ifname,
        runtime_config: Default::default(),
    };
    let result = match cni::add(&list, &a) {
        Ok(r) => r,
        Err(e) => {
            del_link(engine, &c.id, &state.netns, &link);
            state.connected.retain(|l| l.ifname != ifname);
            let _ = write_state(engine, &c.id, &state);
            return Err(e.to_string());
        }
    };
    if let Some((ip, prefix, gw, mac)) = result.address_of(&ifname) {
        link.ip = ip;
        link.prefix = prefix;
        link.gateway = if gw.is_empty() {
            net.gateway.clone()
        } else {
            gw
        };
        link.mac = mac;
    }
    link.result = Some(result);
    if let Some(l) = state.connected.iter_mut().find(|l| l.ifname == ifname) {
        *l = link.clone();
    }
    write_state(engine, &c.id, &state)?;
    if net.name != berth_net::networks::DEFAULT {
        let _ = dns::ensure(engine, &net.name);
    }
    // As Docker: the container's own name resolves to its new address too.
    edit_hosts(engine, &c.id, |lines| {
        let hostname = own_hostname(engine, &c.id);
        lines.push(format!("{}\t{hostname}", link.ip));
    });
    Ok(link)
}

fn own_hostname(engine: &Engine, id: &str) -> String {
    let dir = engine.containers().dir(id);
    fs::read_to_string(dir.join("hostname"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Rewrites a container's generated /etc/hosts in place (same inode: the
/// running container has it bind-mounted).
fn edit_hosts(engine: &Engine, id: &str, f: impl FnOnce(&mut Vec<String>)) {
    use std::io::Write;
    let p = engine.containers().dir(id).join("hosts");
    let Ok(text) = fs::read_to_string(&p) else {
        return;
    };
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    f(&mut lines);
    let mut out = lines.join("\n");
    out.push('\n');
    if let Ok(mut file) = fs::OpenOptions::new().write(true).truncate(true).open(&p) {
        let _ = file.write_all(out.as_bytes());
    }
}

/// `network disconnect [-f] NETWORK CONTAINER`: CNI DEL of a network the
/// container was connected to while running. The network it was started on
/// (eth0) stays: berth does not disconnect that one.
pub fn disconnect(
    engine: &Engine,
    network: &str,
    container: &str,
    force: bool,
) -> Result<(), String> {
    let c = match engine.containers().resolve(container) {
        Ok(c) => c,
        Err(_) if force => return Ok(()),
        Err(e) => return Err(e.to_string()),
    };
    let name = engine
        .networks()
        .get(network)
        .map(|n| n.name)
        .unwrap_or_else(|_| network.to_string());
    let Some(mut state) = engine.net_state(&c.id) else {
        return if force {
            Ok(())
        } else {
            Err(format!(
                "container {} is not connected to network {name}",
                c.name
            ))
        };
    };
    let Some(link) = state.connected.iter().find(|l| l.network == name).cloned() else {
        if state.network == name && !force {
            return Err(format!(
                "container {} was started on network {name}; disconnecting that one is not supported",
                c.name
            ));
        }
        return if force {
            Ok(())
        } else {
            Err(format!(
                "container {} is not connected to network {name}",
                c.name
            ))
        };
    };
    del_link(engine, &c.id, &state.netns, &link);
    state.connected.retain(|l| l.ifname != link.ifname);
    write_state(engine, &c.id, &state)?;
    if !link.ip.is_empty() {
        let hostname = own_hostname(engine, &c.id);
        let entry = format!("{}\t{hostname}", link.ip);
        edit_hosts(engine, &c.id, |lines| lines.retain(|l| *l != entry));
    }
    Ok(())
}

/// Namespace pins whose container is gone (a crash between `attach` and
/// `detach` of a container removed since): unmounted and removed.
pub fn clean_leftovers(engine: &Engine) {
    for e in fs::read_dir(engine.root().join("netns"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let id = e.file_name().to_string_lossy().into_owned();
        if !engine.containers().dir(&id).exists() {
            let _ = netns::unpin(&e.path());
        }
    }
}

/// `network prune`: removes every network no container uses (not `bridge`).
pub fn prune(engine: &Engine) -> Vec<String> {
    let mut out = Vec::new();
    for n in engine.networks().list() {
        if n.name != berth_net::networks::DEFAULT && engine.network_users(&n.name).is_empty() {
            dns::stop(engine, &n.name);
        }
        if n.name != berth_net::networks::DEFAULT
            && engine.network_users(&n.name).is_empty()
            && engine.networks().remove(&n.name, &[]).is_ok()
        {
            out.push(n.name);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!(Mode::parse(None), Mode::Network("bridge".into()));
        assert_eq!(Mode::parse(Some("none")), Mode::None);
        assert_eq!(Mode::parse(Some("host")), Mode::Host);
        assert_eq!(
            Mode::parse(Some("container:web")),
            Mode::Container("web".into())
        );
        assert_eq!(Mode::parse(Some("default")), Mode::Network("bridge".into()));
        assert_eq!(Mode::parse(Some("mynet")), Mode::Network("mynet".into()));
    }

    #[test]
    fn resolvers() {
        let host = "search lan\nnameserver 127.0.0.53\noptions edns0\n";
        let none = Resolver::default();
        let r = resolv_conf(host, &none, false);
        assert!(r.contains("nameserver 8.8.8.8") && r.contains("search lan"));
        assert!(!r.contains("127.0.0.53"));
        let r = resolv_conf("nameserver 10.0.0.2\n", &none, false);
        assert_eq!(r, "nameserver 10.0.0.2\n");
        let one = ["1.1.1.1".to_string()];
        let with = |servers, search, options| Resolver {
            servers,
            search,
            options,
        };
        let r = resolv_conf("nameserver 10.0.0.2\n", &with(&one, &[], &[]), false);
        assert_eq!(r, "nameserver 1.1.1.1\n");
        // --dns-search and --dns-option replace the host's lines.
        let search = ["a.test".to_string(), "b.test".to_string()];
        let opts = ["ndots:2".to_string()];
        let r = resolv_conf(host, &with(&[], &search, &opts), false);
        assert_eq!(
            r,
            "search a.test b.test\noptions ndots:2\nnameserver 8.8.8.8\nnameserver 8.8.4.4\n"
        );
        // `.` alone: no search line at all.
        let dot = [".".to_string()];
        let r = resolv_conf(host, &with(&[], &dot, &[]), false);
        assert!(!r.contains("search") && r.contains("options edns0"), "{r}");
        // Host mode keeps the host's file unless something is asked.
        assert_eq!(resolv_conf(host, &none, true), host);
        assert!(resolv_conf(host, &with(&[], &[], &opts), true).contains("options ndots:2"));
    }

    #[test]
    fn hosts_file() {
        let o = RunOptions {
            add_host: vec!["db:10.1.2.3".into()],
            ..Default::default()
        };
        let h = hosts(&o, "abc", Some("10.88.0.2"), false);
        assert!(h.starts_with("127.0.0.1\tlocalhost\n"));
        assert!(h.contains("10.1.2.3\tdb\n"));
        assert!(h.ends_with("10.88.0.2\tabc\n"));
    }
}
