//! Terminals and stdin: `-t` gives the process a pty from the container's own
//! devpts (so `tty` names it), `exec -t` does too, and a container created with `-i`
//! takes input from `start -i` (Docker's OpenStdin / StdinOnce).

mod common;

use std::time::{Duration, Instant};

use common::{Store, fixture};
use serde_json::Value;

fn busybox() -> Store {
    let s = Store::new();
    s.ok(&["load", "-q", "-i", &fixture("busybox.oci.tar")]);
    s
}

fn state(s: &Store, name: &str) -> Value {
    let v: Value = serde_json::from_str(&s.ok(&["inspect", name])).unwrap();
    v[0]["State"].clone()
}

/// Polls until `f` holds (bounded; not a timing assertion).
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn run_t_gives_a_pty_the_process_can_name() {
    let s = busybox();
    // No terminal of ours here, so the pty starts at 24x80, and is sized before the
    // process runs (never 0x0).
    let r = s.run(&["run", "--rm", "-t", "busybox", "sh", "-c", "tty; stty size"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout.replace('\r', ""), "/dev/pts/0\n24 80\n");
    // Piped input reaches a -it process through the pty; its exit code comes back.
    let r = s.run_stdin(
        &["run", "--rm", "-i", "-t", "busybox", "sh"],
        b"tty; exit 4\n",
    );
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert!(r.stdout.contains("/dev/pts/0"), "{}", r.stdout);
}

#[test]
fn exec_t_gives_its_own_pty_owned_by_the_user() {
    let s = busybox();
    s.ok(&["run", "-d", "--name", "tbox", "busybox", "sleep", "60"]);
    eventually("running", || state(&s, "tbox")["Status"] == "running");
    let out = s.ok(&[
        "exec",
        "-t",
        "-u",
        "1000",
        "tbox",
        "sh",
        "-c",
        "tty; stty size; stat -c %u $(tty); ps -o tty,comm | grep sleep",
    ]);
    let lines: Vec<&str> = out.lines().map(|l| l.trim_end_matches('\r')).collect();
    assert!(lines[0].starts_with("/dev/pts/"), "{out}");
    assert_eq!(lines[1], "24 80", "{out}");
    assert_eq!(lines[2], "1000", "the user owns its terminal: {out}");
    // The container's own sleep has no terminal; only this exec's processes do.
    assert!(lines[3].starts_with('?'), "{out}");
    let r = s.run(&["exec", "-t", "tbox", "sh", "-c", "exit 3"]);
    assert_eq!(r.code, 3);
    // Without -t an exec has no terminal, whatever the container has.
    let r = s.run(&["exec", "tbox", "tty"]);
    assert_eq!(r.stdout, "not a tty\n");
    s.ok(&["rm", "-f", "tbox"]);
}

#[test]
fn start_i_feeds_stdin_of_a_container_created_with_i() {
    let s = busybox();
    s.ok(&[
        "create",
        "-i",
        "--name",
        "reader",
        "busybox",
        "sh",
        "-c",
        "read x; echo got:$x; cat",
    ]);
    let v: Value = serde_json::from_str(&s.ok(&["inspect", "reader"])).unwrap();
    assert_eq!(v[0]["Config"]["OpenStdin"], true, "{v}");
    assert_eq!(v[0]["Config"]["StdinOnce"], true, "{v}");
    // StdinOnce: the end of our input is the end of the process's, so cat ends.
    let r = s.run_stdin(&["start", "-ai", "reader"], b"hello\nworld\n");
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout, "got:hello\nworld\n");
    assert_eq!(state(&s, "reader")["ExitCode"], 0);
    s.ok(&["rm", "reader"]);
}

#[test]
fn run_d_i_keeps_stdin_open_across_clients() {
    let s = busybox();
    s.ok(&["run", "-d", "-i", "--name", "cat", "busybox", "cat"]);
    eventually("running", || state(&s, "cat")["Status"] == "running");
    // Each `start -i` sends its input; hanging up does not close cat's stdin.
    for word in ["one", "two"] {
        let mut child = s
            .cmd(&["start", "-i", "cat"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(format!("{word}\n").as_bytes()).unwrap();
        }
        eventually(word, || s.ok(&["logs", "cat"]).contains(word));
        // start -i follows the container until it exits: end this client ourselves.
        let _ = child.kill();
        let _ = child.wait();
    }
    assert_eq!(s.ok(&["logs", "cat"]), "one\ntwo\n");
    assert_eq!(state(&s, "cat")["Status"], "running");
    s.ok(&["rm", "-f", "cat"]);
}
