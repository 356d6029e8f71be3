//! A container run as a microVM (`--isolation vm`): the monitor's side.
//!
//! One run boots one VM (`berth_runtime::microvm`) and talks to its agent
//! over the agent socket (`vm/agent.sock`, which the hypervisor connects
//! to). The monitor routes the agent's frames: the main process's output
//! goes to the log (and our terminal in the foreground), exec sessions'
//! frames go to the clients of the control socket (`vm/control.sock`),
//! which `exec` and `kill` connect to. Clients speak the agent protocol
//! themselves, with session 0 meaning "my own exec" and [`proto::MAIN`] the
//! container's process; the monitor only renumbers sessions.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use berth_agent::{self as proto, Frame, Kind};
use berth_runtime::cgroups::CgroupManager;
use berth_runtime::microvm::{
    self, Disk, RunningVm, VmConfig, VmError, assets, disk, initramfs, snapshot,
};
use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};

use super::Container;
use super::monitor::{Log, Mode};
use super::stdio;
use crate::Engine;
use crate::run::RunError;
use crate::spec::{RunOptions, SpecError};
use berth_runtime::linux::StartError;

/// The socket the hypervisor connects the agent's port to (in `vm/`).
pub const AGENT_SOCKET: &str = "agent.sock";
/// The socket `exec` and `kill` connect to (in `vm/`).
pub const CONTROL_SOCKET: &str = "control.sock";
/// `BERTH_VM_TRACE=1`: when each step of starting a VM was reached, on
/// stderr, in ms since the first (for `bench/vm.sh --phases`).
fn trace(what: &str) {
    static T0: std::sync::OnceLock<Option<Instant>> = std::sync::OnceLock::new();
    let t0 = T0.get_or_init(|| std::env::var_os("BERTH_VM_TRACE").map(|_| Instant::now()));
    if let Some(t0) = t0 {
        eprintln!(
            "berth: vm trace: {:8.1} ms {what}",
            t0.elapsed().as_secs_f64() * 1000.0
        );
    }
}

/// The tap device of a VM on a network (in the hypervisor's own namespace).
const TAP: &str = "tap0";

/// A stable, locally administered MAC address for a container's guest NIC.
fn mac_for(id: &str) -> String {
    let b = id.as_bytes();
    let hex = |i: usize| std::str::from_utf8(&b[i..i + 2]).unwrap_or("00");
    format!("02:{}:{}:{}:{}:{}", hex(0), hex(2), hex(4), hex(6), hex(8))
}

/// How long a guest may take from launch to its agent's first word. Under
/// TCG a boot takes about a second; a loaded CI machine may take far longer.
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);

/// What `inspect` shows of a VM.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmInfo {
    /// e.g. `qemu-microvm (tcg)`.
    pub hypervisor: String,
    /// Guest kernel release.
    pub kernel: String,
    /// vCPUs.
    pub vcpus: u32,
    /// Guest RAM in MiB.
    pub memory_mib: u64,
}

/// The isolation a container runs with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// Namespaces and cgroups on the host kernel.
    #[default]
    Container,
    /// Its own kernel in a microVM.
    Vm,
}

impl Isolation {
    /// Parses `container` or `vm`.
    pub fn parse(s: &str) -> Result<Isolation, SpecError> {
        match s {
            "container" | "default" | "process" => Ok(Isolation::Container),
            "vm" | "microvm" => Ok(Isolation::Vm),
            _ => Err(SpecError(format!(
                "invalid isolation \"{s}\": use container or vm"
            ))),
        }
    }

    /// `container` or `vm`.
    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::Container => "container",
            Isolation::Vm => "vm",
        }
    }
}

/// The isolation `run` and `create` use without `--isolation`: the
/// `isolation` key of berth's configuration file, else `container`.
pub fn default_isolation() -> Result<Isolation, SpecError> {
    let cfg = berth_registry::config::Config::load().map_err(|e| SpecError(e.to_string()))?;
    match &cfg.isolation {
        Some(s) => {
            Isolation::parse(s).map_err(|e| SpecError(format!("{}: {e}", cfg.path.display())))
        }
        None => Ok(Isolation::Container),
    }
}

