//! The CLI skeleton: help, version, info, --root / BERTH_ROOT, exit codes.

mod common;

use common::Store;

#[test]
fn help_lists_the_commands() {
    let s = Store::new();
    let out = s.ok(&["--help"]);
    for c in [
        "images", "load", "save", "import", "rmi", "tag", "system", "info", "version",
    ] {
        assert!(out.contains(c), "--help lacks {c}:\n{out}");
    }
}

#[test]
fn version_plain_and_json() {
    let s = Store::new();
    assert!(s.ok(&["version"]).starts_with("berth version "));
    let v: serde_json::Value =
        serde_json::from_str(s.ok(&["version", "--format", "json"]).trim()).unwrap();
    assert_eq!(v["Version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(s.ok(&["version", "--format", "{{.Os}}"]).trim(), "linux");
}

#[test]
fn info_reports_store_and_host() {
    let s = Store::new();
    let out = s.ok(&["info"]);
    let root = s.root().canonicalize().unwrap();
    assert!(
        out.contains(&format!("Root Dir:         {}", root.display())),
        "{out}"
    );
    assert!(out.contains("Storage Driver:   overlay"), "{out}");
    assert!(out.contains("Overlayfs:        yes"), "{out}");
    let j: serde_json::Value =
        serde_json::from_str(s.ok(&["info", "--format", "json"]).trim()).unwrap();
    // This machine (and CI) runs cgroups in hybrid mode with controllers on v1.
    let mode = j["host"]["cgroups"]["mode"].as_str().unwrap();
    assert!(["hybrid", "legacy", "unified"].contains(&mode), "{j}");
    let ctrls = j["host"]["cgroups"]["controllers"].as_array().unwrap();
    assert!(ctrls.iter().any(|c| c == "memory"), "{j}");
    for k in ["overlayfs", "user_namespaces", "kvm"] {
        assert!(j["host"][k]["usable"].is_boolean(), "{k}: {j}");
    }
    let peers = j["host"]["peers"].as_array().unwrap();
    let skopeo = peers.iter().find(|p| p[0] == "skopeo").unwrap();
    assert!(skopeo[1].is_string(), "skopeo should be installed: {j}");
}

#[test]
fn berth_root_env_is_honoured() {
    let s = Store::new();
    let root = s.dir.path().join("from-env");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["info", "--format", "{{.root}}"])
        .env("BERTH_ROOT", &root)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        root.canonicalize().unwrap().display().to_string()
    );
    assert!(root.join("image").is_dir());
}

#[test]
fn usage_errors_exit_125() {
    let s = Store::new();
    let r = s.run(&["images", "--no-such-flag"]);
    assert_eq!(r.code, 125, "{}", r.stderr);
    let r = s.run(&["no-such-command"]);
    assert_eq!(r.code, 125, "{}", r.stderr);
}
