//! A CNI client: runs a network configuration list's plugins with the CNI_*
//! environment protocol (spec 1.0.0; results of 0.4.0 plugins read too).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::NetError;

/// Where plugins are looked for (`BERTH_CNI_PATH` overrides, `:`-separated).
pub fn plugin_path() -> String {
    std::env::var("BERTH_CNI_PATH").unwrap_or_else(|_| "/usr/lib/cni:/opt/cni/bin".into())
}

/// One interface of a result.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Interface {
    /// Name.
    pub name: String,
    /// MAC address.
    pub mac: String,
    /// Namespace path for interfaces inside the container.
    pub sandbox: Option<String>,
}

/// One address of a result.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct IpConfig {
    /// `a.b.c.d/len`.
    pub address: String,
    /// Gateway.
    pub gateway: Option<String>,
    /// Index into `interfaces`.
    pub interface: Option<usize>,
}

/// A plugin chain's result (the fields berth uses; the rest is kept as JSON).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct CniResult {
    /// Version of the result.
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    /// Interfaces created.
    pub interfaces: Vec<Interface>,
    /// Addresses assigned.
    pub ips: Vec<IpConfig>,
    /// Routes and DNS, as the plugin returned them.
    #[serde(flatten)]
    pub rest: serde_json::Map<String, Value>,
}

impl CniResult {
    /// The first address on `ifname` inside the sandbox (`ip`, prefix, gateway, MAC).
    pub fn address_of(&self, ifname: &str) -> Option<(String, u8, String, String)> {
        for ip in &self.ips {
            let iface = ip.interface.and_then(|i| self.interfaces.get(i));
            if iface.is_some_and(|i| i.name != ifname) {
                continue;
            }
            let (addr, len) = ip.address.split_once('/')?;
            return Some((
                addr.to_string(),
                len.parse().ok()?,
                ip.gateway.clone().unwrap_or_default(),
                iface.map(|i| i.mac.clone()).unwrap_or_default(),
            ));
        }
        None
    }
}

/// What identifies one attachment to the plugins.
#[derive(Clone, Debug)]
pub struct Attachment<'a> {
    /// `CNI_CONTAINERID`.
    pub container_id: &'a str,
    /// `CNI_NETNS` (a path).
    pub netns: &'a Path,
    /// `CNI_IFNAME`.
    pub ifname: &'a str,
    /// `runtimeConfig` values, by capability name (e.g. `portMappings`).
    pub runtime_config: serde_json::Map<String, Value>,
}

/// Runs one plugin. `config` is the plugin's own configuration (with `name`
/// and `cniVersion` filled in). Returns its stdout parsed as JSON (Null if empty).
pub fn exec(command: &str, config: &Value, a: &Attachment<'_>) -> Result<Value, NetError> {
    let typ = config
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let path = plugin_path();
    let exe = find_plugin(&typ, &path).ok_or_else(|| NetError::Plugin {
        plugin: typ.clone(),
        command: command.into(),
        msg: format!("plugin not found in {path} (install Debian's containernetworking-plugins)"),
    })?;
    let mut child = Command::new(&exe)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", a.container_id)
        .env("CNI_NETNS", a.netns)
        .env("CNI_IFNAME", a.ifname)
        .env("CNI_PATH", &path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(NetError::io(&exe))?;
    let input = serde_json::to_vec(config).expect("json");
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(&input).map_err(NetError::io(&exe))?;
    }
    let out = child.wait_with_output().map_err(NetError::io(&exe))?;
    let stdout: Value = if out.stdout.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
            Value::String(String::from_utf8_lossy(&out.stdout).trim().to_string())
        })
    };
    if !out.status.success() {
        let msg = match &stdout {
            Value::Object(o) => {
                let m = o.get("msg").and_then(Value::as_str).unwrap_or("");
                let d = o.get("details").and_then(Value::as_str).unwrap_or("");
                if d.is_empty() {
                    m.to_string()
                } else {
                    format!("{m}: {d}")
                }
            }
            _ => String::from_utf8_lossy(&out.stderr).trim().to_string(),
        };
        return Err(NetError::Plugin {
            plugin: typ,
            command: command.into(),
            msg,
        });
    }
    Ok(stdout)
}

fn find_plugin(typ: &str, path: &str) -> Option<PathBuf> {
    if typ.is_empty() || typ.contains('/') {
        return None;
    }
    path.split(':')
        .map(|d| Path::new(d).join(typ))
        .find(|p| p.is_file())
}