/// `system prune`'s part for VMs: root file system exports of images that are
/// gone, and what an interrupted export or template left. Returns bytes freed.
pub fn prune_shared(engine: &Engine) -> u64 {
    let shared = engine.root().join("vm");
    let live: std::collections::HashSet<String> = engine
        .images()
        .list()
        .unwrap_or_default()
        .iter()
        .filter_map(|i| engine.images().resolve(&i.id.to_string()).ok())
        .filter_map(|i| i.layers.last().cloned())
        .map(|l| format!("{}.erofs", l.chain_id.to_string().replace(':', "-")))
        .collect();
    let mut freed = 0;
    let mut remove = |p: &Path| {
        freed += fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let _ = if p.is_dir() {
            fs::remove_dir_all(p)
        } else {
            fs::remove_file(p)
        };
    };
    for dir in [shared.clone(), shared.join("rootfs")] {
        for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            // An export and the qcow2 the VMs see it through go together.
            let export = name.strip_suffix(".qcow2").unwrap_or(&name);
            let stale_export = dir.ends_with("rootfs")
                && export.ends_with(".erofs")
                && !live.contains(export)
                && export != "empty.erofs";
            if name.starts_with(".export-") || name.starts_with(".template-") || stale_export {
                remove(&e.path());
            }
        }
    }
    // Initramfs files of agents other than the one VMs now get.
    if let Ok(agent) = assets::agent()
        && let Ok(current) = initramfs::file_name(&agent)
    {
        freed += initramfs::prune(&shared.join("initramfs"), &current);
    }
    freed + snapshot::prune(&shared.join("snapshots"))
}

/// vCPUs (`--cpus` rounded up, default 1) and guest RAM in MiB (`--memory`,
/// default 256), checked against what a guest needs to boot.
pub fn resources(o: &RunOptions) -> Result<(u32, u64), SpecError> {
    let vcpus = match &o.cpus {
        Some(c) => {
            let n: f64 = c.parse().map_err(|_| {
                SpecError(format!(
                    "invalid value \"{c}\" for --cpus: expected a number"
                ))
            })?;
            if !(n > 0.0 && n <= 255.0) {
                return Err(SpecError(format!(
                    "invalid value \"{c}\" for --cpus: a VM has 1 to 255 vCPUs"
                )));
            }
            n.ceil() as u32
        }
        None => 1,
    };
    let memory_mib = match &o.memory {
        Some(m) => {
            let bytes = crate::spec::parse_size("--memory", m)?;
            let mib = (bytes as u64).div_ceil(1 << 20);
            if mib < microvm::MIN_MEMORY_MIB {
                return Err(SpecError(format!(
                    "--memory {m} is below the {} MiB a VM needs to boot",
                    microvm::MIN_MEMORY_MIB
                )));
            }
            mib
        }
        None => microvm::DEFAULT_MEMORY_MIB,
    };
    Ok((vcpus, memory_mib))
}

impl From<VmError> for RunError {
    fn from(e: VmError) -> RunError {
        RunError::Start(StartError::Setup(e.to_string()))
    }
}

