#!/usr/bin/env bash
# Networking benchmark (issue 6), berth vs. docker (Debian's docker.io, on a private
# dockerd this script starts):
#
# 1. Container start with and without a network, one hyperfine invocation (-N):
#      berth          <berth> --root <scratch>/berth run --rm busybox true   (--network none)
#      berth bridge   <berth> --root <scratch>/berth run --rm --network bridge busybox true
#      berth -p       <berth> --root <scratch>/berth run --rm --network bridge -p 127.0.0.1::80 busybox true
#      docker         docker -H <sock> run --rm --network none busybox true
#      docker -p      docker -H <sock> run --rm --network benchnet -p 127.0.0.1::80 busybox true
#    benchnet is a docker bridge network on a /24 this script picks free of host
#    routes; berth's `bridge` is its default network of the scratch store.
# 2. TCP throughput host -> container over a published port on 127.0.0.1: a sink in
#    the container's network namespace (host python3 under nsenter, reading 1 MiB at a
#    time; busybox nc was the bottleneck), the host writes SIZE_MB MiB of zeros
#    into 127.0.0.1:PORT with dd (bash's /dev/tcp), REPS times; the median rate is
#    reported. berth: the portmap plugin's DNAT (kernel). docker: its userland proxy
#    (dockerd --userland-proxy=true --iptables=false, so docker-proxy carries every
#    byte, which is the path the issue compares against).
#
# Targets (issue 6): networking adds <= 20 ms to a start (berth -p median - berth
# median), and berth's published-port throughput >= 2x docker's userland proxy.
# Traffic goes only to 127.0.0.1 and to the scratch networks (the sink container's
# own address, once, for the ceiling row).
#
# Environment: RUNS (default 20), WARMUP (3), SIZE_MB (1024), REPS (3), BERTH (default
# target/release/berth, built if missing, copied into the scratch dir), DOCKER,
# DOCKERD, PEERS ("docker" or empty), BENCH_TMP (/var/tmp), BERTH_FIXTURES.
# Everything it creates is removed on exit: containers, dockerd, berth's bridges and
# namespace pins, the scratch dir.
set -euo pipefail

SELF=$(readlink -f "${BASH_SOURCE[0]}")
ROOT=$(cd "$(dirname "$SELF")/.." && pwd)

# shellcheck source=bench/lib.sh
. "$(dirname "$SELF")/lib.sh"

