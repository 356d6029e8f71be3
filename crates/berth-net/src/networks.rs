//! Network metadata: `<root>/networks/<name>/network.json` (atomic writes) and
//! the CNI configuration list the plugins get (`<name>.conflist`: bridge + host-local, portmap), with
//! host-local IPAM leases in `<root>/networks/<name>/ipam/`, so leases belong
//! to one store. Creating and removing networks holds a host-wide lock
//! (`/run/berth/network.lock`): subnets are chosen against the host's routes,
//! and a network's bridge (with its gateway address, hence its route) is made
//! while the lock is held, so two stores never pick the same subnet.

use std::collections::BTreeMap;
use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::Digest as _;

use crate::subnet::{self, Ipv4Net};
use crate::{NetError, write_atomic};

/// The default network's name.
pub const DEFAULT: &str = "bridge";

/// A network.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Network {
    /// Name.
    pub name: String,
    /// 64-hex ID.
    pub id: String,
    /// Always `bridge` for now.
    pub driver: String,
    /// The Linux bridge.
    pub bridge: String,
    /// IPv4 subnet.
    pub subnet: String,
    /// Gateway (the bridge's address).
    pub gateway: String,
    /// No route out of the subnet.
    pub internal: bool,
    /// `--label`s.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// RFC 3339 creation time (seconds).
    #[serde(default)]
    pub created: u64,
    /// MTU of the bridge and of every interface on it (`None`: 1500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
}

impl Network {
    /// The subnet, parsed.
    pub fn net(&self) -> Option<Ipv4Net> {
        self.subnet.parse().ok()
    }
}

/// `network create` options.
#[derive(Clone, Debug, Default)]
pub struct NetworkCreate {
    /// Name.
    pub name: String,
    /// `--subnet`.
    pub subnet: Option<String>,
    /// `--gateway`.
    pub gateway: Option<String>,
    /// `--internal`.
    pub internal: bool,
    /// `--label KEY=VALUE`.
    pub labels: Vec<String>,
    /// Bridge device name (default: `br-` + 12 hex of the ID).
    pub bridge: Option<String>,
    /// `-o/--opt KEY=VALUE` driver options (see [`MTU_OPTIONS`]).
    pub options: Vec<String>,
}

/// The option keys that set a network's MTU: Docker's, then Podman's.
pub const MTU_OPTIONS: [&str; 2] = ["com.docker.network.driver.mtu", "mtu"];

/// The MTU the driver options ask for (`None`: the kernel's default, 1500).
/// Unknown keys are refused rather than ignored, so a typo is not a network
/// that silently lacks what was asked for.
pub fn mtu_option(options: &[String]) -> Result<Option<u32>, NetError> {
    let mut mtu = None;
    for o in options {
        let (k, v) = o.split_once('=').unwrap_or((o, ""));
        if !MTU_OPTIONS.contains(&k) {
            return Err(NetError::Invalid(format!(
                "unsupported network option \"{k}\" (supported: {})",
                MTU_OPTIONS.join(", ")
            )));
        }
        // 68 is IPv4's minimum; 65535 the largest a veth or bridge takes.
        match v.parse::<u32>() {
            Ok(n) if (68..=65535).contains(&n) => mtu = Some(n),
            _ => {
                return Err(NetError::Invalid(format!(
                    "invalid MTU \"{v}\" in network option {k}: a number from 68 to 65535"
                )));
            }
        }
    }
    Ok(mtu)
}

/// The networks of one store.
pub struct Networks {
    root: PathBuf,
    dir: PathBuf,
}