fn io_err(p: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> RunError {
    let path = p.into();
    move |source| RunError::Io { path, source }
}

fn setup(msg: impl Into<String>) -> RunError {
    RunError::Start(StartError::Setup(msg.into()))
}

/// A writer to the agent shared by every thread: one frame per write.
type Writer = Arc<Mutex<UnixStream>>;

fn send(w: &Writer, f: &Frame) -> io::Result<()> {
    let mut s = w.lock().unwrap_or_else(|p| p.into_inner());
    s.write_all(&f.encode())
}

/// What the router hands the monitor's loop.
enum Event {
    /// A frame for [`proto::MAIN`] or [`proto::VM`].
    Frame(Frame),
    /// The agent's stream ended (the VM is gone).
    Gone,
}

/// Exec sessions: agent session number → the client's stream.
type Sessions = Arc<Mutex<HashMap<u32, UnixStream>>>;

/// Boots the VM, runs the container's process in it until it exits, and
/// returns its exit code and how long it ran. `running` is called once the
/// process runs, with the hypervisor's PID (the record's `pid`).
#[allow(clippy::too_many_arguments)]
pub(super) fn run_once(
    engine: &Engine,
    rec: &Container,
    spec: &Spec,
    mode: &mut Mode<'_>,
    log: &mut Log,
    cg: &dyn CgroupManager,
    attach: Option<UnixListener>,
    running: &mut dyn FnMut(i32, &VmInfo) -> Result<(), RunError>,
) -> Result<(i32, Duration), RunError> {
    let dir = engine.containers().dir(&rec.id);
    let vmdir = dir.join("vm");
    fs::create_dir_all(&vmdir).map_err(io_err(&vmdir))?;
    let shared = engine.root().join("vm");
    trace("begin");
    let kernel = assets::kernel()?;
    let agent = assets::agent()?;
    let initramfs = initramfs::for_agent(&agent, &shared.join("initramfs"))?;

    // The image's root file system, exported once per chain ID.
    let img = engine
        .images()
        .resolve(&rec.image_id)
        .map_err(crate::EngineError::from)?;
    let key = img
        .layers
        .last()
        .map(|l| l.chain_id.to_string().replace(':', "-"))
        .unwrap_or_else(|| "empty".into());
    let rootfs = shared.join("rootfs").join(format!("{key}.erofs"));
    trace("assets");
    disk::export_erofs(&engine.images().lowerdirs(&img), &rootfs).map_err(|e| {
        setup(format!(
            "cannot export the root file system of image {}: {e}",
            rec.image
        ))
    })?;
    let read_only = spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false);
    let (image_disk, size) = disk::image_disk(&rootfs).map_err(|e| {
        setup(format!(
            "cannot export the root file system of image {}: {e}",
            rec.image
        ))
    })?;
    let mut disks = vec![Disk {
        path: image_disk,
        format: "qcow2",
        read_only: true,
        size,
    }];
    let writable = if read_only {
        None
    } else {
        let template = disk::writable_template(&shared)?;
        let layer = vmdir.join("writable.qcow2");
        disk::writable_layer(&template, &layer)?;
        disks.push(Disk {
            path: layer,
            format: "qcow2",
            read_only: false,
            size: disk::DISK_BYTES,
        });
        Some("/dev/vdb".to_string())
    };
    let t = microvm::spec::boot_from_spec(
        spec,
        &dir,
        proto::Rootfs {
            image: "/dev/vda".into(),
            image_fstype: "erofs".into(),
            writable,
            read_only,
        },
    )?;
    for w in &t.warnings {
        warn(mode, log, w);
    }
    let (vcpus, memory_mib) = resources(&rec.options)?;
    let nic = match crate::network::Mode::parse(rec.options.network.as_deref()) {
        crate::network::Mode::None => None,
        crate::network::Mode::Network(_) => Some(microvm::Nic {
            tap: TAP.into(),
            mac: match &rec.options.mac_address {
                Some(m) => m.to_ascii_lowercase(),
                None => mac_for(&rec.id),
            },
        }),
        other => {
            return Err(setup(format!(
                "--network {} is not available to a VM",
                other.name()
            )));
        }
    };
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| setup("the container has no process"))?;
    let interactive = matches!(mode, Mode::Foreground { stdin: true, .. });
    let tty = process.terminal().unwrap_or(false);
    let main = microvm::spec::process_from_spec(process, interactive || attach.is_some());

    // The agent socket listens before the VM starts, so nothing is lost.
    let vmdir_fd = File::open(&vmdir).map_err(io_err(&vmdir))?;
    let listener =
        stdio::bind_in(&vmdir, AGENT_SOCKET).map_err(io_err(vmdir.join(AGENT_SOCKET)))?;
    let cfg = VmConfig {
        kernel: kernel.path.clone(),
        initramfs,
        cmdline: if std::env::var_os("BERTH_VM_TRACE").is_some() {
            "berth.trace".into()
        } else {
            String::new()
        },
        vcpus,
        memory_mib,
        disks,
        shares: t.shares,
        nic: nic.clone(),
        // Short, whatever the store's path: through our descriptor of vm/.
        agent_socket: format!(
            "/proc/{}/fd/{}/{AGENT_SOCKET}",
            std::process::id(),
            vmdir_fd.as_raw_fd()
        )
        .into(),
        console_log: vmdir.join("console.log"),
        hypervisor_log: vmdir.join("hypervisor.log"),
        control_socket: None,
        restore: None,
    };
    trace("disks");
    let hv = microvm::hypervisor()?;
    let mut cfg = cfg;
    // Resume a guest that has booted already (made on the first start of
    // this shape), unless that is impossible here.
    let mut warm_hello = None;
    if snapshot::enabled() {
        match snapshot::prepare(hv.as_ref(), &cfg, &shared.join("snapshots"))? {
            snapshot::Warm::Ready(snap) => {
                cfg.restore = Some(snap.state);
                warm_hello = Some(snap.hello);
            }
            snapshot::Warm::Unavailable(why) => {
                warn(mode, log, &format!("booting the VM: no warm start ({why})"))
            }
        }
        trace("snapshot");
    }
    let cfg = cfg;
    let mut vm = hv.launch(&cfg)?;
    trace("hypervisor launched");
    let _ = cg.add_process(vm.pid());
    let booted = (|| {
        let stream = accept_agent(&listener, vm.as_mut(), &cfg)?;
        trace("agent connected");
        let _ = fs::remove_file(vmdir.join(AGENT_SOCKET));
        let mut reader = stream.try_clone().map_err(io_err("agent socket"))?;
        let writer: Writer = Arc::new(Mutex::new(stream));
        let mut boot = t.boot.clone();
        if let Some(n) = &nic {
            // While the guest boots: the hypervisor's namespace joins the network
            // through CNI, exactly as a container's would, and its tap is joined to
            // the interface CNI made there.
            // A hypervisor that died meanwhile is the error to report, not the
            // network set-up that failed for want of it.
            let net_err = |vm: &mut dyn RunningVm, e: String| match vm.try_wait() {
                Ok(Some(st)) => hypervisor_failed(&cfg, &format!("it exited with status {st}")),
                _ => setup(format!("network: {e}")),
            };
            if let Err(e) = crate::network::attach(engine, rec, vm.pid()) {
                return Err(net_err(vm.as_mut(), e));
            }
            let st = engine
                .net_state(&rec.id)
                .ok_or_else(|| setup("network: no address after CNI ADD"))?;
            let tapped = berth_net::tap::connect(
                &engine.netns_path(&rec.id),
                crate::network::IFNAME,
                &n.tap,
                st.mtu,
                &mut || matches!(vm.try_wait(), Ok(None)),
            );
            if let Err(e) = tapped {
                return Err(net_err(vm.as_mut(), e.to_string()));
            }
            // The attach wrote /etc/hosts with the address it got.
            boot = microvm::spec::boot_from_spec(spec, &dir, t.boot.rootfs.clone())?.boot;
            boot.interfaces.push(proto::Interface {
                mac: n.mac.clone(),
                address: st.ip,
                prefix: st.prefix,
                gateway: st.gateway,
                mtu: st.mtu,
            });
        }
        trace("network attached");
        // A resumed guest greeted its template's host already.
        let hello: proto::Hello = match warm_hello.take() {
            Some(h) => h,
            None => expect(&mut reader, Kind::Ready, vm.as_mut(), &cfg)?
                .parse()
                .map_err(|e| setup(format!("the VM's agent: {e}")))?,
        };
        trace("agent ready (guest booted)");
        boot.clock_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        boot.seed = seed().map_err(io_err("/dev/urandom"))?;
        send(&writer, &Frame::json(Kind::Boot, proto::VM, &boot)).map_err(io_err("agent"))?;
        expect(&mut reader, Kind::Ready, vm.as_mut(), &cfg)?;
        trace("boot done");
        send(&writer, &Frame::json(Kind::Start, proto::MAIN, &main)).map_err(io_err("agent"))?;
        expect(&mut reader, Kind::Started, vm.as_mut(), &cfg)?;
        trace("started");
        Ok::<_, RunError>((reader, writer, hello))
    })();
    let (mut reader, writer, hello) = match booted {
        Ok(b) => b,
        Err(e) => {
            // The agent's socket failing means the hypervisor is on its way
            // out: give it a moment to be seen gone.
            let mut died = !matches!(vm.try_wait(), Ok(None));
            if !died && matches!(e, RunError::Io { .. }) {
                let until = Instant::now() + Duration::from_secs(1);
                while !died && Instant::now() < until {
                    std::thread::sleep(Duration::from_millis(10));
                    died = !matches!(vm.try_wait(), Ok(None));
                }
            }
            vm.kill();
            // A snapshot the hypervisor could not resume is not kept for the
            // next start (which makes it again).
            if died && let Some(dir) = cfg.restore.as_ref().and_then(|p| p.parent()) {
                let _ = fs::remove_dir_all(dir);
                let why = match hypervisor_failed(&cfg, "it stopped while resuming a saved guest") {
                    RunError::Start(StartError::Setup(m)) => m,
                    _ => e.to_string(),
                };
                return Err(setup(format!(
                    "{why}\n(the VM was resumed from the saved guest {}, which is now removed: the next start boots afresh)",
                    dir.display()
                )));
            }
            let _ = fs::remove_file(vmdir.join(AGENT_SOCKET));
            return Err(e);
        }
    };
    drop(listener);
    let info = VmInfo {
        hypervisor: hv.name(),
        kernel: hello.kernel,
        vcpus,
        memory_mib,
    };
    let _ = reader.set_read_timeout(None);
    // Route the agent's frames.
    let sessions: Sessions = Arc::default();
    let (tx, rx) = mpsc::channel::<Event>();
    {
        let sessions = sessions.clone();
        std::thread::spawn(move || route(&mut reader, &sessions, &tx));
    }
    let stop = Arc::new(AtomicBool::new(false));
    // Bound before the record says "running": `kill` and `exec` may come at once.
    let control =
        stdio::bind_in(&vmdir, CONTROL_SOCKET).map_err(io_err(vmdir.join(CONTROL_SOCKET)))?;
    let control_fd = control.as_raw_fd();
    {
        let (writer, sessions) = (writer.clone(), sessions.clone());
        std::thread::spawn(move || serve_control(control, &writer, &sessions));
    }
    running(vm.pid(), &info)?;
    if let Mode::Detached(fd) = mode {
        // Closing the start pipe with nothing written means "started".
        drop(fd.take());
        // From here the monitor only routes frames for as long as the VM runs.
        berth_runtime::memory::shed_startup_pages();
    }

    let ran_since = Instant::now();
    let foreground = matches!(mode, Mode::Foreground { .. });
    let _raw = (foreground && tty && interactive).then(stdio::RawMode::enter);
    if foreground {
        forward_signals(&writer, proto::MAIN, tty);
        if interactive {
            let (writer, stop) = (writer.clone(), stop.clone());
            std::thread::spawn(move || feed_stdin(&writer, proto::MAIN, &stop, tty));
        }
    }
    if let Some(l) = attach {
        let (writer, once) = (writer.clone(), rec.options.stdin_once);
        std::thread::spawn(move || feed_attach(l, &writer, once && !tty));
    }

    let mut code = None;
    for ev in rx {
        match ev {
            Event::Frame(f) if f.session == proto::MAIN => match f.kind {
                Kind::Stdout | Kind::Stderr => {
                    let stream = usize::from(f.kind == Kind::Stderr);
                    let _ = log.write(stream, &f.payload);
                    if foreground {
                        echo(stream, &f.payload);
                    }
                }
                Kind::Exit => {
                    code = f.parse::<proto::Exited>().ok().map(|e| e.code);
                    break;
                }
                _ => {}
            },
            Event::Frame(_) => {}
            Event::Gone => break,
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = log.flush();
    let _ = send(&writer, &Frame::empty(Kind::Shutdown, proto::VM));
    trace("exit");
    vm.wait_or_kill(Duration::from_secs(10));
    trace("hypervisor exited");
    // Wakes the control thread out of accept() so it ends.
    // SAFETY: shutdown takes integers; the listener is still open (owned by that thread).
    unsafe { libc::shutdown(control_fd, libc::SHUT_RDWR) };
    let _ = fs::remove_file(vmdir.join(CONTROL_SOCKET));
    let code = match code {
        Some(c) => c,
        None => {
            let tail = microvm::log_tail(&cfg.console_log);
            let _ = log.record(
                1,
                format!("berth: the VM ended before its process did{tail}\n").as_bytes(),
            );
            137
        }
    };
    Ok((code, ran_since.elapsed()))
}

/// Host entropy for the guest (`Boot.seed`).
fn seed() -> io::Result<Vec<u8>> {
    let mut b = vec![0u8; 64];
    File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b)
}

