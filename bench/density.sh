#!/usr/bin/env bash
# Density benchmark: memory of the engine's own per-container processes with N
# detached `sleep 600` containers: berth's monitors vs. podman's conmon vs. docker's
# containerd-shim-runc-v2 (Debian's docker.io, on a private dockerd).
#
# Usage: bench/density.sh        (N=100 containers per engine by default)
#
# For each engine in turn: start N containers, one after another,
#   berth   <berth> --root <scratch>/berth run -d busybox sleep 600
#   podman  podman --root/--runroot/--tmpdir <scratch>/podman --storage-driver overlay
#           --cgroup-manager cgroupfs --events-backend none run -d --network none
#           busybox sleep 600
#   docker  docker -H unix://<scratch>/docker.sock run -d --network none busybox sleep 600
#           (dockerd started by this script: own socket, data root and exec root,
#           --bridge none --iptables=false --ip6tables=false)
# wait SETTLE seconds, then read the memory of the engine's processes that exist
# because of those containers:
#   berth   every process running the berth binary or berth-shim under this root: one
#           monitor per container (`berth --root R __monitor ID`, which execs
#           `berth-shim ... -- berth --root R __monitor ID` while the container runs);
#           the CLI has exited
#   podman  the conmon processes of this podman root (one per container)
#   docker  the containerd-shim-runc-v2 processes of this dockerd's containerd (one per
#           container); dockerd and containerd themselves are shown apart, as the
#           fixed cost that does not grow per container
# and remove the containers before the next engine starts. The containers' own
# processes (busybox sleep) are the same for every engine and are not counted.
#
# Memory per process, in KiB, from the kernel:
#   RSS  VmRSS of /proc/PID/status: resident pages, shared ones (the binary, libc)
#        counted in full in every process
#   PSS  Pss of /proc/PID/smaps_rollup: each shared page divided among its sharers;
#        the sum over processes is the memory they really take together
#   USS  Private_Clean + Private_Dirty of smaps_rollup: what freeing the process gives
#        back
# The table shows sum / N for each (KiB per container) and the process count.
#
# Target (issue 3): berth's own processes take <= 1 MiB per container. Checked on RSS
# (the issue's wording) and on PSS. Exit status: 0 when it ran (target met or not).
#
# Environment: N (default 100), SETTLE (seconds, default 2), PEERS (default
# "podman docker"; empty: berth only), BERTH (default target/release/berth, built if
# missing, copied into the scratch dir), DOCKER (client, default `docker`), DOCKERD
# (default `dockerd`), PODMAN_ARGS (extra `podman run` flags; default: probed, as in
# bench/run.sh), BENCH_TMP (default /var/tmp), BERTH_FIXTURES (fixture dir).
# Everything is removed on exit (containers, dockerd, podman state, mounts, files).
set -euo pipefail

SELF=$(readlink -f "${BASH_SOURCE[0]}")
ROOT=$(cd "$(dirname "$SELF")/.." && pwd)

# shellcheck source=bench/lib.sh
. "$(dirname "$SELF")/lib.sh"

