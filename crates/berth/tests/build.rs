//! `berth build`: config instructions, COPY/ADD, RUN layers with whiteouts,
//! multi-stage builds, build args, the layer cache, and bad input.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{Store, fixture};
use serde_json::Value;

struct Ctx {
    store: Store,
    dir: PathBuf,
}

/// A private store with busybox, and an empty context directory.
fn setup() -> Ctx {
    let store = Store::new();
    store.ok(&["load", "-q", "-i", &fixture("busybox.oci.tar")]);
    let dir = store.dir.path().join("ctx");
    fs::create_dir_all(&dir).unwrap();
    Ctx { store, dir }
}

impl Ctx {
    fn write(&self, rel: &str, data: &str) -> PathBuf {
        let p = self.dir.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, data).unwrap();
        p
    }

    fn dockerfile(&self, text: &str) {
        self.write("Dockerfile", text);
    }

    fn ctx(&self) -> String {
        self.dir.display().to_string()
    }

    /// Builds (plain output) and returns stderr, the progress.
    fn build(&self, extra: &[&str]) -> String {
        let ctx = self.ctx();
        let mut args = vec!["build"];
        args.extend_from_slice(extra);
        args.push(&ctx);
        let r = self.store.run(&args);
        assert_eq!(r.code, 0, "build failed:\n{}\n{}", r.stdout, r.stderr);
        r.stderr
    }

    /// Builds and insists on failure; returns stderr.
    fn build_fails(&self, extra: &[&str]) -> String {
        let ctx = self.ctx();
        let mut args = vec!["build"];
        args.extend_from_slice(extra);
        args.push(&ctx);
        self.store.fails(&args)
    }

    fn config(&self, image: &str) -> Value {
        let out = self.store.ok(&["image", "inspect", image]);
        let v: Value = serde_json::from_str(&out).unwrap();
        v[0]["Config"].clone()
    }

    fn sh(&self, image: &str, script: &str) -> String {
        self.store.ok(&["run", "--rm", image, "sh", "-c", script])
    }

    fn image_count(&self) -> usize {
        self.store.images().len()
    }
}

fn cached_steps(progress: &str) -> usize {
    progress.lines().filter(|l| l.ends_with(" CACHED")).count()
}

fn done_steps(progress: &str) -> usize {
    progress.lines().filter(|l| l.contains(" DONE ")).count()
}