[[ $# -eq 0 ]] || die "no arguments (see the header of $SELF)"
RUNS=${RUNS:-20}
WARMUP=${WARMUP:-3}
SIZE_MB=${SIZE_MB:-1024}
REPS=${REPS:-3}
PEERS=${PEERS-docker}
DOCKER=${DOCKER:-docker}
DOCKERD=${DOCKERD:-dockerd}
for cmd in hyperfine jq awk dd ip nsenter python3; do
	command -v "$cmd" >/dev/null || die "$cmd not found; run scripts/deps.sh --bench"
done

W=$(mktemp -d "${BENCH_TMP:-/var/tmp}/berth-net.XXXXXX")
BR=$W/berth
cleanup() {
	local id n
	if [[ -n ${SINK_PID-} ]]; then kill "$SINK_PID" 2>/dev/null || true; fi
	if [[ -x ${BERTH-} && -d $BR ]]; then
		for id in $("$BERTH" --root "$BR" ps -aq 2>/dev/null); do
			"$BERTH" --root "$BR" rm -f "$id" >/dev/null 2>&1 || true
		done
		for n in "$BR"/networks/*/network.json; do
			if [[ -f $n ]]; then ip link del "$(jq -r .bridge "$n")" 2>/dev/null || true; fi
		done
	fi
	if [[ -S $W/docker.sock ]]; then
		"$DOCKER" -H "unix://$W/docker.sock" rm -f sink >/dev/null 2>&1 || true
		# dockerd leaves a network's bridge behind when it stops.
		"$DOCKER" -H "unix://$W/docker.sock" network rm benchnet >/dev/null 2>&1 || true
	fi
	dockerd_stop "$W"
	unmount_under "$W"
	rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$W/tmp"
export TMPDIR=$W/tmp

BERTH=${BERTH:-$ROOT/target/release/berth}
if [[ ! -x $BERTH ]]; then
	log "building $BERTH (cargo build --release -p berth)"
	(cd "$ROOT" && cargo build --release -p berth) >&2
fi
BERTH_SRC=$(readlink -f "$BERTH")
cp "$BERTH_SRC" "$W/berth.bin"
BERTH=$W/berth.bin
FIX=${BERTH_FIXTURES:-$(bash "$ROOT/scripts/fixtures.sh" | tail -n 1)}
[[ -f $FIX/busybox.oci.tar && -f $FIX/busybox.docker.tar ]] || die "busybox fixtures missing in $FIX"
"$BERTH" --root "$BR" load -q -i "$FIX/busybox.oci.tar" >/dev/null
"$BERTH" --root "$BR" run --rm --network bridge -p 127.0.0.1::80 busybox true ||
	die "berth run -p failed"
log "berth: $BERTH_SRC, copied to $BERTH; work dir $W"

# A /24 in 10.240-249 that no host route overlaps.
free_subnet() {
	local i j
	for ((i = 240; i < 250; i++)); do
		for ((j = 0; j < 256; j += 17)); do
			ip route show to match "10.$i.$j.1" | grep -qv '^default' || {
				echo "10.$i.$j.0/24"
				return 0
			}
		done
	done
	return 1
}

HAVE_DOCKER=0
DSOCK=unix://$W/docker.sock
if [[ " $PEERS " == *" docker "* ]] &&
	dockerd_start "$W" --userland-proxy=true; then
	if "$DOCKER" -H "$DSOCK" load -q -i "$FIX/busybox.docker.tar" >/dev/null &&
		sub=$(free_subnet) &&
		"$DOCKER" -H "$DSOCK" network create --subnet "$sub" benchnet >/dev/null &&
		"$DOCKER" -H "$DSOCK" run --rm --network benchnet -p 127.0.0.1::80 busybox true; then
		HAVE_DOCKER=1
		log "docker: $("$DOCKER" -H "$DSOCK" version --format '{{.Server.Version}}'), benchnet $sub, userland proxy on"
	else
		log "docker: setup failed (see $W/dockerd.log); docker skipped"
	fi
fi

# --- 1. start ----------------------------------------------------------------

args=(-N --runs "$RUNS" --warmup "$WARMUP" --style basic --export-json "$W/start.json")
args+=(--command-name berth "$BERTH --root $BR run --rm --network none busybox true")
args+=(--command-name "berth bridge" "$BERTH --root $BR run --rm --network bridge busybox true")
args+=(--command-name "berth -p" "$BERTH --root $BR run --rm --network bridge -p 127.0.0.1::80 busybox true")
if ((HAVE_DOCKER)); then
	d=$(command -v "$DOCKER")
	args+=(--command-name docker "$d -H $DSOCK run --rm --network none busybox true")
	args+=(--command-name "docker -p" "$d -H $DSOCK run --rm --network benchnet -p 127.0.0.1::80 busybox true")
fi
log "start: $RUNS runs each after $WARMUP warm-up runs; load average $(cut -d' ' -f1-3 /proc/loadavg)"
hyperfine "${args[@]}" >&2

# --- 2. throughput -----------------------------------------------------------

# One dd of SIZE_MB MiB into $HOST:$1 (127.0.0.1 unless set); prints MB/s (empty on
# failure).
push() {
	local out
	out=$(dd if=/dev/zero bs=1M count="$SIZE_MB" 2>&1 >"/dev/tcp/${HOST:-127.0.0.1}/$1") || return 1
	awk -F', ' '/copied/ { split($3, t, " "); if (t[1] > 0) printf "%.0f\n", $1 / t[1] / 1e6 }' <<<"$out"
}

# Median MB/s of REPS pushes into port $2 (name $1 for the log).
throughput() {
	local name=$1 port=$2 i r rates=()
	for ((i = 0; i < 50; i++)); do
		# The sink accepts one connection per nc; wait until one is up.
		r=$(SIZE_MB=1 push "$port" 2>/dev/null) && [[ -n $r ]] && break
		sleep 0.2
	done
	for ((i = 0; i < REPS; i++)); do
		sleep 0.3
		r=$(push "$port") || r=
		[[ -n $r ]] || die "$name: a push to 127.0.0.1:$port failed"
		rates+=("$r")
	done
	log "$name: ${rates[*]} MB/s"
	printf '%s\n' "${rates[@]}" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The sink: a host python3 in the container's network namespace (busybox nc reads
# in small pieces and capped both paths at ~400 MB/s), reading with a 1 MiB buffer.
SINK_PY='
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 80))
s.listen(8)
b = bytearray(1 << 20)
while True:
    c, _ = s.accept()
    while c.recv_into(b):
        pass
    c.close()
'
SINK_PID=
sink_start() { # $1: the container's PID
	nsenter --net="/proc/$1/ns/net" python3 -c "$SINK_PY" &
	SINK_PID=$!
}
sink_stop() {
	kill "$SINK_PID" 2>/dev/null || true
	wait "$SINK_PID" 2>/dev/null || true
}

p=$(free_port)
"$BERTH" --root "$BR" run -d --name sink --network bridge -p "127.0.0.1:$p:80" busybox sleep 3600 >/dev/null
sink_start "$("$BERTH" --root "$BR" inspect --format '{{.State.Pid}}' sink)"
B_TPUT=$(throughput "berth (portmap DNAT)" "$p")
# The same sink straight at the container's address (no mapping): the ceiling.
B_DIRECT=$(HOST=$("$BERTH" --root "$BR" inspect --format '{{.NetworkSettings.IPAddress}}' sink) throughput "berth, container address" 80)
sink_stop
"$BERTH" --root "$BR" rm -f sink >/dev/null
D_TPUT=
if ((HAVE_DOCKER)); then
	p=$(free_port)
	"$DOCKER" -H "$DSOCK" run -d --name sink --network benchnet -p "127.0.0.1:$p:80" busybox sleep 3600 >/dev/null
	sink_start "$("$DOCKER" -H "$DSOCK" inspect --format '{{.State.Pid}}' sink)"
	D_TPUT=$(throughput "docker (userland proxy)" "$p")
	sink_stop
	"$DOCKER" -H "$DSOCK" rm -f sink >/dev/null
fi

# --- results -----------------------------------------------------------------

jq -r --arg bt "$B_TPUT" --arg bd "$B_DIRECT" --arg dt "$D_TPUT" --arg mb "$SIZE_MB" --arg reps "$REPS" '
  def r1: . * 10 | round / 10;
  def ms: . * 1000 | r1;
  [.results[] | {name: .command, median, mean, stddev, min, max}] as $rs
  | (reduce $rs[] as $r ({}; .[$r.name] = $r.median)) as $m
  | "| start (run --rm busybox true) | median (ms) | mean ± σ (ms) | min–max (ms) |",
    "| --- | ---: | ---: | ---: |",
    ($rs[] | "| \(.name) | \(.median | ms) | \(.mean | ms) ± \(.stddev // 0 | ms) | \(.min | ms)–\(.max | ms) |"),
    "",
    "networking adds to a berth start: \(($m["berth -p"] - $m.berth) | ms) ms (target <= 20 ms: \(if ($m["berth -p"] - $m.berth) <= 0.020 then "MET" else "NOT MET" end))",
    (if $m.docker then "networking adds to a docker start: \(($m["docker -p"] - $m.docker) | ms) ms; berth -p vs docker -p: \($m["docker -p"] / $m["berth -p"] | r1)x faster" else empty end),
    "",
    "| throughput host -> container, 127.0.0.1 published port (\($mb) MiB, median of \($reps)) | MB/s |",
    "| --- | ---: |",
    "| berth (portmap DNAT) | \($bt) |",
    "| (ceiling: the sink at the container address, no mapping) | \($bd) |",
    (if $dt != "" then "| docker (userland proxy) | \($dt) |", "", "berth / docker: \(($bt | tonumber) / ($dt | tonumber) | r1)x (target >= 2x: \(if ($bt | tonumber) >= 2 * ($dt | tonumber) then "MET" else "NOT MET" end))" else "docker: NOT RUN" end)
' "$W/start.json"
