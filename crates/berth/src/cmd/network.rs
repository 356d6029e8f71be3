//! `network create|ls|inspect|rm|prune`, `port`, and inspect's `NetworkSettings`.

use std::path::Path;
use std::process::ExitCode;

use berth_engine::Engine;
use berth_engine::berth_net::{self, Network, NetworkCreate};
use berth_engine::containers::Container;
use berth_engine::network::Mode;
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::output::{self, Format};

#[derive(Subcommand)]
pub enum NetworkCommand {
    /// Create a network.
    Create(CreateArgs),
    /// List networks.
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Show networks.
    Inspect(InspectArgs),
    /// Remove networks.
    #[command(alias = "remove")]
    Rm(NamesArgs),
    /// Remove every network no container uses.
    Prune(PruneArgs),
    /// Connect a running container to a network.
    Connect(ConnectArgs),
    /// Disconnect a container from a network it was connected to.
    Disconnect(DisconnectArgs),
}

#[derive(Args)]
pub struct ConnectArgs {
    /// IPv4 address on the network.
    #[arg(long)]
    ip: Option<String>,
    /// Names the container also resolves as on this network.
    #[arg(long)]
    alias: Vec<String>,
    /// Network.
    network: String,
    /// Container.
    container: String,
}

#[derive(Args)]
pub struct DisconnectArgs {
    /// No error if the container or the attachment is gone.
    #[arg(short, long)]
    force: bool,
    /// Network.
    network: String,
    /// Container.
    container: String,
}

#[derive(Args)]
pub struct DnsArgs {
    /// The network.
    network: String,
}

