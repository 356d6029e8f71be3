//! Which accelerator a VM gets: KVM where it is backed by hardware
//! virtualisation, QEMU's TCG otherwise.
//!
//! A /dev/kvm can exist without VT-x/AMD-V behind it (nested set-ups such
//! as PVM, which this project's CI hosts use): a stock guest kernel then
//! crawls, slower than TCG. The probe is cheap and needs no guest: KVM
//! answers its API version and the CPU advertises vmx or svm.

use serde::Serialize;

/// An accelerator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// Hardware-assisted KVM.
    Kvm,
    /// QEMU's Tiny Code Generator (emulation).
    Tcg,
}

impl Accel {
    /// Its name on QEMU's command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// The accelerator to use and why. `BERTH_VM_ACCEL=kvm|tcg` overrides.
pub fn detect() -> (Accel, String) {
    match std::env::var("BERTH_VM_ACCEL").as_deref() {
        Ok("kvm") => return (Accel::Kvm, "BERTH_VM_ACCEL=kvm".into()),
        Ok("tcg") => return (Accel::Tcg, "BERTH_VM_ACCEL=tcg".into()),
        _ => {}
    }
    let kvm = crate::host::kvm();
    if !kvm.usable {
        return (Accel::Tcg, format!("KVM unusable: {}", kvm.detail));
    }
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    if hardware_virt(&cpuinfo) {
        (Accel::Kvm, "/dev/kvm with hardware virtualisation".into())
    } else {
        (
            Accel::Tcg,
            "/dev/kvm is software-assisted (no vmx/svm CPU flag): TCG is faster".into(),
        )
    }
}

/// Whether the CPU flags in /proc/cpuinfo include vmx (Intel) or svm (AMD).
fn hardware_virt(cpuinfo: &str) -> bool {
    cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .take(1)
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_flags() {
        assert!(hardware_virt("flags\t\t: fpu vme vmx sse\n"));
        assert!(hardware_virt("flags\t\t: fpu svm\n"));
        assert!(!hardware_virt("flags\t\t: fpu hypervisor sse\n"));
        assert!(!hardware_virt(""));
    }
}