fn warn(mode: &mut Mode<'_>, log: &mut Log, w: &str) {
    match mode {
        Mode::Foreground { warn, .. } => warn(w.to_string()),
        Mode::Detached(_) => {
            let _ = log.record(1, format!("berth: WARNING: {w}\n").as_bytes());
        }
    }
}

/// Waits for the hypervisor to connect to the agent socket; a hypervisor
/// that exits first is an error carrying its stderr.
fn accept_agent(
    listener: &UnixListener,
    vm: &mut dyn RunningVm,
    cfg: &VmConfig,
) -> Result<UnixStream, RunError> {
    listener
        .set_nonblocking(true)
        .map_err(io_err("agent socket"))?;
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        match listener.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).map_err(io_err("agent socket"))?;
                return Ok(s);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(io_err("agent socket")(e)),
        }
        if let Ok(Some(status)) = vm.try_wait() {
            return Err(hypervisor_failed(
                cfg,
                &format!("it exited with status {status}"),
            ));
        }
        if Instant::now() > until {
            return Err(hypervisor_failed(
                cfg,
                "it did not connect to the agent socket",
            ));
        }
        let fd = listener.as_fd();
        let mut p = [rustix::event::PollFd::new(
            &fd,
            rustix::event::PollFlags::IN,
        )];
        let _ = rustix::event::poll(
            &mut p,
            Some(&rustix::event::Timespec {
                tv_sec: 0,
                tv_nsec: 20_000_000,
            }),
        );
    }
}