/// `__dns NETWORK`: the network's DNS responder (see
/// berth_engine::network::dns). Detaches itself: the process the engine
/// started exits once the responder listens (status 0) or failed (1), and the
/// responder, now an orphan, serves until its network is unused.
pub fn dns(root: &Path, a: DnsArgs) -> anyhow::Result<ExitCode> {
    use std::io::{Read, Write};
    // Nothing inherited stays open (the monitor's start pipe, for one: `start`
    // would wait for it to close).
    // SAFETY: close_range with integer arguments; no descriptor of ours is open above 2.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    let (mut r, w) = std::io::pipe()?;
    // SAFETY: fork while single-threaded (nothing has started a thread yet).
    match unsafe { libc::fork() } {
        -1 => Err(std::io::Error::last_os_error().into()),
        0 => {
            drop(r);
            let mut w = Some(w);
            berth_engine::network::dns::serve(root, &a.network, |res| {
                if let Some(mut w) = w.take() {
                    let _ = w.write_all(if res.is_ok() { b"1" } else { b"0" });
                }
            });
            Ok(ExitCode::SUCCESS)
        }
        _ => {
            drop(w);
            let mut b = [0u8; 1];
            let ok = r.read(&mut b).ok() == Some(1) && b[0] == b'1';
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}

#[derive(Args)]
pub struct CreateArgs {
    /// Subnet in CIDR form (e.g. 10.1.0.0/24); default: a free one.
    #[arg(long)]
    subnet: Option<String>,
    /// Gateway address (default: the subnet's first).
    #[arg(long)]
    gateway: Option<String>,
    /// No route out of the network.
    #[arg(long)]
    internal: bool,
    /// Labels (KEY=VALUE).
    #[arg(long)]
    label: Vec<String>,
    /// Driver (only `bridge`).
    #[arg(short, long, default_value = "bridge")]
    driver: String,
    /// Driver options (KEY=VALUE): com.docker.network.driver.mtu (or mtu) sets
    /// the MTU of the bridge and of every interface on it.
    #[arg(short, long = "opt")]
    opt: Vec<String>,
    /// Network name.
    name: String,
}

#[derive(Args)]
pub struct LsArgs {
    /// Only IDs.
    #[arg(short, long)]
    quiet: bool,
    /// Full IDs.
    #[arg(long)]
    no_trunc: bool,
    /// table, json or a Go-style template.
    #[arg(long)]
    format: Option<String>,
    /// Filters (KEY=VALUE): name, id, label, driver, type (custom or builtin),
    /// scope. Values of one key are alternatives; different keys all apply.
    #[arg(short, long)]
    filter: Vec<String>,
}

/// Docker's `network ls --filter`.
fn network_filter(filters: &[String]) -> anyhow::Result<impl Fn(&Network) -> bool> {
    let mut by_key: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for f in filters {
        let (k, v) = f
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("bad format of filter (expected name=value): {f}"))?;
        match k {
            "name" | "id" | "label" | "driver" | "type" | "scope" => {}
            other => anyhow::bail!("invalid filter '{other}'"),
        }
        if k == "type" && v != "custom" && v != "builtin" {
            anyhow::bail!("invalid filter: 'type'='{v}' (custom or builtin)");
        }
        by_key.entry(k.to_string()).or_default().push(v.to_string());
    }
    Ok(move |n: &Network| {
        by_key.iter().all(|(k, vs)| {
            vs.iter().any(|v| match k.as_str() {
                "name" => n.name.contains(v.as_str()),
                "id" => n.id.starts_with(v.as_str()),
                "driver" => n.driver == *v,
                "scope" => v == "local",
                "type" => (n.name == berth_net::networks::DEFAULT) == (v == "builtin"),
                _ => {
                    let (lk, lv) = v
                        .split_once('=')
                        .map_or((v.as_str(), None), |(a, b)| (a, Some(b)));
                    n.labels
                        .get(lk)
                        .is_some_and(|have| lv.is_none_or(|lv| lv == have))
                }
            })
        })
    })
}

#[derive(Args)]
pub struct InspectArgs {
    /// Go-style template.
    #[arg(short, long)]
    format: Option<String>,
    /// Networks.
    #[arg(required = true)]
    names: Vec<String>,
}

#[derive(Args)]
pub struct NamesArgs {
    /// Networks.
    #[arg(required = true)]
    names: Vec<String>,
}

#[derive(Args)]
pub struct PruneArgs {
    /// Do not ask (berth never asks).
    #[arg(short, long)]
    force: bool,
}

#[derive(Args)]
pub struct PortArgs {
    /// Container.
    container: String,
    /// Only this port (PORT[/PROTO]).
    port: Option<String>,
}

fn engine(root: &Path) -> anyhow::Result<Engine> {
    Ok(Engine::open(root)?)
}

fn network_json(e: &Engine, n: &Network) -> Value {
    let mut containers = serde_json::Map::new();
    for c in e.containers().list().unwrap_or_default() {
        let st = e.net_state(&c.id).unwrap_or_default();
        let link = st
            .links(&c.options.network_alias)
            .into_iter()
            .find(|l| l.network == n.name);
        let started_on = Mode::parse(c.options.network.as_deref()) == Mode::Network(n.name.clone());
        if link.is_none() && !started_on {
            continue;
        }
        let l = link.unwrap_or_default();
        containers.insert(
            c.id.clone(),
            json!({
                "Name": c.name,
                "MacAddress": l.mac,
                "IPv4Address": if l.ip.is_empty() { String::new() } else { format!("{}/{}", l.ip, l.prefix) },
            }),
        );
    }
    json!({
        "Name": n.name,
        "Id": n.id,
        "Created": berth_engine::image::rfc3339(n.created),
        "Scope": "local",
        "Driver": n.driver,
        "EnableIPv6": false,
        "IPAM": {"Driver": "default", "Config": [{"Subnet": n.subnet, "Gateway": n.gateway}]},
        "Internal": n.internal,
        "Attachable": false,
        "Containers": containers,
        "Options": options(n),
        "Labels": n.labels,
    })
}

/// inspect's `Options`, with Docker's keys.
fn options(n: &Network) -> Value {
    let mut o = json!({"com.docker.network.bridge.name": n.bridge});
    if let Some(m) = n.mtu {
        o[berth_net::networks::MTU_OPTIONS[0]] = json!(m.to_string());
    }
    o
}

pub fn network(root: &Path, c: NetworkCommand) -> anyhow::Result<ExitCode> {
    let e = engine(root)?;
    let nets = e.networks();
    // The default network exists from the start.
    nets.ensure_default()?;
    match c {
        NetworkCommand::Create(a) => {
            if a.driver != "bridge" {
                anyhow::bail!("plugin \"{}\" not found (only bridge)", a.driver);
            }
            let n = nets.create(&NetworkCreate {
                name: a.name,
                subnet: a.subnet,
                gateway: a.gateway,
                internal: a.internal,
                labels: a.label,
                bridge: None,
                options: a.opt,
            })?;
            println!("{}", n.id);
        }
        NetworkCommand::Ls(a) => {
            let keep = network_filter(&a.filter)?;
            let list: Vec<Network> = nets.list().into_iter().filter(|n| keep(n)).collect();
            if a.quiet {
                for n in list {
                    println!("{}", if a.no_trunc { &n.id[..] } else { &n.id[..12] });
                }
                return Ok(ExitCode::SUCCESS);
            }
            let rows: Vec<Value> = list
                .iter()
                .map(|n| {
                    output::row(&[
                        (
                            "ID",
                            if a.no_trunc {
                                n.id.clone()
                            } else {
                                n.id[..12].to_string()
                            },
                        ),
                        ("Name", n.name.clone()),
                        ("Driver", n.driver.clone()),
                        ("Scope", "local".into()),
                        ("Subnet", n.subnet.clone()),
                    ])
                })
                .collect();
            output::print_rows(
                &Format::parse(a.format.as_deref()),
                &[
                    ("NETWORK ID", "ID"),
                    ("NAME", "Name"),
                    ("DRIVER", "Driver"),
                    ("SCOPE", "Scope"),
                ],
                &rows,
            );
        }
        NetworkCommand::Inspect(a) => {
            let mut out = Vec::new();
            let mut code = ExitCode::SUCCESS;
            for n in &a.names {
                match nets.get(n) {
                    Ok(n) => out.push(network_json(&e, &n)),
                    Err(err) => {
                        eprintln!("Error: {err}");
                        code = ExitCode::from(1);
                    }
                }
            }
            match a.format {
                Some(t) => out
                    .iter()
                    .for_each(|v| println!("{}", output::template(&t, v))),
                None => println!("{}", serde_json::to_string_pretty(&Value::Array(out))?),
            }
            return Ok(code);
        }
        NetworkCommand::Rm(a) => {
            let mut code = ExitCode::SUCCESS;
            for n in &a.names {
                let r = match nets.get(n) {
                    Ok(net) if net.name == berth_net::networks::DEFAULT => Err(anyhow::anyhow!(
                        "bridge is a pre-defined network and cannot be removed"
                    )),
                    Ok(net) => {
                        let users = e.network_users(&net.name);
                        if users.is_empty() {
                            berth_engine::network::dns::stop(&e, &net.name);
                        }
                        nets.remove(&net.name, &users).map_err(Into::into)
                    }
                    Err(err) => Err(err.into()),
                };
                match r {
                    Ok(_) => println!("{n}"),
                    Err(err) => {
                        eprintln!("Error: {err}");
                        code = ExitCode::from(1);
                    }
                }
            }
            return Ok(code);
        }
        NetworkCommand::Connect(a) => {
            berth_engine::network::connect(&e, &a.network, &a.container, a.ip.as_deref(), &a.alias)
                .map_err(|m| anyhow::anyhow!(m))?;
        }
        NetworkCommand::Disconnect(a) => {
            berth_engine::network::disconnect(&e, &a.network, &a.container, a.force)
                .map_err(|m| anyhow::anyhow!(m))?;
        }
        NetworkCommand::Prune(_) => {
            let removed = berth_engine::network::prune(&e);
            if !removed.is_empty() {
                println!("Deleted Networks:");
                for n in removed {
                    println!("{n}");
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `port CONTAINER [PORT[/PROTO]]`.
pub fn port(root: &Path, a: PortArgs) -> anyhow::Result<ExitCode> {
    let e = engine(root)?;
    let c = e.containers().resolve(&a.container)?;
    let st = e.net_state(&c.id).unwrap_or_default();
    let want = a.port.as_deref().map(|p| {
        let (n, proto) = p.split_once('/').unwrap_or((p, "tcp"));
        (n.to_string(), proto.to_string())
    });
    let mut found = false;
    for m in &st.ports {
        let key = (m.container_port.to_string(), m.protocol.clone());
        let ip = if m.host_ip.is_empty() {
            "0.0.0.0"
        } else {
            &m.host_ip
        };
        match &want {
            Some(w) if *w != key => continue,
            Some(_) => println!("{ip}:{}", m.host_port),
            None => println!("{}/{} -> {ip}:{}", key.0, key.1, m.host_port),
        }
        found = true;
    }
    if let Some(p) = a.port.filter(|_| !found) {
        anyhow::bail!("No public port '{p}' published for {}", c.name);
    }
    Ok(ExitCode::SUCCESS)
}

/// `NetworkSettings` of `inspect`, Docker-shaped.
pub fn settings(e: &Engine, c: &Container) -> Value {
    let mode = Mode::parse(c.options.network.as_deref());
    let st = e.net_state(&c.id).unwrap_or_default();
    let mut ports = serde_json::Map::new();
    for m in &st.ports {
        let key = format!("{}/{}", m.container_port, m.protocol);
        let entry = ports.entry(key).or_insert_with(|| json!([]));
        if let Some(a) = entry.as_array_mut() {
            a.push(json!({"HostIp": if m.host_ip.is_empty() { "0.0.0.0" } else { &m.host_ip }, "HostPort": m.host_port.to_string()}));
        }
    }
    let mut networks = serde_json::Map::new();
    if let Mode::Network(n) = &mode {
        networks.insert(
            n.clone(),
            json!({
                "NetworkID": st.network_id,
                "IPAddress": st.ip,
                "IPPrefixLen": st.prefix,
                "Gateway": st.gateway,
                "MacAddress": st.mac,
                "Aliases": c.options.network_alias,
            }),
        );
        // Networks connected while running (`network connect`).
        for l in &st.connected {
            networks.insert(
                l.network.clone(),
                json!({
                    "NetworkID": l.network_id,
                    "IPAddress": l.ip,
                    "IPPrefixLen": l.prefix,
                    "Gateway": l.gateway,
                    "MacAddress": l.mac,
                    "Aliases": l.aliases,
                }),
            );
        }
    } else {
        networks.insert(mode.name(), json!({}));
    }
    json!({
        "NetworkMode": mode.name(),
        "SandboxKey": if st.netns.as_os_str().is_empty() { String::new() } else { st.netns.display().to_string() },
        "IPAddress": st.ip,
        "IPPrefixLen": st.prefix,
        "Gateway": st.gateway,
        "MacAddress": st.mac,
        "Ports": ports,
        "Networks": networks,
    })
}
