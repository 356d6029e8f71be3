#!/usr/bin/env bash
# Container start benchmark: `run --rm --network none busybox true` end to end, berth vs. docker
# (Debian's docker.io, on a private dockerd) vs. podman.
#
# Usage: bench/run.sh            side by side with hyperfine, table, target check
#        bench/run.sh --phases   berth only: where one run's time goes (needs perf)
#
# Timed commands (one hyperfine invocation, -N: no shell in between):
#   berth   <berth> --root <scratch>/berth run --rm --network none busybox true
#   docker  docker -H unix://<scratch>/docker.sock run --rm --network none busybox true
#           against a dockerd this script starts on its own socket, data root and
#           exec root (--bridge none --iptables=false --ip6tables=false: offline, no
#           NAT); docker's default runtime (runc via containerd and its shim)
#   podman  podman --root/--runroot/--tmpdir <scratch>/podman --storage-driver overlay
#           --cgroup-manager cgroupfs --events-backend none run --rm --network none
#           busybox true   (podman's default OCI runtime; see PODMAN_ARGS below)
# Every engine runs with --network none (an empty network namespace with lo): the
# cost of networking is bench/network.sh's subject.
#
# Targets (issue 3): berth median <= 30 ms, and docker's median >= 10x berth's.
# Exit status: 0 when the benchmark ran (targets met or not), 1 on error.
#
# --phases runs berth RUNS times under `perf record` (sched and syscall tracepoints;
# tracing slows it a little: compare phases, not totals) and prints the median and
# minimum of each phase of one `run --rm`: CLI start to the container's clone, clone
# to the container's exec (cgroup attach, mounts, pivot, capabilities, seccomp), the
# program itself, the kernel tearing the container down (exit to wait4 returning),
# berth's cleanup after it, and the time spent in fsync.
#
# Environment: RUNS (timed runs per command, default 20), WARMUP (default 3),
# BERTH (default target/release/berth, built with `cargo build --release -p berth` if
# missing; copied into the scratch dir so a rebuild cannot change it mid-run), DOCKER
# (client, default `docker` on PATH), DOCKERD (default `dockerd`), PEERS (default
# "docker podman"; empty: berth only), PODMAN_ARGS (extra `podman run` flags; default:
# found by a probe, see podman_probe), BENCH_TMP (default /var/tmp; not /tmp, where
# file creation is much slower on the CI machine), BERTH_FIXTURES (fixture dir).
# Everything it creates is removed on exit: dockerd (and its containerd) stopped,
# podman state reset, mounts under the scratch dir unmounted, the dir deleted.
set -euo pipefail

SELF=$(readlink -f "${BASH_SOURCE[0]}")
ROOT=$(cd "$(dirname "$SELF")/.." && pwd)

# shellcheck source=bench/lib.sh
. "$(dirname "$SELF")/lib.sh"

MODE=compare
case ${1-} in
'') ;;
--phases) MODE=phases ;;
*) die "unknown arguments: $* (see the header of $SELF)" ;;
esac

RUNS=${RUNS:-20}
WARMUP=${WARMUP:-3}
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive integer, not '$RUNS'"
[[ $WARMUP =~ ^[0-9]+$ ]] || die "WARMUP must be a non-negative integer, not '$WARMUP'"
PEERS=${PEERS-docker podman}
DOCKER=${DOCKER:-docker}
DOCKERD=${DOCKERD:-dockerd}

need=(jq awk)
[[ $MODE == compare ]] && need+=(hyperfine)
[[ $MODE == phases ]] && need+=(perf)
for cmd in "${need[@]}"; do
	command -v "$cmd" >/dev/null || die "$cmd not found; run scripts/deps.sh --bench"
done

# --- scratch dir and cleanup -------------------------------------------------