fn hypervisor_failed(cfg: &VmConfig, what: &str) -> RunError {
    let stderr = fs::read_to_string(&cfg.hypervisor_log).unwrap_or_default();
    setup(format!(
        "the hypervisor failed to start the VM: {what}{}",
        if stderr.trim().is_empty() {
            microvm::log_tail(&cfg.console_log)
        } else {
            format!(": {}", stderr.trim())
        }
    ))
}

/// Reads frames until one of `kind` for the VM or the main process comes;
/// `Error` becomes the start error it describes.
fn expect(
    r: &mut UnixStream,
    kind: Kind,
    vm: &mut dyn RunningVm,
    cfg: &VmConfig,
) -> Result<Frame, RunError> {
    let until = Instant::now() + BOOT_TIMEOUT;
    let _ = r.set_read_timeout(Some(Duration::from_millis(250)));
    loop {
        match Frame::read_from(r) {
            Ok(Some(f)) if f.kind == kind => return Ok(f),
            Ok(Some(f)) if f.kind == Kind::Error => {
                let e: proto::Failure = f.parse().map_err(|e| setup(e.to_string()))?;
                return Err(RunError::Start(match e.code {
                    127 => StartError::NotFound(e.message),
                    126 => StartError::NotExecutable(e.message),
                    _ => StartError::Setup(e.message),
                }));
            }
            // Nothing else is expected before the process runs.
            Ok(Some(_)) => {}
            // The hypervisor closed its end (a reset when it went away with
            // our frame unread): it is ending; its stderr says why.
            Ok(None) => return Err(stopped_while_starting(vm, cfg)),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                return Err(stopped_while_starting(vm, cfg));
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if let Ok(Some(status)) = vm.try_wait() {
                    return Err(hypervisor_failed(
                        cfg,
                        &format!("it exited with status {status}"),
                    ));
                }
                if Instant::now() > until {
                    return Err(setup(format!(
                        "the VM's agent did not answer within {} s{}",
                        BOOT_TIMEOUT.as_secs(),
                        microvm::log_tail(&cfg.console_log)
                    )));
                }
            }
            Err(e) => return Err(setup(format!("the VM's agent: {e}"))),
        }
    }
}

