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
    // Config-only steps are empty layers in the history.
    let out = c
        .store
        .ok(&["image", "inspect", "--format", "{{json .}}", "cfg:1"]);
    let _ = out;
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
fn failing_run_shows_step_and_code_and_leaves_nothing() {
    let c = setup();
    c.dockerfile("FROM busybox\nRUN echo before > /b\nRUN echo failing; exit 3\n");
    let before = c.image_count();
    let (_, files_before) = c.store.state();
    let err = c.build_fails(&["-t", "bad:4"]);
    // No blob or snapshot of the failed build is left.
    assert_eq!(c.store.state().1, files_before);
    assert!(err.contains("exit code: 3"), "{err}");
    assert!(
        err.contains(":3") && err.contains("RUN echo failing"),
        "{err}"
    );
    assert_eq!(c.image_count(), before);
    let _ = c.store.fails(&["image", "inspect", "bad:4"]);
    let tmp = c.store.root().join("build-tmp");
    let left: Vec<_> = fs::read_dir(&tmp)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "leftovers: {left:?}");
    let mounts = common::mounts_under(c.store.dir.path());
    assert!(mounts.is_empty(), "{mounts:?}");
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
    assert_eq!(c.image_count(), 1);
}

#[test]
fn missing_base_image_fails() {
    let c = setup();
    c.dockerfile("FROM nosuchimage:1\nRUN true\n");
    let err = c.build_fails(&["-t", "bad:8"]);
    assert!(err.contains("nosuchimage") && err.contains(":1"), "{err}");
}
