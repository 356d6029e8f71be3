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
#    Then the CNI plugin calls of `-p` alone (bridge and portmap, ADD and DEL, the
#    configuration berth writes) straight from the script, RUNS times: the floor
#    under any CNI client's start with a published port.
# 2. TCP throughput host -> container over a published port on 127.0.0.1, with iperf3
#    (one stream, SECS seconds; the server is the host's iperf3 under nsenter in the
#    container's network namespace, so both ends are the same program for every
#    path): berth's portmap DNAT (kernel), the container's address with no mapping
#    (the ceiling), and docker's userland proxy (dockerd --userland-proxy=true
#    --iptables=false, so docker-proxy carries every byte, which is the path the issue
#    compares against); then berth and docker again on networks created with
#    -o com.docker.network.driver.mtu=JUMBO. The targets take turns, REPS rounds, and
#    the median of each is reported (a 2-core host is noisy: turns spread the noise
#    over all of them).
# Targets (issue 6): networking adds <= 20 ms to a start (berth -p median - berth
# median), and berth's published-port throughput >= 2x docker's userland proxy.
# Traffic goes only to 127.0.0.1 and to the scratch networks (the sink container's
# own address, once, for the ceiling row).
#
# Environment: RUNS (default 20), WARMUP (3), SECS (5), REPS (5), JUMBO (65520), BERTH (default
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
SECS=${SECS:-5}
REPS=${REPS:-5}
JUMBO=${JUMBO:-65520}
PEERS=${PEERS-docker}
DOCKER=${DOCKER:-docker}
DOCKERD=${DOCKERD:-dockerd}
for cmd in hyperfine jq awk iperf3 ip nsenter python3; do
	command -v "$cmd" >/dev/null || die "$cmd not found; run scripts/deps.sh --bench"
done