/// The configuration one plugin of `list` sees: its own object plus the list's
/// `name` and `cniVersion`, the previous result, and the runtime config for the
/// capabilities it declares.
fn plugin_config(list: &Value, plugin: &Value, prev: Option<&Value>, a: &Attachment<'_>) -> Value {
    let mut c = plugin.clone();
    let o = c.as_object_mut().expect("plugin configs are objects");
    o.insert("name".into(), list["name"].clone());
    o.insert("cniVersion".into(), list["cniVersion"].clone());
    if let Some(p) = prev
        && !p.is_null()
    {
        o.insert("prevResult".into(), p.clone());
    }
    let caps = o.remove("capabilities");
    let mut rc = serde_json::Map::new();
    if let Some(Value::Object(caps)) = caps {
        for (k, on) in caps {
            if on == Value::Bool(true)
                && let Some(v) = a.runtime_config.get(&k)
            {
                rc.insert(k, v.clone());
            }
        }
    }
    if !rc.is_empty() {
        o.insert("runtimeConfig".into(), Value::Object(rc));
    }
    c
}

fn plugins(list: &Value) -> Vec<Value> {
    list.get("plugins")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// ADD through the whole list; on a failure the plugins already run are
/// rolled back with DEL. Returns the last plugin's result.
pub fn add(list: &Value, a: &Attachment<'_>) -> Result<CniResult, NetError> {
    let mut prev = Value::Null;
    let ps = plugins(list);
    for (i, p) in ps.iter().enumerate() {
        let cfg = plugin_config(list, p, Some(&prev), a);
        match exec("ADD", &cfg, a) {
            Ok(r) => {
                if !r.is_null() {
                    prev = r;
                }
            }
            Err(e) => {
                for q in ps[..=i].iter().rev() {
                    let _ = exec("DEL", &plugin_config(list, q, Some(&prev), a), a);
                }
                return Err(e);
            }
        }
    }
    serde_json::from_value(prev.clone()).map_err(|e| NetError::Plugin {
        plugin: "chain".into(),
        command: "ADD".into(),
        msg: format!("unreadable result {prev}: {e}"),
    })
}

/// DEL through the list in reverse; every plugin runs even if one fails (the
/// first error is returned).
pub fn del(list: &Value, prev: Option<&CniResult>, a: &Attachment<'_>) -> Result<(), NetError> {
    let prev = prev.map(|p| serde_json::to_value(p).expect("json"));
    let mut first = None;
    for p in plugins(list).iter().rev() {
        if let Err(e) = exec("DEL", &plugin_config(list, p, prev.as_ref(), a), a) {
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}

/// CHECK through the list (CNI 0.4.0+).
pub fn check(list: &Value, prev: &CniResult, a: &Attachment<'_>) -> Result<(), NetError> {
    let prev = serde_json::to_value(prev).expect("json");
    for p in plugins(list) {
        exec("CHECK", &plugin_config(list, &p, Some(&prev), a), a)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn results_of_both_versions() {
        let v1 = json!({"cniVersion":"1.0.0","interfaces":[{"name":"br"},{"name":"veth1"},
            {"name":"eth0","mac":"aa:bb","sandbox":"/ns"}],
            "ips":[{"address":"10.88.0.5/16","gateway":"10.88.0.1","interface":2}],
            "routes":[{"dst":"0.0.0.0/0"}]});
        let r: CniResult = serde_json::from_value(v1).unwrap();
        assert_eq!(
            r.address_of("eth0").unwrap(),
            ("10.88.0.5".into(), 16, "10.88.0.1".into(), "aa:bb".into())
        );
        let v04 = json!({"cniVersion":"0.4.0","ips":[{"version":"4","address":"10.1.0.2/24"}]});
        let r: CniResult = serde_json::from_value(v04).unwrap();
        assert_eq!(r.address_of("eth0").unwrap().0, "10.1.0.2");
        // Unknown fields survive a round trip (DEL gets them as prevResult).
        assert!(serde_json::to_value(&r).unwrap().get("ips").is_some());
    }

    #[test]
    fn runtime_config_only_for_declared_capabilities() {
        let list = json!({"cniVersion":"1.0.0","name":"n","plugins":[]});
        let mut rc = serde_json::Map::new();
        rc.insert("portMappings".into(), json!([{"hostPort":1}]));
        let a = Attachment {
            container_id: "c",
            netns: Path::new("/x"),
            ifname: "eth0",
            runtime_config: rc,
        };
        let pm = json!({"type":"portmap","capabilities":{"portMappings":true}});
        let c = plugin_config(&list, &pm, None, &a);
        assert_eq!(c["runtimeConfig"]["portMappings"][0]["hostPort"], 1);
        assert_eq!(c["name"], "n");
        assert!(c.get("capabilities").is_none());
        let br = json!({"type":"bridge"});
        assert!(
            plugin_config(&list, &br, None, &a)
                .get("runtimeConfig")
                .is_none()
        );
    }
}
