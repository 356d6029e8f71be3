//! QEMU's `microvm` machine: no PCI, no firmware tables beyond an MP table,
//! virtio-mmio devices announced on the kernel command line. The nearest
//! thing in QEMU to Firecracker's device model.

use std::ffi::OsString;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::accel::Accel;
use super::qmp::Qmp;
use super::{Hypervisor, RunningVm, VmConfig, VmError, io_at};

/// The kernel command line every VM gets: the serial console for kernel
/// messages, reboot by triple fault (no ACPI; QEMU's -no-reboot turns the
/// reset into an exit), and no time spent on hardware the machine lacks.
pub const BASE_CMDLINE: &str = "console=ttyS0 reboot=t panic=-1 quiet \
    i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd 8250.nr_uarts=1 \
    tsc=reliable no_timer_check rcupdate.rcu_expedited=1 random.trust_cpu=on";

/// The QEMU driver.
#[derive(Clone, Debug)]
pub struct Qemu {
    /// `qemu-system-x86_64`.
    pub binary: PathBuf,
    /// KVM or TCG.
    pub accel: Accel,
}

impl Qemu {
    /// Finds `qemu-system-x86_64` on PATH.
    pub fn find(accel: Accel) -> Result<Qemu, VmError> {
        let binary =
            crate::host::which("qemu-system-x86_64").ok_or_else(|| VmError::Hypervisor {
                hypervisor: "qemu-system-x86_64".into(),
                detail: "not found on PATH (Debian package qemu-system-x86)".into(),
            })?;
        Ok(Qemu { binary, accel })
    }

    /// The command line for `cfg`.
    pub fn args(&self, cfg: &VmConfig) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::new();
        let mut push = |s: &str| a.push(s.into());
        push("-M");
        push(&format!(
            "microvm,accel={},acpi=off,pcie=off,usb=off",
            self.accel.as_str()
        ));
        push("-cpu");
        push(match self.accel {
            Accel::Kvm => "host",
            Accel::Tcg => "max",
        });
        push("-smp");
        push(&cfg.vcpus.max(1).to_string());
        push("-m");
        push(&format!("{}M", cfg.memory_mib));
        for s in [
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
        ] {
            push(s);
        }
        push("-serial");
        push(&format!("file:{}", cfg.console_log.display()));
        push("-kernel");
        push(&cfg.kernel.display().to_string());
        push("-initrd");
        push(&cfg.initramfs.display().to_string());
        push("-append");
        push(format!("{BASE_CMDLINE} {}", cfg.cmdline).trim());
        for (i, d) in cfg.disks.iter().enumerate() {
            push("-drive");
            push(&format!(
                "id=disk{i},file={},format={},if=none,readonly={},discard=unmap",
                escape(&d.path.display().to_string()),
                d.format,
                if d.read_only { "on" } else { "off" },
            ));
            push("-device");
            push(&format!("virtio-blk-device,drive=disk{i}"));
        }
        for s in &cfg.shares {
            push("-fsdev");
            push(&format!(
                "local,id={},path={},security_model=passthrough{}",
                s.tag,
                escape(&s.path.display().to_string()),
                if s.read_only { ",readonly=on" } else { "" }
            ));
            push("-device");
            push(&format!("virtio-9p-device,fsdev={0},mount_tag={0}", s.tag));
        }
        if let Some(n) = &cfg.nic {
            push("-netdev");
            push(&format!(
                "tap,id=net0,ifname={},script=no,downscript=no",
                n.tap
            ));
            push("-device");
            push(&format!("virtio-net-device,netdev=net0,mac={}", n.mac));
        }
        push("-device");
        push("virtio-serial-device,max_ports=2");
        push("-chardev");
        push(&format!(
            "socket,id=agent,path={}",
            escape(&cfg.agent_socket.display().to_string())
        ));
        push("-device");
        push(&format!(
            "virtserialport,chardev=agent,name={}",
            berth_agent::PORT_NAME
        ));
        if let Some(c) = &cfg.control_socket {
            push("-qmp");
            push(&format!(
                "unix:{},server=on,wait=off",
                escape(&c.display().to_string())
            ));
        }
        a
    }
}

/// QEMU option values separate on commas; a comma in a path is doubled.
fn escape(s: &str) -> String {
    s.replace(',', ",,")
}

impl Hypervisor for Qemu {
    fn name(&self) -> String {
        format!("qemu-microvm ({})", self.accel.as_str())
    }