fn stopped_while_starting(vm: &mut dyn RunningVm, cfg: &VmConfig) -> RunError {
    let status = vm.wait_or_kill(Duration::from_secs(2));
    hypervisor_failed(
        cfg,
        &format!("the VM stopped while starting (status {status})"),
    )
}

/// The router: MAIN and VM frames to the monitor, exec frames to their clients.
fn route(r: &mut UnixStream, sessions: &Sessions, tx: &mpsc::Sender<Event>) {
    while let Ok(Some(mut f)) = Frame::read_from(r) {
        if f.session <= proto::MAIN {
            if tx.send(Event::Frame(f)).is_err() {
                break;
            }
            continue;
        }
        let mut s = sessions.lock().unwrap_or_else(|p| p.into_inner());
        let ends = matches!(f.kind, Kind::Exit | Kind::Error);
        let session = f.session;
        f.session = 0;
        let delivered = s
            .get_mut(&session)
            .is_some_and(|c| c.write_all(&f.encode()).is_ok());
        if (ends || !delivered)
            && let Some(c) = s.remove(&session)
        {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }
    // The VM is gone: so are its exec sessions.
    for (_, c) in sessions.lock().unwrap_or_else(|p| p.into_inner()).drain() {
        let _ = c.shutdown(std::net::Shutdown::Both);
    }
    let _ = tx.send(Event::Gone);
}

static NEXT_SESSION: AtomicU32 = AtomicU32::new(proto::FIRST_EXEC);

/// Accepts `exec`/`kill` clients until the listener is shut down.
fn serve_control(l: UnixListener, writer: &Writer, sessions: &Sessions) {
    while let Ok((c, _)) = l.accept() {
        let (writer, sessions) = (writer.clone(), sessions.clone());
        std::thread::spawn(move || serve_client(c, &writer, &sessions));
    }
}

/// One client: frames for session 0 are its own exec session, frames for
/// MAIN reach the container's process (signals, resize, input).
fn serve_client(mut c: UnixStream, writer: &Writer, sessions: &Sessions) {
    let mut own: Option<u32> = None;
    while let Ok(Some(mut f)) = Frame::read_from(&mut c) {
        if f.session == proto::MAIN {
            if matches!(
                f.kind,
                Kind::Signal | Kind::Resize | Kind::Stdin | Kind::StdinEof
            ) && send(writer, &f).is_err()
            {
                break;
            }
            continue;
        }
        let n = match (own, f.kind) {
            (Some(n), _) => n,
            (None, Kind::Start) => {
                let n = NEXT_SESSION.fetch_add(1, Ordering::Relaxed);
                let Ok(back) = c.try_clone() else { break };
                sessions
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(n, back);
                own = Some(n);
                n
            }
            // Anything but Start before a session exists is ignored.
            (None, _) => continue,
        };
        if f.kind == Kind::Start && own != Some(n) {
            continue;
        }
        f.session = n;
        if send(writer, &f).is_err() {
            break;
        }
    }
}

/// Writes output to our stdout (0) or stderr (1).
fn echo(stream: usize, data: &[u8]) {
    let _ = if stream == 0 {
        let mut out = io::stdout().lock();
        out.write_all(data).and_then(|_| out.flush())
    } else {
        io::stderr().write_all(data)
    };
}

/// Copies our stdin to a session until it ends (then `StdinEof`, except on
/// a terminal, which has no end of input) or `stop` is set.
fn feed_stdin(writer: &Writer, session: u32, stop: &AtomicBool, tty: bool) {
    let mut buf = vec![0u8; 16 << 10];
    let stdin = io::stdin();
    while !stop.load(Ordering::Relaxed) {
        let fd = stdin.as_fd();
        let mut p = [rustix::event::PollFd::new(
            &fd,
            rustix::event::PollFlags::IN,
        )];
        let timeout = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 200_000_000,
        };
        match rustix::event::poll(&mut p, Some(&timeout)) {
            Ok(0) | Err(rustix::io::Errno::INTR) => continue,
            Ok(_) => {}
            Err(_) => break,
        }
        match stdin.lock().read(&mut buf) {
            Ok(n) if n > 0 => {
                let f = Frame {
                    kind: Kind::Stdin,
                    session,
                    payload: buf[..n].to_vec(),
                };
                if send(writer, &f).is_err() {
                    return;
                }
            }
            _ => {
                if !tty {
                    let _ = send(writer, &Frame::empty(Kind::StdinEof, session));
                }
                return;
            }
        }
    }
}