[[ $# -eq 0 ]] || die "unknown arguments: $* (see the header of $SELF)"
N=${N:-100}
SETTLE=${SETTLE:-2}
[[ $N =~ ^[1-9][0-9]*$ ]] || die "N must be a positive integer, not '$N'"
[[ $SETTLE =~ ^[0-9]+$ ]] || die "SETTLE must be a whole number of seconds, not '$SETTLE'"
PEERS=${PEERS-podman docker}
DOCKER=${DOCKER:-docker}
DOCKERD=${DOCKERD:-dockerd}
for cmd in awk sort; do
	command -v "$cmd" >/dev/null || die "$cmd not found; run scripts/deps.sh --bench"
done

# --- scratch dir and cleanup (as bench/run.sh) -------------------------------

wipe() {
	local d=$1 m
	[[ -e $d ]] || return 0
	if [[ $d == *podman* && -d $d/root ]] && command -v podman >/dev/null; then
		podman_in "$d" rm -f -a -t 0 >/dev/null 2>&1 || true
		podman_in "$d" system reset -f >/dev/null 2>&1 || true
	fi
	while read -r m; do
		[[ -n $m ]] && { umount -R "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; }
	done < <(mounts_under "$d")
	rm -rf "$d"
}

W=$(mktemp -d "${BENCH_TMP:-/var/tmp}/berth-density.XXXXXX")
DSOCK=unix://$W/docker.sock
BR=$W/berth
BERTH_SRC=${BERTH:-$ROOT/target/release/berth}
BERTH=$W/berth.bin # a private copy: a rebuild cannot change it under the monitors

remove_berth() {
	[[ -x $BERTH && -d $BR ]] || return 0
	local ids
	ids=$("$BERTH" --root "$BR" ps -aq --no-trunc 2>/dev/null || true)
	# shellcheck disable=SC2086 # one argument per ID
	[[ -z $ids ]] || "$BERTH" --root "$BR" rm -f $ids >/dev/null 2>&1 || true
}
remove_docker() {
	[[ -n $(dockerd_pid "$W") ]] || return 0
	local ids
	ids=$("$DOCKER" -H "$DSOCK" ps -aq 2>/dev/null || true)
	# shellcheck disable=SC2086
	[[ -z $ids ]] || "$DOCKER" -H "$DSOCK" rm -f $ids >/dev/null 2>&1 || true
}

cleanup() {
	local d
	remove_berth
	remove_docker
	dockerd_stop "$W"
	for d in "$W"/*; do wipe "$d"; done
	wipe "$W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$W/tmp"
export TMPDIR=$W/tmp

# --- memory accounting -------------------------------------------------------

# PIDs (one a line) of processes whose /proc/PID/exe is $1 and whose command line
# contains $2.
pids_by_exe() {
	local exe=$1 needle=$2 p
	for p in /proc/[0-9]*; do
		[[ $(readlink "$p/exe" 2>/dev/null) == "$exe" ]] || continue
		tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -qF -- "$needle" && echo "${p#/proc/}"
	done
	return 0
}

# PIDs of processes named $1 (comm) whose command line contains $2.
pids_by_comm() {
	local comm=$1 needle=$2 p
	for p in /proc/[0-9]*; do
		[[ $(cat "$p/comm" 2>/dev/null) == "$comm" ]] || continue
		tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -qF -- "$needle" && echo "${p#/proc/}"
	done
	return 0
}

# "rss pss uss anon" in KiB for one PID (zeros if it is gone).
mem_of() {
	local pid=$1
	awk '
		FILENAME ~ /status$/ && $1 == "VmRSS:" { rss = $2 }
		FILENAME ~ /status$/ && $1 == "RssAnon:" { anon = $2 }
		FILENAME ~ /smaps_rollup$/ && $1 == "Pss:" { pss = $2 }
		FILENAME ~ /smaps_rollup$/ && ($1 == "Private_Clean:" || $1 == "Private_Dirty:") { uss += $2 }
		END { printf "%d %d %d %d\n", rss, pss, uss, anon }
	' "/proc/$pid/status" "/proc/$pid/smaps_rollup" 2>/dev/null || echo "0 0 0 0"
}

# Reads PIDs on stdin; prints "count rss pss uss anon" (sums, KiB) and writes the
# per-process lines to $1.
measure() {
	local out=$1 pid
	: >"$out"
	while read -r pid; do
		[[ -n $pid ]] && mem_of "$pid" >>"$out"
	done
	awk '{ n++; r += $1; p += $2; u += $3; a += $4 } END { printf "%d %d %d %d %d\n", n, r, p, u, a }' "$out"
}

RESULTS=$W/results.txt # engine|process|count|rss|pss|uss|anon|start seconds|daemons
: >"$RESULTS"

# Starts N containers with "$@" (the command line up to the image), times it.
start_n() {
	local i t0 t1
	t0=$(date +%s.%N)
	for ((i = 1; i <= N; i++)); do
		"$@" busybox sleep 600 >/dev/null || die "container $i of $N failed to start: $*"
	done
	t1=$(date +%s.%N)
	START_S=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
	sleep "$SETTLE"
}

# --- berth -------------------------------------------------------------------

if [[ ! -x $BERTH_SRC ]]; then
	log "building $BERTH_SRC (cargo build --release -p berth)"
	(cd "$ROOT" && cargo build --release -p berth) >&2
fi
BERTH_SRC=$(readlink -f "$BERTH_SRC")
cp "$BERTH_SRC" "$BERTH"
# The monitor execs berth-shim, which it looks for next to its own executable.
SHIM_SRC=$(dirname "$BERTH_SRC")/berth-shim
[[ -x $SHIM_SRC ]] || die "$SHIM_SRC missing (cargo build --release -p berth builds it)"
cp "$SHIM_SRC" "$W/berth-shim"
sync "$BERTH" # written back, so smaps does not show its page-cache pages as dirty

FIX=${BERTH_FIXTURES:-$(bash "$ROOT/scripts/fixtures.sh" | tail -n 1)}
OCI=$FIX/busybox.oci.tar
DARCH=$FIX/busybox.docker.tar
[[ -f $OCI && -f $DARCH ]] || die "busybox fixtures missing in $FIX"

log "berth: $BERTH_SRC ($("$BERTH" --version 2>/dev/null || echo '?')), copied to $BERTH"
log "fixtures: $FIX; work dir: $W; N=$N; load average: $(cut -d' ' -f1-3 /proc/loadavg)"

"$BERTH" --root "$BR" load -q -i "$OCI" >/dev/null
log "berth: starting $N containers"
start_n "$BERTH" --root "$BR" run -d --network none
read -r cnt rss pss uss anon < <({
	pids_by_exe "$BERTH" "--root $BR "
	pids_by_exe "$W/berth-shim" "--root $BR "
} | measure "$W/berth.mem")
echo "berth|monitor (berth-shim, or berth __monitor)|$cnt|$rss|$pss|$uss|$anon|$START_S|" >>"$RESULTS"
running=$("$BERTH" --root "$BR" ps -q | wc -l)
((running == N)) || log "warning: berth ps shows $running running containers, not $N"
remove_berth
log "berth: $cnt processes; removed the containers"

# --- podman ------------------------------------------------------------------

podman_probe() {
	local hn hu c err
	hn=$(ulimit -Hn)
	hu=$(ulimit -Hu)
	[[ $hu == unlimited || $hu -gt 32768 ]] && hu=32768
	local -a candidates=(
		""
		"--ulimit nofile=$hn:$hn --ulimit nproc=$hu:$hu"
		"--runtime runc --ulimit nofile=$hn:$hn --ulimit nproc=$hu:$hu"
	)
	for c in "${candidates[@]}"; do
		# shellcheck disable=SC2086
		if err=$(podman_in "$W/podman" run --rm --network none $c busybox true 2>&1); then
			printf '%s' "$c"
			return 0
		fi
		log "podman: 'run --rm --network none ${c:+$c }busybox true' failed: $(tail -n 1 <<<"$err")"
	done
	return 1
}

run_podman() {
	command -v podman >/dev/null || {
		log "podman: not found; skipping podman"
		return 0
	}
	if ! podman_in "$W/podman" load -q -i "$OCI" >/dev/null 2>"$W/podman-load.err"; then
		log "podman: load failed: $(tail -n 1 "$W/podman-load.err"); skipping podman"
		return 0
	fi
	PODMAN_ARGS=${PODMAN_ARGS-$(podman_probe)} || {
		log "podman: no working configuration found; skipping podman"
		return 0
	}
	log "podman: $(podman --version), runtime $(podman_in "$W/podman" info --format '{{.Host.OCIRuntime.Name}}' 2>/dev/null), extra run flags: '$PODMAN_ARGS'; starting $N containers"
	# shellcheck disable=SC2086
	start_n podman_in "$W/podman" run -d --network none $PODMAN_ARGS
	read -r cnt rss pss uss anon < <(pids_by_comm conmon "$W/podman/" | measure "$W/podman.mem")
	echo "podman|conmon|$cnt|$rss|$pss|$uss|$anon|$START_S|" >>"$RESULTS"
	podman_in "$W/podman" rm -f -a -t 0 >/dev/null 2>&1 || true
	log "podman: $cnt conmon processes; removed the containers"
}

# --- docker ------------------------------------------------------------------

run_docker() {
	dockerd_start "$W" || return 0
	if ! "$DOCKER" -H "$DSOCK" load -q -i "$DARCH" >/dev/null; then
		log "docker: load failed; skipping docker"
		return 0
	fi
	log "docker: client $("$DOCKER" -H "$DSOCK" version --format '{{.Client.Version}}'), daemon $("$DOCKER" -H "$DSOCK" version --format '{{.Server.Version}}'); starting $N containers"
	start_n "$DOCKER" -H "$DSOCK" run -d --network none
	read -r cnt rss pss uss anon < <(pids_by_comm containerd-shim "$W/dexec/" | measure "$W/docker.mem")
	# dockerd and its containerd: shared by all containers.
	read -r _ drss dpss _ _ < <({
		dockerd_pid "$W"
		pids_by_comm containerd "$W/dexec/"
	} | measure "$W/daemons.mem")
	echo "docker|containerd-shim-runc-v2|$cnt|$rss|$pss|$uss|$anon|$START_S|$drss $dpss" >>"$RESULTS"
	remove_docker
	dockerd_stop "$W"
	log "docker: $cnt shim processes; removed the containers, stopped dockerd"
}

for peer in $PEERS; do
	case $peer in
	podman) run_podman ;;
	docker) run_docker ;;
	*) die "unknown peer '$peer' in PEERS (podman, docker)" ;;
	esac
done

# --- report ------------------------------------------------------------------

awk -F'|' -v n="$N" '
	function kib(x) { return sprintf("%.0f", x) }
	function mib(x) { return sprintf("%.2f", x / 1024) }
	BEGIN {
		printf "| engine | per-container process | processes | RSS / container (KiB) | PSS / container (KiB) | USS / container (KiB) | anon RSS / container (KiB) | start %d (s) |\n", n
		print "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
	}
	{
		printf "| %s | %s | %d | %s | %s | %s | %s | %s |\n", $1, $2, $3, kib($4 / n), kib($5 / n), kib($6 / n), kib($7 / n), $8
		if ($1 == "berth") { brss = $4 / n; bpss = $5 / n; bcnt = $3 }
		if ($9 != "") { split($9, d, " "); daemons = sprintf("docker also runs dockerd + containerd for all containers: RSS %s MiB, PSS %s MiB together (%s KiB PSS per container at N=%d)", mib(d[1]), mib(d[2]), kib(d[2] / n), n) }
	}
	END {
		print ""
		if (daemons != "") print daemons
		if (bcnt != n) printf "warning: found %d berth processes for %d containers\n", bcnt, n
		printf "target berth <= 1 MiB per container: RSS %s MiB: %s; PSS %s MiB: %s\n", mib(brss), (brss <= 1024 ? "MET" : sprintf("NOT MET (%.2fx)", brss / 1024)), mib(bpss), (bpss <= 1024 ? "MET" : sprintf("NOT MET (%.2fx)", bpss / 1024))
	}
' "$RESULTS"