# Removes a directory completely: podman state reset, mounts gone, files gone.
wipe() {
	local d=$1 m
	[[ -e $d ]] || return 0
	if [[ $d == *podman* && -d $d/root ]] && command -v podman >/dev/null; then
		podman_in "$d" system reset -f >/dev/null 2>&1 || true
	fi
	while read -r m; do
		[[ -n $m ]] && { umount -R "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; }
	done < <(mounts_under "$d")
	rm -rf "$d"
}

W=$(mktemp -d "${BENCH_TMP:-/var/tmp}/berth-run.XXXXXX")
cleanup() {
	local d
	dockerd_stop "$W"
	for d in "$W"/*; do wipe "$d"; done
	wipe "$W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$W/tmp"
export TMPDIR=$W/tmp

# --- berth -------------------------------------------------------------------

BERTH=${BERTH:-$ROOT/target/release/berth}
if [[ ! -x $BERTH ]]; then
	log "building $BERTH (cargo build --release -p berth)"
	(cd "$ROOT" && cargo build --release -p berth) >&2
fi
cp "$(readlink -f "$BERTH")" "$W/berth.bin"
sync "$W/berth.bin" # written back: its pages are not counted as dirty anywhere
BERTH_SRC=$(readlink -f "$BERTH")
BERTH=$W/berth.bin

FIX=${BERTH_FIXTURES:-$(bash "$ROOT/scripts/fixtures.sh" | tail -n 1)}
OCI=$FIX/busybox.oci.tar
DARCH=$FIX/busybox.docker.tar
[[ -f $OCI && -f $DARCH ]] || die "busybox fixtures missing in $FIX"

BR=$W/berth
"$BERTH" --root "$BR" load -q -i "$OCI" >/dev/null
"$BERTH" --root "$BR" run --rm --network none busybox true || die "berth run --rm --network none busybox true failed"

log "berth: $BERTH_SRC ($("$BERTH" --version 2>/dev/null || echo '?')), copied to $BERTH"
log "fixtures: $FIX; work dir: $W"

# --- --phases: where berth's time goes --------------------------------------

if [[ $MODE == phases ]]; then
	data=$W/perf.data
	log "perf record over $RUNS runs of: berth run --rm --network none busybox true"
	for ((i = 0; i < WARMUP; i++)); do "$BERTH" --root "$BR" run --rm --network none busybox true; done
	# Syscall events only from berth's own processes (comm berth.bin), so that other
	# work on the machine does not flood the trace and slow everything down.
	ev=(-e sched:sched_process_exec -e sched:sched_process_fork -e sched:sched_process_exit)
	for e in wait4 fdatasync fsync write; do
		ev+=(-e "syscalls:sys_enter_$e" --filter 'comm ~ "berth*"')
		ev+=(-e "syscalls:sys_exit_$e" --filter 'comm ~ "berth*"')
	done
	# shellcheck disable=SC2016 # the loop is expanded by the inner bash
	perf record -q -o "$data" -a "${ev[@]}" \
		-- bash -c 'for ((i = 0; i < $2; i++)); do "$1" --root "$3" run --rm --network none busybox true || exit 1; done' \
		_ "$BERTH" "$RUNS" "$BR" >/dev/null 2>&1 || die "perf record failed (perf_event_paranoid? tracefs?)"
	# One line per event: time pid comm event payload. Phases per berth CLI process.
	perf script -i "$data" -F time,pid,tid,comm,event,trace 2>/dev/null | awk -v exe="$BERTH" '
		function ms(x) { return x * 1000 }
		{
			# "   comm  PID/TID  TIME: EVENT: payload"  (comm may hold spaces)
			for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+\/[0-9]+$/) break
			split($i, pt, "/"); pid = pt[1]; tid = pt[2]
			t = $(i + 1); sub(/:$/, "", t); t += 0
			ev = $(i + 2); sub(/:$/, "", ev)
			rest = ""; for (j = i + 3; j <= NF; j++) rest = rest " " $j
		}
		ev == "sched:sched_process_exec" && index(rest, "filename=" exe " ") {
			cli[pid] = 1; start[pid] = t; n++; order[n] = pid; next
		}
		ev == "sched:sched_process_fork" && (pid in cli) {
			match(rest, /child_pid=[0-9]+/); c = substr(rest, RSTART + 10, RLENGTH - 10)
			parent[c] = pid; fork_t[c] = t; child[pid] = 1; next
		}
		# The container is the child that execs (threads and helpers do not).
		ev == "sched:sched_process_exec" && (pid in parent) && !(parent[pid] in exec_t) {
			ctr[pid] = 1; exec_t[parent[pid]] = t; clone_t[parent[pid]] = fork_t[pid]; next
		}
		ev == "sched:sched_process_exit" && (pid in ctr) && pid == tid { cexit_t[parent[pid]] = t; next }
		ev == "syscalls:sys_exit_wait4" && (pid in cli) && (pid in cexit_t) && !(pid in wait_t) { wait_t[pid] = t; next }
		ev == "sched:sched_process_exit" && (pid in cli) && pid == tid { end[pid] = t; next }
		(ev == "syscalls:sys_enter_fdatasync" || ev == "syscalls:sys_enter_fsync") && (pid in cli) { s0[tid] = t; next }
		(ev == "syscalls:sys_exit_fdatasync" || ev == "syscalls:sys_exit_fsync") && (tid in s0) {
			sync_ms[pid] += ms(t - s0[tid]); nsync[pid]++; delete s0[tid]; next
		}
		ev == "syscalls:sys_enter_write" && (pid in cli) && (pid in child) && !(pid in exec_t) { w0[tid] = t; next }
		ev == "syscalls:sys_exit_write" && (tid in w0) {
			d = ms(t - w0[tid]); if (d > attach[pid]) attach[pid] = d; delete w0[tid]; next
		}
		function median(a, k,   i, j, x) {
			for (i = 2; i <= k; i++) { x = a[i]; for (j = i - 1; j >= 1 && a[j] > x; j--) a[j + 1] = a[j]; a[j + 1] = x }
			return (k % 2) ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2
		}
		END {
			split("total pre clone setup run exit post sync attach", names, " ")
			for (r = 1; r <= n; r++) {
				p = order[r]
				if (!(p in end) || !(p in exec_t) || !(p in wait_t)) continue
				k++
				v["total", k] = ms(end[p] - start[p]); v["pre", k] = ms(clone_t[p] - start[p])
				v["setup", k] = ms(exec_t[p] - clone_t[p]); v["run", k] = ms(cexit_t[p] - exec_t[p])
				v["exit", k] = ms(wait_t[p] - cexit_t[p]); v["post", k] = ms(end[p] - wait_t[p])
				v["sync", k] = sync_ms[p] + 0; v["nsync", k] = nsync[p] + 0; v["attach", k] = attach[p] + 0
			}
			if (!k) { print "no complete berth runs found in the trace" > "/dev/stderr"; exit 1 }
			split("total|pre|setup|run|exit|post|sync|attach", keys, "|")
			label["total"] = "total: berth exec to berth exit"
			label["pre"] = "start: CLI, store, records, cgroup dirs, until clone()"
			label["setup"] = "setup: clone() to the program'"'"'s exec (cgroup attach, mounts, caps, seccomp)"
			label["run"] = "program: exec to exit of /bin/true"
			label["exit"] = "teardown: program exit to wait4() returning (kernel: namespaces, mounts)"
			label["post"] = "cleanup: wait4() to berth exit (records, cgroups, rootfs, --rm)"
			label["sync"] = "  of which fsync/fdatasync, whole run"
			label["attach"] = "  of which the slowest write() in setup (cgroup.procs attach)"
			printf "| phase (berth run --rm --network none busybox true, %d runs) | median (ms) | min (ms) |\n| --- | ---: | ---: |\n", k
			for (q = 1; q <= 8; q++) {
				key = keys[q]; for (r = 1; r <= k; r++) a[r] = v[key, r]
				m = median(a, k) # sorts a
				printf "| %s | %.1f | %.1f |\n", label[key], m, a[1]
				if (key == "sync") { for (r = 1; r <= k; r++) a[r] = v["nsync", r]; nsm = median(a, k) }
			}
			printf "\nfsync/fdatasync calls per run (median): %d\n", nsm
		}'
	exit 0
fi

# --- peers -------------------------------------------------------------------

HAVE_DOCKER=0 HAVE_PODMAN=0
DSOCK=unix://$W/docker.sock

# Finds `podman run` flags that work here (prints them) or fails. podman sets
# RLIMIT_NOFILE/NPROC in the container above this machine's hard limits by default,
# which fails without CAP_SYS_RESOURCE; then the limits are pinned to what we have.
podman_probe() {
	local hn hu
	hn=$(ulimit -Hn)
	hu=$(ulimit -Hu)
	[[ $hu == unlimited || $hu -gt 32768 ]] && hu=32768
	local -a candidates=(
		""
		"--ulimit nofile=$hn:$hn --ulimit nproc=$hu:$hu"
		"--runtime runc --ulimit nofile=$hn:$hn --ulimit nproc=$hu:$hu"
	)
	local c err
	for c in "${candidates[@]}"; do
		# shellcheck disable=SC2086 # word splitting of the flags is wanted
		if err=$(podman_in "$W/podman" run --rm --network none $c busybox true 2>&1); then
			printf '%s' "$c"
			return 0
		fi
		log "podman: 'run --rm --network none ${c:+$c }busybox true' failed: $(tail -n 1 <<<"$err")"
	done
	return 1
}

for peer in $PEERS; do
	case $peer in
	docker)
		if dockerd_start "$W"; then
			if "$DOCKER" -H "$DSOCK" load -q -i "$DARCH" >/dev/null &&
				"$DOCKER" -H "$DSOCK" run --rm --network none busybox true; then
				HAVE_DOCKER=1
				log "docker: client $("$DOCKER" -H "$DSOCK" version --format '{{.Client.Version}}'), daemon $("$DOCKER" -H "$DSOCK" version --format '{{.Server.Version}}') on $DSOCK"
			else
				log "docker: load or first run failed; skipping docker"
			fi
		fi
		;;
	podman)
		if ! command -v podman >/dev/null; then
			log "podman: not found; skipping podman"
		elif ! podman_in "$W/podman" load -q -i "$OCI" >/dev/null 2>"$W/podman-load.err"; then
			log "podman: load failed: $(tail -n 1 "$W/podman-load.err"); skipping podman"
		elif PODMAN_ARGS=${PODMAN_ARGS-$(podman_probe)}; then
			HAVE_PODMAN=1
			log "podman: $(podman --version), runtime $(podman_in "$W/podman" info --format '{{.Host.OCIRuntime.Name}}' 2>/dev/null), extra run flags: '${PODMAN_ARGS}'"
		else
			log "podman: no working configuration found; skipping podman"
		fi
		;;
	*) die "unknown peer '$peer' in PEERS (docker, podman)" ;;
	esac
done

# --- the benchmark -----------------------------------------------------------

args=(-N --runs "$RUNS" --warmup "$WARMUP" --style basic --export-json "$W/results.json")
args+=(--command-name berth "$BERTH --root $BR run --rm --network none busybox true")
if ((HAVE_DOCKER)); then
	args+=(--command-name docker "$(command -v "$DOCKER") -H $DSOCK run --rm --network none busybox true")
fi
if ((HAVE_PODMAN)); then
	args+=(--command-name podman "$(command -v podman) --root $W/podman/root --runroot $W/podman/run --tmpdir $W/podman/libpod --storage-driver overlay --cgroup-manager cgroupfs --events-backend none run --rm --network none ${PODMAN_ARGS:+$PODMAN_ARGS }busybox true")
fi

log "$RUNS runs each after $WARMUP warm-up runs; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
hyperfine "${args[@]}" >&2
log "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

jq -r '
  def fixed($n): (. * pow(10; $n) | round | tostring) as $s
    | ("0" * ([($n + 1) - ($s | length), 0] | max) + $s) as $p
    | "\($p[:($p | length) - $n]).\($p[($p | length) - $n:])";
  def ms: . * 1000 | fixed(1);
  [.results[] | {name: .command, median, mean, stddev, min, max, user, system}] as $rs
  | ($rs[] | select(.name == "berth") | .median) as $b
  | "| tool | median (ms) | mean ± σ (ms) | min–max (ms) | mean user + sys (ms) | median / berth |",
    "| --- | ---: | ---: | ---: | ---: | ---: |",
    ($rs[] | "| \(.name) | \(.median | ms) | \(.mean | ms) ± \(.stddev // 0 | ms) | \(.min | ms)–\(.max | ms) | \(.user | ms) + \(.system | ms) | \(.median / $b | fixed(2))x |"),
    "",
    ($rs[] | select(.name != "berth") | "berth / \(.name) = \($b / .median | fixed(3)) (\(.name) takes \(.median / $b | fixed(1))x as long as berth)"),
    "target berth median <= 30 ms: \($b | ms) ms, \(if $b <= 0.030 then "MET" else "NOT MET (\(($b - 0.030) | ms) ms over, \($b / 0.030 | fixed(2))x the target)" end)",
    ($rs[] | select(.name == "docker") | "target docker >= 10x berth: \(.median / $b | fixed(1))x, \(if .median / $b >= 10 then "MET" else "NOT MET (berth would need <= \(.median / 10 | ms) ms)" end)"),
    (if ([$rs[] | select(.name == "docker")] | length) == 0 then "target docker >= 10x berth: NOT CHECKED (docker did not run)" else empty end)
' "$W/results.json"