#[test]
fn config_instructions_are_recorded() {
    let c = setup();
    c.dockerfile(
        r#"FROM busybox
ENV A=1 B="two words"
ENV C=${A}x
ARG V=argval
LABEL org.test=yes other="$V"
WORKDIR /srv
WORKDIR sub
USER 1000:1000
EXPOSE 80 53/udp
VOLUME ["/data"]
STOPSIGNAL SIGINT
HEALTHCHECK --interval=5s --retries=2 CMD ["true"]
SHELL ["/bin/sh", "-ec"]
ONBUILD RUN echo hi
ENTRYPOINT ["/bin/echo"]
CMD ["x"]
"#,
    );
    let id = c.build(&["-q", "-t", "cfg:1", "--label", "extra=1"]);
    let _ = id;
    let cfg = c.config("cfg:1");
    let env: Vec<&str> = cfg["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(env.contains(&"A=1"), "{env:?}");
    assert!(env.contains(&"B=two words"), "{env:?}");
    assert!(env.contains(&"C=1x"), "{env:?}");
    assert!(
        !env.iter().any(|e| e.starts_with("V=")),
        "ARG leaked: {env:?}"
    );
    assert_eq!(cfg["Labels"]["org.test"], "yes");
    assert_eq!(cfg["Labels"]["other"], "argval");
    assert_eq!(cfg["Labels"]["extra"], "1");
    assert_eq!(cfg["WorkingDir"], "/srv/sub");
    assert_eq!(cfg["User"], "1000:1000");
    assert!(cfg["ExposedPorts"]["80/tcp"].is_object(), "{cfg}");
    assert!(cfg["ExposedPorts"]["53/udp"].is_object(), "{cfg}");
    assert!(cfg["Volumes"]["/data"].is_object(), "{cfg}");
    assert_eq!(cfg["StopSignal"], "SIGINT");
    assert_eq!(
        cfg["Healthcheck"]["Test"],
        serde_json::json!(["CMD", "true"])
    );
    assert_eq!(cfg["Healthcheck"]["Interval"], 5_000_000_000u64);
    assert_eq!(cfg["Healthcheck"]["Retries"], 2);
    assert_eq!(cfg["Shell"], serde_json::json!(["/bin/sh", "-ec"]));
    assert_eq!(cfg["OnBuild"], serde_json::json!(["RUN echo hi"]));
    assert_eq!(cfg["Entrypoint"], serde_json::json!(["/bin/echo"]));
    assert_eq!(cfg["Cmd"], serde_json::json!(["x"]));
    // Every step is in the history, newest first; config-only steps made no layer.
    let hist: Vec<Value> = c
        .store
        .ok(&["history", "--no-trunc", "--format", "json", "cfg:1"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ours: Vec<(&str, &str)> = hist
        .iter()
        .filter(|h| h["Comment"] == "buildkit.dockerfile.v0")
        .map(|h| {
            (
                h["CreatedBy"].as_str().unwrap(),
                h["Size"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(ours.len(), 14, "ARG adds no entry: {ours:#?}");
    assert_eq!(ours[0].0, r#"CMD ["x"]"#, "{ours:#?}");
    assert_eq!(ours[13].0, "ENV A=1 B=\"two words\"", "{ours:#?}");
    for (by, size) in &ours {
        // WORKDIR of a directory that did not exist makes a small layer.
        if !by.starts_with("WORKDIR") {
            assert_eq!(*size, "0B", "{by}");
        }
    }
    let run = c.store.ok(&["run", "--rm", "-u", "0", "cfg:1", "hello"]);
    assert_eq!(run.trim(), "hello");
}

#[test]
fn copy_files_dirs_globs_chown_chmod() {
    let c = setup();
    c.write("a.txt", "A\n");
    c.write("dir/one", "1\n");
    c.write("dir/nested/two", "2\n");
    c.write("g1.log", "g1\n");
    c.write("g2.log", "g2\n");
    c.write("script.sh", "#!/bin/sh\necho s\n");
    c.dockerfile(
        "FROM busybox
COPY a.txt /dst/
COPY dir /contents/
COPY *.log /logs/
COPY --chown=1234:5678 a.txt /owned
COPY --chown=nobody a.txt /named
COPY --chmod=0751 script.sh /bin/s
COPY a.txt /renamed.txt
",
    );
    c.build(&["-t", "cp:1"]);
    let out = c.sh(
        "cp:1",
        "cat /dst/a.txt /contents/one /contents/nested/two /logs/g1.log /logs/g2.log /renamed.txt; \
         ls /contents; stat -c '%u:%g %a' /owned /named /bin/s /dst/a.txt",
    );
    assert_eq!(
        out,
        "A\n1\n2\ng1\ng2\nA\nnested\none\n1234:5678 644\n65534:65534 644\n0:0 751\n0:0 644\n"
    );
}

fn tar_of(dir: &Path, out: &Path) {
    let st = std::process::Command::new("tar")
        .arg("-czf")
        .arg(out)
        .arg("-C")
        .arg(dir)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn add_extracts_local_tar() {
    let c = setup();
    let src = c.store.dir.path().join("tarsrc");
    fs::create_dir_all(src.join("inner")).unwrap();
    fs::write(src.join("inner/file"), "in tar\n").unwrap();
    tar_of(&src, &c.dir.join("a.tar.gz"));
    c.write("plain.txt", "plain\n");
    c.dockerfile("FROM busybox\nADD a.tar.gz /x/\nADD plain.txt /p/\n");
    c.build(&["-t", "add:1"]);
    assert_eq!(
        c.sh("add:1", "cat /x/inner/file /p/plain.txt; ls /x"),
        "in tar\nplain\ninner\n"
    );
}

#[test]
fn run_layers_and_whiteouts() {
    let c = setup();
    c.dockerfile(
        "FROM busybox
RUN mkdir -p /w/d && echo keep > /w/keep && echo gone > /w/gone && echo x > /w/d/f
RUN rm /w/gone && rm -r /w/d && mkdir /w/d && echo new > /w/d/g
RUN rm /etc/hostname.nonexistent 2>/dev/null; rm -f /bin/vi
",
    );
    let progress = c.build(&["-t", "run:1"]);
    assert!(progress.contains("RUN rm /w/gone"), "{progress}");
    let out = c.sh(
        "run:1",
        "cat /w/keep /w/d/g; ls /w/d; test -e /w/gone || echo nogone; test -e /bin/vi || echo novi",
    );
    assert_eq!(out, "keep\nnew\ng\nnogone\nnovi\n");
}

#[test]
fn multi_stage_copy_from_and_target() {
    let c = setup();
    c.dockerfile(
        "FROM busybox AS builder
RUN mkdir /out && echo built > /out/app
RUN echo second > /out/two

FROM busybox AS unused
RUN exit 7

FROM scratch AS final
COPY --from=builder /out/ /opt/
COPY --from=0 /bin/busybox /bin/busybox
CMD [\"/bin/busybox\", \"cat\", \"/opt/app\", \"/opt/two\"]
",
    );
    let progress = c.build(&["-t", "ms:1", "--target", "final"]);
    assert!(
        !progress.contains("exit 7"),
        "unneeded stage built:\n{progress}"
    );
    let out = c.store.ok(&["run", "--rm", "ms:1"]);
    assert_eq!(out, "built\nsecond\n");
    // --target stops at the named stage.
    c.build(&["-t", "ms:b", "--target", "builder"]);
    assert_eq!(c.sh("ms:b", "cat /out/app"), "built\n");
}

#[test]
fn build_args_reach_run_and_words() {
    let c = setup();
    c.dockerfile(
        "ARG BASE=busybox
FROM $BASE
ARG GREETING=hello
ARG UNUSED
RUN echo \"$GREETING\" > /greeting
ENV G=$GREETING
",
    );
    c.build(&["-t", "args:1", "--build-arg", "GREETING=bonjour"]);
    assert_eq!(
        c.sh("args:1", "cat /greeting; echo $G"),
        "bonjour\nbonjour\n"
    );
    // A different value busts the RUN's cache; the same value does not.
    let p = c.build(&["-t", "args:2", "--build-arg", "GREETING=bonjour"]);
    assert_eq!(done_steps(&p), 0, "{p}");
    let p = c.build(&["-t", "args:3", "--build-arg", "GREETING=hi"]);
    assert!(done_steps(&p) >= 2, "{p}");
    assert_eq!(c.sh("args:3", "cat /greeting"), "hi\n");
}

#[test]
fn cache_reuse_mtime_edit_and_dockerignore() {
    let c = setup();
    c.write("one.txt", "1\n");
    c.write("two.txt", "2\n");
    c.write("ignored.txt", "i\n");
    c.write(".dockerignore", "ignored.txt\n");
    c.dockerfile(
        "FROM busybox
COPY one.txt /one
RUN echo step >> /log
COPY . /all/
RUN cat /all/two.txt > /copy
",
    );
    let first = c.build(&["-t", "cache:1"]);
    assert_eq!(cached_steps(&first), 0, "{first}");
    let id1 = c.store.ok(&["images", "-q", "--no-trunc", "cache:1"]);

    // Unchanged: every step cached, same image ID.
    let again = c.build(&["-t", "cache:1"]);
    assert_eq!(cached_steps(&again), 4, "{again}");
    assert_eq!(c.store.ok(&["images", "-q", "--no-trunc", "cache:1"]), id1);

    // Touching mtimes changes nothing.
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
    for f in ["one.txt", "two.txt"] {
        fs::File::options()
            .write(true)
            .open(c.dir.join(f))
            .unwrap()
            .set_modified(later)
            .unwrap();
    }
    let touched = c.build(&["-t", "cache:1"]);
    assert_eq!(cached_steps(&touched), 4, "{touched}");

    // An ignored file's change changes nothing.
    c.write("ignored.txt", "changed\n");
    let ign = c.build(&["-t", "cache:1"]);
    assert_eq!(cached_steps(&ign), 4, "{ign}");

    // Editing two.txt rebuilds from `COPY . /all/` on.
    c.write("two.txt", "22\n");
    let edited = c.build(&["-t", "cache:2"]);
    assert_eq!(cached_steps(&edited), 2, "{edited}");
    assert_eq!(done_steps(&edited), 2, "{edited}");
    assert_eq!(c.sh("cache:2", "cat /copy; cat /log"), "22\nstep\n");

    // --no-cache runs everything.
    let nc = c.build(&["-t", "cache:3", "--no-cache"]);
    assert_eq!(cached_steps(&nc), 0, "{nc}");
}

#[test]
fn quiet_prints_only_the_id_and_iidfile() {
    let c = setup();
    c.dockerfile("FROM busybox\nENV X=1\n");
    let iid = c.store.dir.path().join("iid");
    let ctx = c.ctx();
    let r = c.store.run(&[
        "build",
        "-q",
        "--iidfile",
        iid.to_str().unwrap(),
        "-t",
        "q:1",
        &ctx,
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stderr, "");
    let id = r.stdout.trim();
    assert!(id.starts_with("sha256:") && id.len() == 71, "{id}");
    assert_eq!(fs::read_to_string(&iid).unwrap(), id);
    let listed = c.store.ok(&["images", "-q", "--no-trunc", "q:1"]);
    assert_eq!(listed.trim(), id);
}

#[test]
fn unknown_instruction_names_the_line() {
    let c = setup();
    c.dockerfile("FROM busybox\nENV A=1\nFROBNICATE x\n");
    let before = c.image_count();
    let err = c.build_fails(&["-t", "bad:1"]);
    assert!(err.contains(":3") && err.contains("FROBNICATE"), "{err}");
    assert_eq!(c.image_count(), before);
}

#[test]
fn copy_source_outside_context_fails() {
    let c = setup();
    c.dockerfile("FROM busybox\nCOPY ../secret /x\n");
    let before = c.image_count();
    let err = c.build_fails(&["-t", "bad:2"]);
    assert!(err.contains("outside the build context"), "{err}");
    assert!(err.contains(":2"), "{err}");
    assert_eq!(c.image_count(), before);
}

#[test]
fn copy_from_missing_stage_fails() {
    let c = setup();
    c.dockerfile("FROM busybox\nCOPY --from=nosuchstage /x /y\n");
    let before = c.image_count();
    let err = c.build_fails(&["-t", "bad:3"]);
    assert!(err.contains("nosuchstage"), "{err}");
    assert_eq!(c.image_count(), before);
}

#[test]
fn failing_run_shows_step_and_code_and_keeps_earlier_steps_cached() {
    let c = setup();
    c.write("f", "data\n");
    c.dockerfile("FROM busybox\nCOPY f /f\nRUN echo before > /b\nRUN echo failing; exit 3\n");
    let before = c.image_count();
    let err = c.build_fails(&["-t", "bad:4"]);
    assert!(err.contains("exit code: 3"), "{err}");
    assert!(
        err.contains(":4") && err.contains("RUN echo failing"),
        "{err}"
    );
    // No image, no tag.
    assert_eq!(c.image_count(), before);
    let _ = c.store.fails(&["image", "inspect", "bad:4"]);
    let tmp = c.store.root().join("build-tmp");
    let left: Vec<_> = fs::read_dir(&tmp)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "leftovers: {left:?}");
    let mounts = common::mounts_under(c.store.dir.path());
    assert!(mounts.is_empty(), "{mounts:?}");
    // What the finished steps left is recorded: the store is consistent.
    let check = c.store.ok(&["system", "check"]);
    assert!(!check.contains("not referenced"), "{check}");
    // The same failure again: the finished steps come from the cache.
    let err = c.build_fails(&["-t", "bad:4"]);
    assert_eq!(cached_steps(&err), 2, "{err}");
    // Fixed, the build reuses steps 1-2 and runs only the fixed one.
    c.dockerfile("FROM busybox\nCOPY f /f\nRUN echo before > /b\nRUN echo fixed > /c\n");
    let out = c.build(&["-t", "good:4"]);
    assert_eq!(cached_steps(&out), 2, "{out}");
    assert_eq!(done_steps(&out), 1, "{out}");
    assert_eq!(c.sh("good:4", "cat /f /b /c"), "data\nbefore\nfixed\n");
}

#[test]
fn heredoc_run_and_copy() {
    let c = setup();
    c.dockerfile(
        "FROM busybox
RUN <<EOF
echo one > /h1
echo two >> /h1
EOF
COPY <<EOT /etc/greeting
hi there
EOT
",
    );
    c.build(&["-t", "here:1"]);
    assert_eq!(
        c.sh("here:1", "cat /h1 /etc/greeting"),
        "one\ntwo\nhi there\n"
    );
}

#[test]
fn symlink_escaping_context_fails() {
    let c = setup();
    std::os::unix::fs::symlink("/etc/passwd", c.dir.join("link")).unwrap();
    c.dockerfile("FROM busybox\nCOPY link /x\n");
    let before = c.image_count();
    let err = c.build_fails(&["-t", "bad:5"]);
    assert!(err.contains("outside the build context"), "{err}");
    assert_eq!(c.image_count(), before);
}

#[test]
fn empty_dockerfile_and_unterminated_heredoc_fail() {
    let c = setup();
    c.dockerfile("# nothing here\n");
    let err = c.build_fails(&["-t", "bad:6"]);
    assert!(err.contains("Dockerfile:"), "{err}");
    c.dockerfile("FROM busybox\nRUN <<EOF\necho x\n");
    let err = c.build_fails(&["-t", "bad:7"]);
    assert!(err.contains("Dockerfile:"), "{err}");
    // An unterminated quote in a word the frontend reads, named with its line.
    c.dockerfile("FROM busybox\nENV A=1\nLABEL note=\"unterminated\n");
    let err = c.build_fails(&["-t", "bad:8"]);
    assert!(err.contains("Dockerfile:3"), "{err}");
    assert!(err.to_lowercase().contains("quote"), "{err}");
    assert_eq!(c.image_count(), 1);
}

#[test]
fn missing_base_image_fails() {
    let c = setup();
    c.dockerfile("FROM nosuchimage:1\nRUN true\n");
    let err = c.build_fails(&["-t", "bad:8"]);
    assert!(err.contains("nosuchimage") && err.contains(":1"), "{err}");
}

#[test]
fn onbuild_triggers_run_in_the_child_build() {
    let c = setup();
    c.write("f", "from the child's context\n");
    c.dockerfile(
        "FROM busybox
ONBUILD COPY f /from-onbuild
ONBUILD RUN echo triggered > /t
",
    );
    c.build(&["-t", "parent:1"]);
    // The parent itself does not run its triggers.
    assert_eq!(
        c.sh(
            "parent:1",
            "test -e /t || echo none; test -e /from-onbuild || echo none"
        ),
        "none\nnone\n"
    );
    assert_eq!(c.config("parent:1")["OnBuild"].as_array().unwrap().len(), 2);
    c.dockerfile("FROM parent:1\nRUN cat /t > /u\n");
    let out = c.build(&["-t", "child:1"]);
    assert!(out.contains("COPY f /from-onbuild"), "{out}");
    assert_eq!(
        c.sh("child:1", "cat /u /from-onbuild"),
        "triggered\nfrom the child's context\n"
    );
    // Triggers are not inherited by the child's children.
    let on = &c.config("child:1")["OnBuild"];
    assert!(
        on.is_null() || on.as_array().is_some_and(|a| a.is_empty()),
        "{on}"
    );
    // An unchanged rebuild reuses the trigger steps too.
    let out = c.build(&["-t", "child:1"]);
    assert_eq!(cached_steps(&out), 3, "{out}");
}

/// A `docker-registry` on 127.0.0.1 (a free port) with storage in a scratch
/// dir; killed (by PID) when dropped.
struct LocalRegistry {
    host: String,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl LocalRegistry {
    fn start() -> LocalRegistry {
        use std::net::{TcpListener, TcpStream};
        use std::time::{Duration, Instant};
        let dir = common::scratch();
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let host = format!("127.0.0.1:{port}");
            let cfg = dir.path().join("config.yml");
            fs::write(
                &cfg,
                format!(
                    "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    \
                     rootdirectory: {}\nhttp:\n  addr: {host}\n  secret: s\n",
                    dir.path().join("data").display()
                ),
            )
            .unwrap();
            let mut cmd = std::process::Command::new("docker-registry");
            for (k, _) in std::env::vars_os() {
                if k.to_string_lossy().starts_with("REGISTRY_") {
                    cmd.env_remove(k);
                }
            }
            let mut child = cmd
                .arg("serve")
                .arg(&cfg)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("docker-registry not found; run scripts/deps.sh");
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if TcpStream::connect(&host).is_ok() {
                    return LocalRegistry {
                        host,
                        child,
                        _dir: dir,
                    };
                }
                if child.try_wait().unwrap().is_some() || Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("docker-registry did not start");
    }
}

impl Drop for LocalRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs berth on `store` with private registry config files under `etc`.
fn berth_reg(store: &Store, etc: &Path, args: &[&str]) -> common::Run {
    let mut c = store.cmd(args);
    c.env("BERTH_CONFIG", etc.join("config.json"))
        .env("BERTH_AUTH_FILE", etc.join("auth.json"))
        .env("DOCKER_CONFIG", etc.join("docker"));
    let o = c.output().unwrap();
    common::Run {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

#[test]
fn from_missing_image_pulls_and_pull_flag_refreshes() {
    let reg = LocalRegistry::start();
    let etc = common::scratch();
    fs::write(etc.path().join("config.json"), "{}").unwrap();
    let base = format!("{}/test/base:1", reg.host);
    // The publisher: busybox as base:1 (v1), pushed.
    let publisher = setup();
    publisher.store.ok(&["tag", "busybox", &base]);
    let r = berth_reg(&publisher.store, etc.path(), &["push", &base]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);

    // A builder with an empty store: FROM pulls the missing image.
    let b = Ctx {
        store: Store::new(),
        dir: etc.path().join("ctx"),
    };
    fs::create_dir_all(&b.dir).unwrap();
    b.dockerfile(&format!(
        "FROM {base}\nRUN test -e /v2 && echo v2 > /seen || echo v1 > /seen\n"
    ));
    let ctx = b.ctx();
    let build = |extra: &[&str]| {
        let mut args = vec!["build", "-t", "out:1"];
        args.extend_from_slice(extra);
        args.push(&ctx);
        let r = berth_reg(&b.store, etc.path(), &args);
        assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
        r.stderr
    };
    let out = build(&[]);
    assert!(out.contains("pulling"), "{out}");
    assert_eq!(b.sh("out:1", "cat /seen"), "v1\n");
    assert!(b.store.ok(&["image", "inspect", &base]).contains("sha256:"));

    // v2 is pushed under the same tag.
    publisher.dockerfile("FROM busybox\nRUN echo new > /v2\n");
    publisher.build(&["-t", &base]);
    let r = berth_reg(&publisher.store, etc.path(), &["push", &base]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);

    // Without --pull the stored base is used (and the cache hits)...
    let out = build(&[]);
    assert!(!out.contains("pulling"), "{out}");
    assert_eq!(cached_steps(&out), 1, "{out}");
    assert_eq!(b.sh("out:1", "cat /seen"), "v1\n");
    // ... with --pull the new one is fetched and the step runs again.
    let out = build(&["--pull"]);
    assert!(out.contains("pulling"), "{out}");
    assert_eq!(cached_steps(&out), 0, "{out}");
    assert_eq!(b.sh("out:1", "cat /seen"), "v2\n");

    // A base no registry has: the pull error, with the line.
    b.dockerfile(&format!("FROM {}/test/nothere:1\nRUN true\n", reg.host));
    let mut args = vec!["build"];
    args.push(&ctx);
    let r = berth_reg(&b.store, etc.path(), &args);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("Dockerfile:1") && r.stderr.contains("nothere"),
        "{}",
        r.stderr
    );
}

#[test]
fn independent_stages_build_concurrently() {
    let c = setup();
    c.write("src/a", "A\n");
    c.dockerfile(
        "FROM busybox AS one
COPY src /src
RUN sleep 1; cat /src/a > /one; echo 1 >> /one
FROM busybox AS two
RUN sleep 1; echo 2 > /two
FROM busybox AS three
RUN echo 3 > /three
FROM busybox
COPY --from=one /one /r/one
COPY --from=two /two /r/two
COPY --from=three /three /r/three
RUN cat /r/one /r/two /r/three > /all
",
    );
    let out = c.build(&["-t", "par:1"]);
    assert_eq!(c.sh("par:1", "cat /all"), "A\n1\n2\n3\n");
    // Every step is reported once, numbered uniquely.
    let headers: Vec<&str> = out
        .lines()
        .filter(|l| l.contains(" [") && l.starts_with('#'))
        .collect();
    assert_eq!(headers.len(), 12, "{out}");
    let mut nums: Vec<&str> = headers
        .iter()
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    nums.sort();
    nums.dedup();
    assert_eq!(nums.len(), 12, "{out}");
    // The stages built in children are cached like the others.
    let out = c.build(&["-t", "par:1"]);
    assert_eq!(cached_steps(&out), 8, "{out}");
    assert_eq!(done_steps(&out), 0, "{out}");
    assert_eq!(c.sh("par:1", "cat /all"), "A\n1\n2\n3\n");
    let check = c.store.ok(&["system", "check"]);
    assert!(!check.contains("not referenced"), "{check}");

    // A failure in a stage built beside others fails the build, with its step.
    c.dockerfile(
        "FROM busybox AS one
RUN echo bad; exit 5
FROM busybox AS two
RUN echo fine > /two
FROM busybox
COPY --from=one /etc/passwd /x
COPY --from=two /two /two
",
    );
    let before = c.image_count();
    let err = c.build_fails(&["-t", "par:2"]);
    assert!(err.contains("exit code: 5") && err.contains(":2"), "{err}");
    assert_eq!(c.image_count(), before);
    let mounts = common::mounts_under(c.store.dir.path());
    assert!(mounts.is_empty(), "{mounts:?}");
    // The other stage's step stays cached.
    c.dockerfile(
        "FROM busybox AS one
RUN echo good > /one
FROM busybox AS two
RUN echo fine > /two
FROM busybox
COPY --from=one /one /one
COPY --from=two /two /two
",
    );
    let out = c.build(&["-t", "par:2"]);
    assert_eq!(cached_steps(&out), 1, "{out}");
    assert_eq!(c.sh("par:2", "cat /one /two"), "good\nfine\n");
}

// ---------------------------------------------------------------------------
// The same Dockerfile built by `buildah bud` (Debian's buildah, its own
// root/runroot, chroot isolation): the same file tree and config fields.

/// Runs buildah with all its state under `dir`; returns stdout.
fn buildah(dir: &Path, args: &[&str]) -> String {
    let o = std::process::Command::new("buildah")
        .arg("--root")
        .arg(dir.join("root"))
        .arg("--runroot")
        .arg(dir.join("run"))
        .args(["--storage-driver", "overlay"])
        .args(args)
        .env("TMPDIR", dir)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("buildah not found (Debian package buildah)");
    assert!(
        o.status.success(),
        "buildah {args:?}:\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Every path under `root`: type, mode, owner, and content (files) or target
/// (symlinks). No times.
fn tree(root: &Path) -> std::collections::BTreeMap<String, String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = std::collections::BTreeMap::new();
    for p in common::walk(root) {
        let m = fs::symlink_metadata(&p).unwrap();
        let rel = p.strip_prefix(root).unwrap().display().to_string();
        let what = if m.file_type().is_symlink() {
            format!("link {}", fs::read_link(&p).unwrap().display())
        } else if m.is_file() {
            let data = fs::read(&p).unwrap();
            // Content by length and a cheap checksum (no hashing crate here).
            let sum = data.iter().fold(0u64, |h, b| {
                h.wrapping_mul(1_000_003).wrapping_add(*b as u64)
            });
            format!("file {} {sum:x}", data.len())
        } else if m.is_dir() {
            "dir".to_string()
        } else {
            format!("other {:o}", m.mode() & 0o170000)
        };
        out.insert(
            rel,
            format!("{what} {:o} {}:{}", m.mode() & 0o7777, m.uid(), m.gid()),
        );
    }
    out
}

/// buildah's state; its containers and mounts are removed when dropped
/// (also when an assertion failed).
struct BuildahDir(tempfile::TempDir);

impl Drop for BuildahDir {
    fn drop(&mut self) {
        let d = self.0.path();
        let _ = std::process::Command::new("buildah")
            .arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("run"))
            .args(["--storage-driver", "overlay", "rm", "--all"])
            .output();
        common::unmount_all_under(d);
    }
}

struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(&self.0, rustix::mount::UnmountFlags::DETACH);
    }
}

/// The image's file system, as a read-only overlay of its snapshots.
fn berth_rootfs(c: &Ctx, image: &str, at: &Path) -> Mounted {
    let out = c.store.ok(&["image", "inspect", image]);
    let v: Value = serde_json::from_str(&out).unwrap();
    let lower = v[0]["GraphDriver"]["Data"]["LowerDir"]
        .as_str()
        .unwrap()
        .to_string();
    fs::create_dir_all(at).unwrap();
    if !lower.contains(':') {
        // One layer: bind it read-only.
        rustix::mount::mount_bind(lower.as_str(), at).unwrap();
    } else {
        let data = std::ffi::CString::new(format!("lowerdir={lower}")).unwrap();
        rustix::mount::mount(
            "overlay",
            at,
            "overlay",
            rustix::mount::MountFlags::RDONLY,
            Some(data.as_c_str()),
        )
        .unwrap();
    }
    Mounted(at.to_path_buf())
}

const COMPARED: [&str; 9] = [
    "Env",
    "Cmd",
    "Entrypoint",
    "WorkingDir",
    "User",
    "ExposedPorts",
    "Volumes",
    "Labels",
    "StopSignal",
];

/// Builds the context's Dockerfile with berth and with buildah and compares.
fn same_as_buildah(c: &Ctx, name: &str) {
    c.build(&["-t", name]);
    let bdir = BuildahDir(common::scratch());
    let b = bdir.0.path();
    let fix = fixture("busybox.oci.tar");
    let id = buildah(b, &["pull", "-q", &format!("oci-archive:{fix}")]);
    buildah(b, &["tag", id.trim(), "docker.io/library/busybox:latest"]);
    buildah(
        b,
        &[
            "bud",
            "--isolation",
            "chroot",
            "--pull=never",
            "-q",
            "-t",
            name,
            &c.ctx(),
        ],
    );
    // Config fields.
    let ours = c.config(name);
    let theirs: Value =
        serde_json::from_str(&buildah(b, &["inspect", "--type", "image", name])).unwrap();
    let theirs = &theirs["OCIv1"]["config"];
    let norm = |v: &Value| -> Value {
        match v {
            Value::Null => Value::Null,
            Value::Array(a) if a.is_empty() => Value::Null,
            Value::Object(o) if o.is_empty() => Value::Null,
            Value::String(s) if s.is_empty() => Value::Null,
            v => v.clone(),
        }
    };
    let mut theirs = theirs.clone();
    // buildah's own label; buildah gives no default PATH (BuildKit, which
    // berth follows, does), and orders Env differently then.
    if let Some(l) = theirs["Labels"].as_object_mut() {
        l.remove("io.buildah.version");
    }
    let mut ours = ours.clone();
    let default_path = format!("PATH={}", berth_engine::image::config::DEFAULT_PATH);
    for cfg in [&mut ours, &mut theirs] {
        if let Some(env) = cfg["Env"].as_array_mut() {
            env.retain(|e| e.as_str() != Some(default_path.as_str()));
            env.sort_by_key(|e| e.as_str().unwrap_or_default().to_string());
        }
    }
    for k in COMPARED {
        assert_eq!(
            norm(&ours[k]),
            norm(&theirs[k]),
            "{name}: config {k} differs (berth vs buildah)"
        );
    }
    // File trees.
    let ctr = buildah(b, &["from", "--pull=never", "-q", name]);
    let ctr = ctr.trim();
    let theirs_root = PathBuf::from(buildah(b, &["mount", ctr]).trim());
    let ours_root = c.store.dir.path().join("cmp-root");
    let m = berth_rootfs(c, name, &ours_root);
    let (t_ours, t_theirs) = (tree(&m.0), tree(&theirs_root));
    drop(m);
    let mut diffs = Vec::new();
    for (p, v) in &t_ours {
        match t_theirs.get(p) {
            Some(w) if w == v => {}
            w => diffs.push(format!("{p}: berth {v} / buildah {w:?}")),
        }
    }
    // buildah leaves the mount points of its RUN containers in the image
    // (empty files, /run); BuildKit and berth do not.
    let buildah_only = ["etc/hostname", "etc/hosts", "etc/resolv.conf", "run"];
    for (p, w) in &t_theirs {
        if !t_ours.contains_key(p) && !buildah_only.contains(&p.as_str()) {
            diffs.push(format!("{p}: only in buildah's: {w}"));
        }
    }
    assert!(
        diffs.is_empty(),
        "{name}: trees differ:\n{}",
        diffs.join("\n")
    );
}

#[test]
fn buildah_agrees_on_config() {
    let c = setup();
    c.dockerfile(
        r#"FROM busybox
ENV A=1 B="two words"
ENV C=${A}x PATH=/opt/bin:$PATH
LABEL org.test=yes other="x y"
WORKDIR /srv
WORKDIR sub
EXPOSE 80 53/udp
VOLUME ["/data", "/cache"]
STOPSIGNAL SIGINT
USER 1000:1000
ENTRYPOINT ["/bin/echo"]
CMD ["x"]
"#,
    );
    same_as_buildah(&c, "cmp-config:1");
}

#[test]
fn buildah_agrees_on_copy_and_run() {
    let c = setup();
    c.write("a.txt", "A\n");
    c.write("dir/one", "1\n");
    c.write("dir/nested/two", "2\n");
    c.write("g1.log", "g1\n");
    c.write("g2.log", "g2\n");
    c.write("skip.log", "x\n");
    c.write(".dockerignore", "skip.log\n");
    let t = c.store.dir.path().join("t");
    fs::create_dir_all(t.join("in")).unwrap();
    fs::write(t.join("in/file"), "tarred\n").unwrap();
    tar_of(&t, &c.dir.join("arch.tar"));
    c.dockerfile(
        "FROM busybox AS build
RUN mkdir -p /out/sub && echo made > /out/sub/f && chmod 640 /out/sub/f
FROM busybox
COPY a.txt /a.txt
COPY dir /d/
COPY *.log /logs/
COPY --chown=1000:100 dir/one /owned
COPY --chmod=600 a.txt /private
ADD arch.tar /x/
COPY --from=build /out /from-build
RUN rm -rf /etc/group /usr/sbin && mkdir /made && echo r > /made/r && chmod 700 /made
WORKDIR /work
RUN echo w > w
",
    );
    same_as_buildah(&c, "cmp-copy:1");
}

#[test]
fn tty_progress_folds_run_output_unless_the_step_fails() {
    let c = setup();
    // The output differs from the instruction text (shown in the headers).
    c.dockerfile("FROM busybox\nRUN echo streamed-$((1+1))\n");
    let out = c.build(&["--progress", "plain", "-t", "p:1"]);
    assert!(out.contains("streamed-2"), "{out}");
    c.dockerfile("FROM busybox\nRUN echo folded-$((1+1))\n");
    let out = c.build(&["--progress", "tty", "-t", "p:2"]);
    assert!(!out.contains("folded-2"), "{out}");
    assert!(out.contains(" DONE "), "{out}");
    c.dockerfile("FROM busybox\nRUN echo shown-$((1+1)); exit 2\n");
    let err = c.build_fails(&["--progress", "tty", "-t", "p:3"]);
    assert!(err.contains("shown-2"), "{err}");
    assert!(err.contains("exit code: 2"), "{err}");
}

#[test]
fn built_image_pushes_and_runs_elsewhere() {
    let reg = LocalRegistry::start();
    let etc = common::scratch();
    fs::write(etc.path().join("config.json"), "{}").unwrap();
    let c = setup();
    c.write("hello.txt", "from the context\n");
    c.dockerfile(
        "FROM busybox\nCOPY hello.txt /hello.txt\nRUN echo built > /built\nENV GREETING=hi\nCMD [\"sh\", \"-c\", \"echo $GREETING; cat /hello.txt /built\"]\n",
    );
    let name = format!("{}/built/app:1", reg.host);
    c.build(&["-t", &name]);
    let r = berth_reg(&c.store, etc.path(), &["push", &name]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let pushed = r.stdout.lines().last().unwrap_or_default().to_string();
    assert!(pushed.contains("digest: sha256:"), "{pushed}");

    // Another store pulls it: same image ID, same manifest digest, and it runs.
    let other = Store::new();
    let r = berth_reg(&other, etc.path(), &["pull", &name]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let id = |s: &Store| -> Value {
        let v: Value = serde_json::from_str(&s.ok(&["image", "inspect", &name])).unwrap();
        v[0]["Id"].clone()
    };
    assert_eq!(id(&other), id(&c.store));
    let digest = pushed
        .split("digest: ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap();
    assert!(
        r.stdout.contains(&format!("Digest: {digest}")),
        "{}",
        r.stdout
    );
    let out = berth_reg(
        &other,
        etc.path(),
        &["run", "--rm", "--pull", "never", &name],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, "hi\nfrom the context\nbuilt\n");
}