SERVERS=() # iperf3 servers' PIDs
W=$(mktemp -d "${BENCH_TMP:-/var/tmp}/berth-net.XXXXXX")
BR=$W/berth
cleanup() {
	local id n pid
	for pid in "${SERVERS[@]}"; do kill "$pid" 2>/dev/null || true; done
	if [[ -n ${CNI_NS-} ]]; then ip netns del "$CNI_NS" 2>/dev/null || true; fi
	if [[ -n ${CNI_BR-} ]]; then ip link del "$CNI_BR" 2>/dev/null || true; fi
	if [[ -x ${BERTH-} && -d $BR ]]; then
		for id in $("$BERTH" --root "$BR" ps -aq 2>/dev/null); do
			"$BERTH" --root "$BR" rm -f "$id" >/dev/null 2>&1 || true
		done
		for n in "$BR"/networks/*/network.json; do
			if [[ -f $n ]]; then ip link del "$(jq -r .bridge "$n")" 2>/dev/null || true; fi
		done
	fi
	if [[ -S $W/docker.sock ]]; then
		"$DOCKER" -H "unix://$W/docker.sock" rm -f sink sinkj >/dev/null 2>&1 || true
		# dockerd leaves a network's bridge behind when it stops.
		"$DOCKER" -H "unix://$W/docker.sock" network rm benchnet benchjumbo >/dev/null 2>&1 || true
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

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# --- 1b. the CNI plugins alone ---------------------------------------------

# The plugin calls berth makes for `run --rm -p` (bridge ADD, portmap ADD, portmap
# DEL, bridge DEL, each with the same configuration berth writes), made straight
# from this script into a namespace and onto a bridge of its own, RUNS times: what
# any CNI client pays for a published port on this host, before its own work.
CNI_NS=berth-bench-cni-$$
CNI_BR=bbcni$$
CNI_DIR=${BERTH_CNI_PATH:-/usr/lib/cni}
sub=$(free_subnet) || die "no free /24 for the CNI-only runs"
gw=${sub%.0/24}.1
ip netns add "$CNI_NS"
ip link add "$CNI_BR" type bridge
ip addr add "$gw/24" dev "$CNI_BR"
ip link set "$CNI_BR" up
cni_br=$(jq -nc --arg br "$CNI_BR" --arg sub "$sub" --arg gw "$gw" --arg dir "$W/cni-ipam" '
  {cniVersion: "1.0.0", name: "benchcni", type: "bridge", bridge: $br, isGateway: true,
   ipMasq: true, hairpinMode: true,
   ipam: {type: "host-local", ranges: [[{subnet: $sub, gateway: $gw}]], dataDir: $dir,
          routes: [{dst: "0.0.0.0/0"}]}}')
cni_ms=()
for ((i = 0; i < RUNS; i++)); do
	export CNI_CONTAINERID=bench$$x$i CNI_NETNS=/run/netns/$CNI_NS CNI_IFNAME=eth0 CNI_PATH=$CNI_DIR
	# The port and the portmap configuration are made outside the timed calls.
	port=$(free_port)
	t0=$(date +%s%N)
	res=$(CNI_COMMAND=ADD "$CNI_DIR/bridge" <<<"$cni_br") || die "bridge ADD: $res"
	t1=$(date +%s%N)
	pm=$(jq -nc --argjson r "$res" --argjson p "$port" '
	  {cniVersion: "1.0.0", name: "benchcni", type: "portmap",
	   runtimeConfig: {portMappings: [{hostPort: $p, containerPort: 80, protocol: "tcp", hostIP: "127.0.0.1"}]},
	   prevResult: $r}')
	t2=$(date +%s%N)
	out=$(CNI_COMMAND=ADD "$CNI_DIR/portmap" <<<"$pm") || die "portmap ADD: $out"
	out=$(CNI_COMMAND=DEL "$CNI_DIR/portmap" <<<"$pm") || die "portmap DEL: $out"
	out=$(CNI_COMMAND=DEL "$CNI_DIR/bridge" <<<"$cni_br") || die "bridge DEL: $out"
	t3=$(date +%s%N)
	cni_ms+=("$(((t1 - t0 + t3 - t2) / 100000))")
	unset CNI_CONTAINERID CNI_NETNS CNI_IFNAME CNI_PATH
done
ip netns del "$CNI_NS"
ip link del "$CNI_BR"
CNI_NS= CNI_BR=
# Tenths of a millisecond -> median in ms.
CNI_MEDIAN=$(printf '%s\n' "${cni_ms[@]}" | sort -n | awk '{ a[NR] = $1 } END { printf "%.1f", a[int((NR + 1) / 2)] / 10 }')
log "the CNI plugins alone (bridge + portmap, ADD and DEL): median $CNI_MEDIAN ms over $RUNS cycles"

# --- 2. throughput -----------------------------------------------------------

# iperf3 (one TCP stream, SECS seconds) from the host to $1:$2; prints MB/s (empty
# on failure). The server runs in the sink container's network namespace.
iperf() {
	iperf3 -c "$1" -p "$2" -t "$SECS" -J 2>/dev/null |
		jq -r '.end.sum_received.bits_per_second // empty | . / 8e6 | round'
}

# iperf3 -s inside the network namespace of PID $1, on port 80.
iperf_server() {
	local pf=$W/iperf.$1.pid i
	nsenter --net="/proc/$1/ns/net" iperf3 -s -p 80 -D --pidfile "$pf" ||
		die "iperf3 server in the namespace of $1 failed"
	for ((i = 0; i < 50; i++)); do [[ -s $pf ]] && break; sleep 0.1; done
	SERVERS+=("$(cat "$pf")")
}

# The sinks: TARGETS holds "name|host|port" rows, run in turn REPS times.
TARGETS=()
b_sink() { # $1 container name, $2 network, $3 row name
	local p
	p=$(free_port)
	"$BERTH" --root "$BR" run -d --name "$1" --network "$2" -p "127.0.0.1:$p:80" busybox sleep 3600 >/dev/null
	iperf_server "$("$BERTH" --root "$BR" inspect --format '{{.State.Pid}}' "$1")"
	TARGETS+=("$3|127.0.0.1|$p")
}
d_sink() {
	local p
	p=$(free_port)
	"$DOCKER" -H "$DSOCK" run -d --name "$1" --network "$2" -p "127.0.0.1:$p:80" busybox sleep 3600 >/dev/null
	iperf_server "$("$DOCKER" -H "$DSOCK" inspect --format '{{.State.Pid}}' "$1")"
	TARGETS+=("$3|127.0.0.1|$p")
}

"$BERTH" --root "$BR" network create -o "com.docker.network.driver.mtu=$JUMBO" jumbo >/dev/null
b_sink sink bridge "berth (portmap DNAT)"
TARGETS+=("berth, container address (no mapping)|$("$BERTH" --root "$BR" inspect --format '{{.NetworkSettings.IPAddress}}' sink)|80")
if ((HAVE_DOCKER)); then
	d_sink sink benchnet "docker (userland proxy)"
fi
b_sink sinkj jumbo "berth (portmap DNAT), MTU $JUMBO"
if ((HAVE_DOCKER)); then
	sub=$(free_subnet) &&
		"$DOCKER" -H "$DSOCK" network create --subnet "$sub" -o "com.docker.network.driver.mtu=$JUMBO" benchjumbo >/dev/null ||
		die "docker network create benchjumbo failed"
	d_sink sinkj benchjumbo "docker (userland proxy), MTU $JUMBO"
fi

log "throughput: iperf3, one stream of $SECS s per run, $REPS rounds over ${#TARGETS[@]} targets in turn"
declare -A RATES=()
for ((i = 0; i < REPS; i++)); do
	for t in "${TARGETS[@]}"; do
		IFS='|' read -r name host port <<<"$t"
		r=
		for ((k = 0; k < 3; k++)); do
			r=$(iperf "$host" "$port") && [[ -n $r ]] && break
			sleep 0.5
		done
		[[ -n $r ]] || die "$name: iperf3 to $host:$port failed"
		RATES[$name]+="$r "
	done
done
median() { tr ' ' '\n' | grep . | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
TPUT=$W/throughput.tsv
: >"$TPUT"
for t in "${TARGETS[@]}"; do
	IFS='|' read -r name _ _ <<<"$t"
	log "$name: ${RATES[$name]}MB/s"
	printf '%s\t%s\t%s\n' "$name" "$(median <<<"${RATES[$name]}")" "${RATES[$name]}" >>"$TPUT"
done

# --- results -----------------------------------------------------------------

jq -r --arg cni "$CNI_MEDIAN" '
  def r1: . * 10 | round / 10;
  def ms: . * 1000 | r1;
  [.results[] | {name: .command, median, mean, stddev, min, max}] as $rs
  | (reduce $rs[] as $r ({}; .[$r.name] = $r.median)) as $m
  | "| start (run --rm busybox true) | median (ms) | mean ± σ (ms) | min–max (ms) |",
    "| --- | ---: | ---: | ---: |",
    ($rs[] | "| \(.name) | \(.median | ms) | \(.mean | ms) ± \(.stddev // 0 | ms) | \(.min | ms)–\(.max | ms) |"),
    "",
    "networking adds to a berth start: \(($m["berth -p"] - $m.berth) | ms) ms (target <= 20 ms: \(if ($m["berth -p"] - $m.berth) <= 0.020 then "MET" else "NOT MET" end))",
    "the CNI plugins alone (bridge + portmap, ADD and DEL, no container): median \($cni) ms",
    (if $m.docker then "networking adds to a docker start: \(($m["docker -p"] - $m.docker) | ms) ms; berth -p vs docker -p: \($m["docker -p"] / $m["berth -p"] | r1)x faster" else empty end)
' "$W/start.json"
echo
echo "| throughput host -> container, 127.0.0.1 published port (iperf3, $SECS s, median of $REPS) | MB/s | runs |"
echo "| --- | ---: | --- |"
awk -F'\t' '{ printf "| %s | %s | %s|\n", $1, $2, $3 }' "$TPUT"
echo
ratio() { # $1 berth row, $2 docker row
	awk -F'\t' -v b="$1" -v d="$2" '$1 == b { x = $2 } $1 == d { y = $2 }
		END { if (x && y) printf "%.2fx (target >= 2x: %s)", x / y, (x >= 2 * y ? "MET" : "NOT MET"); else printf "docker: NOT RUN" }' "$TPUT"
}
echo "berth / docker: $(ratio "berth (portmap DNAT)" "docker (userland proxy)"); both networks at MTU $JUMBO: $(ratio "berth (portmap DNAT), MTU $JUMBO" "docker (userland proxy), MTU $JUMBO")"