    fn identity(&self) -> String {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(&self.binary);
        format!(
            "{} {:?}",
            self.binary.display(),
            m.map(|m| (m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
                .ok()
        )
    }

    fn launch(&self, cfg: &VmConfig) -> Result<Box<dyn RunningVm>, VmError> {
        let log = File::create(&cfg.hypervisor_log).map_err(io_at(&cfg.hypervisor_log))?;
        let log2 = log.try_clone().map_err(io_at(&cfg.hypervisor_log))?;
        let mut cmd = Command::new(&self.binary);
        cmd.args(self.args(cfg))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        // A saved state is read from a descriptor QEMU inherits: no shell, no
        // copy through a pipe.
        let state = match &cfg.restore {
            Some(p) => Some(File::open(p).map_err(io_at(p))?),
            None => None,
        };
        let state_fd = state.as_ref().map(|f| f.as_raw_fd());
        if let Some(fd) = state_fd {
            cmd.arg("-incoming").arg(format!("fd:{fd}"));
        }
        // With a NIC it gets a network namespace of its own, where it creates the
        // tap device. The VM dies with the thread that launched it: no stray
        // hypervisor when a monitor is killed.
        let own_netns = cfg.nic.is_some();
        // SAFETY: runs in the forked child before exec; prctl and unshare are
        // async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if own_netns && libc::unshare(libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if let Some(fd) = state_fd
                    && libc::fcntl(fd, libc::F_SETFD, 0) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| VmError::Hypervisor {
            hypervisor: self.binary.display().to_string(),
            detail: e.to_string(),
        })?;
        drop(state);
        Ok(Box::new(QemuVm { child }))
    }

    fn save(&self, vm: &mut dyn RunningVm, cfg: &VmConfig, to: &Path) -> Result<(), VmError> {
        let fail = |detail: String| VmError::Hypervisor {
            hypervisor: self.name(),
            detail: format!("saving the VM's state: {detail}"),
        };
        let socket = cfg
            .control_socket
            .as_ref()
            .ok_or_else(|| fail("the VM has no control socket".into()))?;
        let mut q =
            Qmp::connect(socket, Duration::from_secs(10)).map_err(|e| fail(e.to_string()))?;
        // Not stopped first: QEMU resumes a saved state only if it was saved
        // running (the idle guest's few dirty pages converge at once, and the
        // migration stops it for the last pass).
        // QEMU 7.2 has no file: URI; `exec:` runs the command with /bin/sh.
        let quoted = format!("'{}'", to.display().to_string().replace('\'', "'\\''"));
        q.execute(
            "migrate",
            Some(serde_json::json!({ "uri": format!("exec:cat > {quoted}") })),
        )
        .map_err(|e| fail(e.to_string()))?;
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            let st = q
                .execute("query-migrate", None)
                .map_err(|e| fail(e.to_string()))?;
            match st.get("status").and_then(|s| s.as_str()) {
                Some("completed") => return Ok(()),
                Some("failed" | "cancelled") => {
                    let why = st
                        .get("error-desc")
                        .and_then(|s| s.as_str())
                        .unwrap_or("migration failed");
                    return Err(fail(why.to_string()));
                }
                _ if Instant::now() > until => return Err(fail("timed out".into())),
                _ => {}
            }
            if !matches!(vm.try_wait(), Ok(None)) {
                return Err(fail("the hypervisor exited".into()));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// A running QEMU.
struct QemuVm {
    child: Child,
}

impl RunningVm for QemuVm {
    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn try_wait(&mut self) -> std::io::Result<Option<i32>> {
        use std::os::unix::process::ExitStatusExt;
        Ok(self
            .child
            .try_wait()?
            .map(|s| s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0))))
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for QemuVm {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::microvm::{Disk, Share};

    #[test]
    fn command_line() {
        let q = Qemu {
            binary: "qemu-system-x86_64".into(),
            accel: Accel::Tcg,
        };
        let cfg = VmConfig {
            kernel: "/k/vmlinux".into(),
            initramfs: "/k/init.cpio".into(),
            cmdline: String::new(),
            vcpus: 2,
            memory_mib: 256,
            disks: vec![Disk {
                path: "/a,b/root.erofs".into(),
                format: "raw",
                read_only: true,
                size: 1 << 20,
            }],
            shares: vec![Share {
                tag: "s0".into(),
                path: "/data".into(),
                read_only: false,
            }],
            nic: Some(crate::microvm::Nic {
                tap: "tap0".into(),
                mac: "02:00:00:00:00:01".into(),
            }),
            agent_socket: "/c/agent.sock".into(),
            console_log: "/c/console.log".into(),
            hypervisor_log: "/c/qemu.log".into(),
            control_socket: Some("/c/qmp.sock".into()),
            restore: None,
        };
        let a: Vec<String> = q
            .args(&cfg)
            .into_iter()
            .map(|s| s.into_string().unwrap())
            .collect();
        let joined = a.join(" ");
        assert!(joined.contains("microvm,accel=tcg,acpi=off"));
        assert!(joined.contains("-smp 2 -m 256M"));
        assert!(joined.contains("file=/a,,b/root.erofs,format=raw,if=none,readonly=on"));
        assert!(joined.contains("local,id=s0,path=/data,security_model=passthrough -device"));
        assert!(joined.contains("name=org.berth.agent.0"));
        assert!(!joined.contains("-nographic"));
        assert!(joined.ends_with("-qmp unix:/c/qmp.sock,server=on,wait=off"));
        assert!(joined.contains("tap,id=net0,ifname=tap0,script=no,downscript=no -device virtio-net-device,netdev=net0,mac=02:00:00:00:00:01"));
    }
}