struct Lock(#[allow(dead_code)] fs::File);

fn valid_name(n: &str) -> bool {
    let mut c = n.chars();
    c.next().is_some_and(|f| f.is_ascii_alphanumeric())
        && c.all(|x| x.is_ascii_alphanumeric() || "_.-".contains(x))
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Whether a network device by that name exists on the host.
pub fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

impl Networks {
    /// The networks under `root`.
    pub fn new(root: &Path) -> Networks {
        Networks {
            root: root.to_path_buf(),
            dir: root.join("networks"),
        }
    }

    fn lock(&self) -> Result<Lock, NetError> {
        let dir = Path::new("/run/berth");
        let path = if fs::create_dir_all(dir).is_ok() {
            dir.join("network.lock")
        } else {
            fs::create_dir_all(&self.dir).map_err(NetError::io(&self.dir))?;
            self.dir.join(".lock")
        };
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(NetError::io(&path))?;
        rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive).map_err(|e| {
            NetError::Io {
                path: path.clone(),
                source: e.into(),
            }
        })?;
        Ok(Lock(f))
    }

    /// Directory of a network.
    pub fn dir(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// host-local's data directory for a network (one file per lease in
    /// `<dir>/<name>/`).
    pub fn lease_dir(&self, name: &str) -> PathBuf {
        self.dir(name).join("ipam")
    }

    /// Leases the network holds (files named by an IP address).
    pub fn leases(&self, name: &str) -> Vec<String> {
        fs::read_dir(self.lease_dir(name).join(name))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
            .collect()
    }

    /// Every network, sorted by name.
    pub fn list(&self) -> Vec<Network> {
        let mut out: Vec<Network> = fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let b = fs::read(e.path().join("network.json")).ok()?;
                serde_json::from_slice(&b).ok()
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// A network by name, full ID or unique ID prefix.
    pub fn get(&self, name: &str) -> Result<Network, NetError> {
        if valid_name(name)
            && let Ok(b) = fs::read(self.dir(name).join("network.json"))
        {
            return serde_json::from_slice(&b).map_err(|e| NetError::Io {
                path: self.dir(name).join("network.json"),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            });
        }
        let all: Vec<Network> = self
            .list()
            .into_iter()
            .filter(|n| !name.is_empty() && n.id.starts_with(name))
            .collect();
        match all.as_slice() {
            [one] => Ok(one.clone()),
            _ => Err(NetError::NotFound(name.to_string())),
        }
    }

    /// The default `bridge` network, created on first use (bridge `berth0`
    /// for the default store, `berth<8 hex>` of the root's path otherwise, so
    /// every store has its own).
    pub fn ensure_default(&self) -> Result<Network, NetError> {
        if let Ok(n) = self.get(DEFAULT) {
            return Ok(n);
        }
        let bridge = if self.root == Path::new("/var/lib/berth") {
            "berth0".to_string()
        } else {
            let h = sha2::Sha256::digest(self.root.as_os_str().as_encoded_bytes());
            format!("berth{}", &hex::encode(h)[..8])
        };
        match self.create_inner(
            &NetworkCreate {
                name: DEFAULT.into(),
                bridge: Some(bridge),
                ..Default::default()
            },
            true,
        ) {
            Err(NetError::Exists(_)) => self.get(DEFAULT),
            r => r,
        }
    }

    /// `network create`.
    pub fn create(&self, o: &NetworkCreate) -> Result<Network, NetError> {
        if ["bridge", "host", "none", "default"].contains(&o.name.as_str()) {
            return Err(NetError::Invalid(format!(
                "operation is not permitted on predefined {} network",
                o.name
            )));
        }
        self.create_inner(o, false)
    }

    fn create_inner(&self, o: &NetworkCreate, default: bool) -> Result<Network, NetError> {
        if !valid_name(&o.name) {
            return Err(NetError::Invalid(format!(
                "invalid network name \"{}\": only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed",
                o.name
            )));
        }
        let mtu = mtu_option(&o.options)?;
        let mut labels = BTreeMap::new();
        for l in &o.labels {
            let (k, v) = l.split_once('=').unwrap_or((l, ""));
            labels.insert(k.to_string(), v.to_string());
        }
        let _lock = self.lock()?;
        if self.dir(&o.name).join("network.json").exists() {
            return Err(NetError::Exists(o.name.clone()));
        }
        let mut taken = subnet::host_routes();
        taken.extend(self.list().iter().filter_map(Network::net));
        let net = match &o.subnet {
            Some(s) => {
                let net: Ipv4Net = s.parse()?;
                if let Some(t) = taken.iter().find(|t| t.overlaps(&net)) {
                    return Err(NetError::Overlap(format!("{net} overlaps {t}")));
                }
                net
            }
            None => subnet::choose(&taken).ok_or(NetError::NoSubnet)?,
        };
        let gateway = match &o.gateway {
            Some(g) => {
                let g: Ipv4Addr = g
                    .parse()
                    .map_err(|_| NetError::Invalid(format!("invalid gateway address {g}")))?;
                if !net.contains(g) || g == net.addr {
                    return Err(NetError::Invalid(format!(
                        "gateway {g} is not a host address of subnet {net}"
                    )));
                }
                g
            }
            None => net.nth(1),
        };
        let mut rnd = [0u8; 32];
        {
            use std::io::Read;
            fs::File::open("/dev/urandom")
                .and_then(|mut f| f.read_exact(&mut rnd))
                .map_err(NetError::io("/dev/urandom"))?;
        }
        let id = hex::encode(sha2::Sha256::digest(rnd));
        let bridge = o
            .bridge
            .clone()
            .unwrap_or_else(|| format!("br-{}", &id[..12]));
        let n = Network {
            name: o.name.clone(),
            id,
            driver: "bridge".into(),
            bridge,
            subnet: net.to_string(),
            gateway: gateway.to_string(),
            internal: o.internal,
            labels,
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            mtu,
        };
        let dir = self.dir(&n.name);
        fs::create_dir_all(dir.join("ipam")).map_err(NetError::io(&dir))?;
        let fail = |e: NetError| {
            let _ = fs::remove_dir_all(&dir);
            e
        };
        // The bridge and its address now, so the subnet shows in the host's
        // routes before the lock is released.
        if !link_exists(&n.bridge) || default {
            let _ = ip(&["link", "add", "name", &n.bridge, "type", "bridge"]);
            let addr = format!("{gateway}/{}", net.len);
            let _ = ip(&["addr", "replace", &addr, "dev", &n.bridge]);
            if let Some(m) = n.mtu {
                // Set on the bridge itself, so it keeps it whatever its ports
                // have. Kernels before 4.17 refuse more than 1500 on a bridge
                // with no ports (as Docker, ignored): the bridge then follows its
                // ports, whose MTU the plugin sets.
                let _ = ip(&["link", "set", &n.bridge, "mtu", &m.to_string()]);
            }
            ip(&["link", "set", &n.bridge, "up"]).map_err(|m| {
                fail(NetError::Invalid(format!(
                    "creating bridge {}: {m}",
                    n.bridge
                )))
            })?;
        }
        let conf = serde_json::to_vec_pretty(&self.conflist_for(&n)).expect("json");
        write_atomic(&dir.join(format!("{}.conflist", n.name)), &conf).map_err(fail)?;
        let meta = serde_json::to_vec_pretty(&n).expect("json");
        write_atomic(&dir.join("network.json"), &meta).map_err(fail)?;
        Ok(n)
    }

    /// The CNI configuration list of a network: bridge (host-local IPAM in
    /// the store), portmap (skipped by the engine when nothing is published).
    pub fn conflist_for(&self, n: &Network) -> Value {
        let mut ipam = json!({
            "type": "host-local",
            "ranges": [[{"subnet": n.subnet, "gateway": n.gateway}]],
            "dataDir": self.lease_dir(&n.name),
        });
        if !n.internal {
            ipam["routes"] = json!([{"dst": "0.0.0.0/0"}]);
        }
        let mut bridge = json!({
            "type": "bridge",
            "bridge": n.bridge,
            "isGateway": true,
            "ipMasq": !n.internal,
            "hairpinMode": true,
            "ipam": ipam,
        });
        if let Some(m) = n.mtu {
            // Both ends of every veth.
            bridge["mtu"] = json!(m);
        }
        json!({
            "cniVersion": "1.0.0",
            "name": n.name,
            "plugins": [
                bridge,
                {"type": "portmap", "capabilities": {"portMappings": true}},
            ]
        })
    }

    /// The conflist the engine hands the plugins (as written at creation).
    pub fn conflist(&self, n: &Network) -> Result<Value, NetError> {
        let p = self.dir(&n.name).join(format!("{}.conflist", n.name));
        let b = fs::read(&p).map_err(NetError::io(&p))?;
        serde_json::from_slice(&b).map_err(|e| NetError::Io {
            path: p,
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        })
    }

    /// `network rm`: refused while `users` (container names) is not empty.
    /// Deletes the bridge and the network's directory (leases included).
    pub fn remove(&self, name: &str, users: &[String]) -> Result<Network, NetError> {
        let n = self.get(name)?;
        if !users.is_empty() {
            return Err(NetError::InUse {
                name: n.name,
                containers: users.join(", "),
            });
        }
        let _lock = self.lock()?;
        if link_exists(&n.bridge) {
            ip(&["link", "del", &n.bridge])
                .map_err(|m| NetError::Invalid(format!("removing bridge {}: {m}", n.bridge)))?;
        }
        let dir = self.dir(&n.name);
        fs::remove_dir_all(&dir).map_err(NetError::io(&dir))?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_name("net-1.a_b"));
        assert!(!valid_name("-x"));
        assert!(!valid_name("a/b"));
        assert!(!valid_name(""));
    }

    #[test]
    fn mtu_options() {
        let o = |v: &[&str]| mtu_option(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(o(&[]).unwrap(), None);
        assert_eq!(
            o(&["com.docker.network.driver.mtu=9000"]).unwrap(),
            Some(9000)
        );
        assert_eq!(o(&["mtu=65520"]).unwrap(), Some(65520));
        for bad in ["mtu=abc", "mtu=67", "mtu=65536", "mtu=", "mtu"] {
            let e = o(&[bad]).unwrap_err().to_string();
            assert!(e.contains("invalid MTU") && e.contains("mtu"), "{bad}: {e}");
        }
        let e = o(&["com.docker.network.bridge.nme=x"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unsupported network option \"com.docker.network.bridge.nme\""),
            "{e}"
        );
    }

    #[test]
    fn conflist_shape() {
        let t = tempfile::tempdir().unwrap();
        let ns = Networks::new(t.path());
        let n = Network {
            name: "n1".into(),
            id: "0".repeat(64),
            driver: "bridge".into(),
            bridge: "br-x".into(),
            subnet: "10.200.0.0/24".into(),
            gateway: "10.200.0.1".into(),
            internal: true,
            labels: BTreeMap::new(),
            created: 0,
            mtu: None,
        };
        let c = ns.conflist_for(&n);
        assert!(c["plugins"][0].get("mtu").is_none());
        let c = ns.conflist_for(&Network {
            mtu: Some(9000),
            ..n.clone()
        });
        assert_eq!(c["plugins"][0]["mtu"], 9000);
        assert_eq!(c["plugins"][0]["type"], "bridge");
        assert_eq!(c["plugins"][0]["ipMasq"], false);
        assert!(c["plugins"][0]["ipam"].get("routes").is_none());
        assert_eq!(
            c["plugins"][0]["ipam"]["dataDir"],
            t.path().join("networks/n1/ipam").display().to_string()
        );
    }
}