/// A detached `-i` container's input: `start -i` clients' bytes, one client
/// at a time; with StdinOnce the first client's end closes the input.
fn feed_attach(l: UnixListener, writer: &Writer, once: bool) {
    let mut buf = vec![0u8; 16 << 10];
    while let Ok((mut c, _)) = l.accept() {
        loop {
            match c.read(&mut buf) {
                Ok(n) if n > 0 => {
                    let f = Frame {
                        kind: Kind::Stdin,
                        session: proto::MAIN,
                        payload: buf[..n].to_vec(),
                    };
                    if send(writer, &f).is_err() {
                        return;
                    }
                }
                _ => break,
            }
        }
        if once {
            let _ = send(writer, &Frame::empty(Kind::StdinEof, proto::MAIN));
            return;
        }
    }
}

/// Where forwarded signals go: a session on the current VM's agent.
static SIGNAL_TARGET: Mutex<Option<(Writer, u32, bool)>> = Mutex::new(None);
static SIGNAL_PIPE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(sig: libc::c_int) {
    let fd = SIGNAL_PIPE.load(Ordering::Relaxed);
    if fd >= 0 {
        let b = sig as u8;
        // SAFETY: write(2) is async-signal-safe; `b` lives for the call.
        unsafe { libc::write(fd, (&raw const b).cast(), 1) };
    }
}

/// Forwards the signals a user sends us (^C, `kill`) to `session` in the
/// guest, and with `tty` our window size changes too.
fn forward_signals(writer: &Writer, session: u32, tty: bool) {
    *SIGNAL_TARGET.lock().unwrap_or_else(|p| p.into_inner()) = Some((writer.clone(), session, tty));
    if SIGNAL_PIPE.load(Ordering::Relaxed) >= 0 {
        return;
    }
    let Ok((r, w)) = std::io::pipe() else { return };
    SIGNAL_PIPE.store(std::os::fd::IntoRawFd::into_raw_fd(w), Ordering::Relaxed);
    std::thread::spawn(move || {
        let mut r = r;
        let mut b = [0u8; 1];
        while let Ok(1) = r.read(&mut b) {
            let Some((w, session, tty)) = SIGNAL_TARGET
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
            else {
                continue;
            };
            let sig = i32::from(b[0]);
            let f = if sig == libc::SIGWINCH {
                if !tty {
                    continue;
                }
                let (rows, cols) = stdio::our_size();
                Frame::json(Kind::Resize, session, &proto::WindowSize { rows, cols })
            } else {
                Frame::json(Kind::Signal, session, &proto::Signal { signal: sig })
            };
            let _ = send(&w, &f);
        }
    });
    for sig in [
        libc::SIGINT,
        libc::SIGTERM,
        libc::SIGHUP,
        libc::SIGQUIT,
        libc::SIGUSR1,
        libc::SIGUSR2,
        libc::SIGWINCH,
    ] {
        // SAFETY: the handler only writes one byte to a pipe (async-signal-safe).
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
}

/// Sends `signal` to a VM container's process.
pub fn signal(dir: &Path, signal: i32) -> Result<(), RunError> {
    let vmdir = dir.join("vm");
    let mut c =
        stdio::connect_in(&vmdir, CONTROL_SOCKET).map_err(io_err(vmdir.join(CONTROL_SOCKET)))?;
    Frame::json(Kind::Signal, proto::MAIN, &proto::Signal { signal })
        .write_to(&mut c)
        .map_err(io_err(vmdir.join(CONTROL_SOCKET)))
}

/// `exec` in a VM container: runs `p` in the guest and relays its stdio
/// with ours; returns its exit code (0 at once with `detach`).
pub fn exec(dir: &Path, p: &proto::Process, detach: bool) -> Result<i32, RunError> {
    let vmdir = dir.join("vm");
    let sock = vmdir.join(CONTROL_SOCKET);
    let c = stdio::connect_in(&vmdir, CONTROL_SOCKET).map_err(io_err(&sock))?;
    let writer: Writer = Arc::new(Mutex::new(c.try_clone().map_err(io_err(&sock))?));
    send(&writer, &Frame::json(Kind::Start, 0, p)).map_err(io_err(&sock))?;
    let mut r = c;
    let closed = || setup("the VM stopped during exec");
    // Started or Error first.
    loop {
        match Frame::read_from(&mut r).map_err(io_err(&sock))? {
            Some(f) if f.kind == Kind::Started => break,
            Some(f) if f.kind == Kind::Error => {
                let e: proto::Failure = f.parse().map_err(io_err(&sock))?;
                return Err(RunError::Start(match e.code {
                    127 => StartError::NotFound(e.message),
                    126 => StartError::NotExecutable(e.message),
                    _ => StartError::Setup(e.message),
                }));
            }
            Some(_) => {}
            None => return Err(closed()),
        }
    }
    if detach {
        let _ = send(&writer, &Frame::empty(Kind::StdinEof, 0));
        return Ok(0);
    }
    forward_signals(&writer, 0, p.terminal);
    let stop = Arc::new(AtomicBool::new(false));
    let _raw = (p.terminal && p.stdin).then(stdio::RawMode::enter);
    if p.stdin {
        let (writer, stop, tty) = (writer.clone(), stop.clone(), p.terminal);
        std::thread::spawn(move || feed_stdin(&writer, 0, &stop, tty));
    }
    let code = loop {
        match Frame::read_from(&mut r).map_err(io_err(&sock))? {
            Some(f) => match f.kind {
                Kind::Stdout => echo(0, &f.payload),
                Kind::Stderr => echo(1, &f.payload),
                Kind::Exit => break f.parse::<proto::Exited>().map_err(io_err(&sock))?.code,
                _ => {}
            },
            None => return Err(closed()),
        }
    };
    stop.store(true, Ordering::Relaxed);
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_resources() {
        let mut o = RunOptions::default();
        assert_eq!(resources(&o).unwrap(), (1, 256));
        o.cpus = Some("1.5".into());
        o.memory = Some("512m".into());
        assert_eq!(resources(&o).unwrap(), (2, 512));
        o.memory = Some("16m".into());
        let e = resources(&o).unwrap_err().to_string();
        assert!(e.contains("--memory 16m") && e.contains("64 MiB"), "{e}");
        o.memory = None;
        o.cpus = Some("0".into());
        assert!(resources(&o).is_err());
    }

    #[test]
    fn isolation_names() {
        assert_eq!(Isolation::parse("vm").unwrap(), Isolation::Vm);
        assert_eq!(Isolation::parse("container").unwrap(), Isolation::Container);
        assert!(
            Isolation::parse("hyperv")
                .unwrap_err()
                .to_string()
                .contains("hyperv")
        );
    }
}
