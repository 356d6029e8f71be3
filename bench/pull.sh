#!/usr/bin/env bash
# Pull benchmark: berth vs. podman vs. docker vs. skopeo+umoci, pulling the
# debian:bookworm fixture from a local registry (issue 4).
#
# Usage: bench/pull.sh            (RUNS=N to change the number of timed runs, default 5)
#
# The script starts Debian's docker-registry (distribution 2.8) on 127.0.0.1 (plain
# HTTP, storage in the work dir) and pushes debian.oci.tar to it with skopeo
# (127.0.0.1:PORT/bench/debian:bookworm, the fixture's OCI manifest unchanged). Then,
# side by side with hyperfine, every tool pulls it into a cold store:
#
#   berth         target/release/berth --root <fresh> pull -q REF
#                 (stores the compressed layer blob AND unpacks the snapshot), with
#                 BERTH_CONFIG, BERTH_AUTH_FILE and DOCKER_CONFIG pointing at empty
#                 files of this run, so no host config takes part
#   podman        podman --root <fresh> --runroot <fresh> --storage-driver overlay ...
#                 pull -q --tls-verify=false REF   (unpacks into overlay diff dirs)
#   docker        docker -H unix://<work>/docker.sock pull -q REF against Debian's
#                 dockerd (docker.io) that --prepare restarts on a fresh --data-root
#                 every run (own --exec-root, --pidfile, --bridge none
#                 --iptables=false: offline, touches no host network setup); dockerd
#                 treats 127.0.0.0/8 registries as insecure by default
#   skopeo+umoci  skopeo copy --src-tls-verify=false docker://REF oci:<fresh>:deb &&
#                 umoci unpack --image <fresh>:deb <fresh bundle>
#
# Cold store each run: hyperfine's --prepare (not timed) moves the previous run's
# directory aside (deleting it would make later runs pay for the deletes, see
# bench/load.sh) and syncs. All stores live on a fresh loop-mounted ext4, as in
# bench/load.sh. The page cache is not dropped; one untimed warm-up run per command
# puts the registry's blob in the cache for every tool alike.
#
# Environment: RUNS (default 5), TOOLS (default "berth podman docker skopeo+umoci";
# leave some out to time the rest), BENCH_FS (loop, the default, or host), BERTH
# (default target/release/berth, built with `cargo build --release` if missing),
# DOCKER / DOCKERD (client and daemon, default docker / dockerd), BENCH_TMP (default
# /var/tmp), BERTH_FIXTURES (fixture dir).
# Everything it creates is removed on exit: registry and dockerd stopped, podman
# state reset, mounts unmounted, the loop file system and all dirs deleted.
set -euo pipefail

SELF=$(readlink -f "${BASH_SOURCE[0]}")
ROOT=$(cd "$(dirname "$SELF")/.." && pwd)

# shellcheck source=bench/lib.sh
. "$(dirname "$SELF")/lib.sh"

DOCKER=${DOCKER:-docker}
DOCKERD=${DOCKERD:-dockerd}



# Removes a work directory completely: podman state reset, mounts gone, files gone.
wipe() {
	local d=$1
	[[ -e $d ]] || return 0
	if [[ $d == *podman* && -d $d/root ]] && command -v podman >/dev/null; then
		podman_in "$d" system reset -f >/dev/null 2>&1 || true
	fi
	unmount_under "$d"
	rm -rf "$d"
}

# Moves DIR aside into trash/ next to it (after unmounting anything below it),
# recreates it empty. Why not delete: see bench/load.sh (--fresh).
fresh_dir() {
	local d=$1
	if [[ -e $d ]]; then
		unmount_under "$d"
		mkdir -p "$(dirname "$d")/trash"
		mv "$d" "$(mktemp -u "$(dirname "$d")/trash/$(basename "$d").XXXXXX")"
	fi
	mkdir -p "$d"
}

# Internal, hyperfine's --prepare steps:
#   pull.sh --fresh DIR          an empty DIR (the previous one moved aside), synced
#   pull.sh --fresh-docker WORK  dockerd restarted on a fresh data root, synced
case ${1-} in
--fresh)
	fresh_dir "$2"
	sync
	exit 0
	;;
--fresh-docker)
	dockerd_stop "$2"
	fresh_dir "$2/docker"
	dockerd_start "$2"
	sync
	exit 0
	;;
esac
[[ $# -eq 0 ]] || die "unknown arguments: $* (see the header of $SELF)"

RUNS=${RUNS:-5}
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive integer, not '$RUNS'"
TOOLS=${TOOLS-berth podman docker skopeo+umoci}
need=(hyperfine skopeo docker-registry jq awk setsid)
for t in $TOOLS; do
	case $t in
	berth) ;;
	podman) need+=(podman) ;;
	docker) need+=("$DOCKER" "$DOCKERD") ;;
	skopeo+umoci) need+=(umoci) ;;
	*) die "unknown tool '$t' in TOOLS (berth podman docker skopeo+umoci)" ;;
	esac
done
for cmd in "${need[@]}"; do
	command -v "$cmd" >/dev/null || die "$cmd not found; run scripts/deps.sh --bench"
done

FIX=${BERTH_FIXTURES:-$(bash "$ROOT/scripts/fixtures.sh" | tail -n 1)}
OCI=$FIX/debian.oci.tar
[[ -f $OCI ]] || die "debian fixture missing in $FIX"

if [[ " $TOOLS " == *" berth "* ]]; then
	BERTH=${BERTH:-$ROOT/target/release/berth}
	if [[ ! -x $BERTH ]]; then
		log "building $BERTH (cargo build --release)"
		(cd "$ROOT" && cargo build --release -p berth) >&2
	fi
	BERTH=$(readlink -f "$BERTH")
	"$BERTH" pull --help >/dev/null 2>&1 ||
		die "$BERTH has no 'pull' command (rebuild it, or TOOLS='podman docker skopeo+umoci')"
fi

# --- work dir, loop file system, cleanup -------------------------------------

BASE=$(mktemp -d "${BENCH_TMP:-/var/tmp}/berth-pull.XXXXXX")
W=$BASE
REGISTRY_PID=
cleanup() {
	local d
	[[ -n $REGISTRY_PID ]] && { kill "$REGISTRY_PID" 2>/dev/null || true; wait "$REGISTRY_PID" 2>/dev/null || true; }
	dockerd_stop "$W"
	for d in "$W"/*; do wipe "$d"; done
	[[ $W == "$BASE" ]] || fresh_fs_remove "$BASE"
	rm -rf "$BASE"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
if [[ ${BENCH_FS:-loop} == loop ]]; then
	W=$(fresh_fs "$BASE")
fi
mkdir -p "$W/tmp" "$W/etc/docker-config"
export TMPDIR=$W/tmp # skopeo/podman stage big files in $TMPDIR
# berth (and the docker client) read only this run's (empty) config files.
echo '{}' >"$W/etc/berth.json"
echo '{}' >"$W/etc/docker-config/config.json"
export BERTH_CONFIG=$W/etc/berth.json BERTH_AUTH_FILE=$W/etc/berth-auth.json
export DOCKER_CONFIG=$W/etc/docker-config

# --- the registry ------------------------------------------------------------

# A free port: nothing answers there now; if the registry still loses a race for
# it, it exits and we try another.
start_registry() {
	local port i try v noenv
	for ((try = 0; try < 10; try++)); do
		port=$((20000 + RANDOM % 30000))
		(exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && continue
		cat >"$W/registry.yml" <<-EOF
			version: 0.1
			log:
			  level: warn
			  accesslog:
			    disabled: true
			storage:
			  filesystem:
			    rootdirectory: $W/registry
			http:
			  addr: 127.0.0.1:$port
			  secret: berth-bench
		EOF
		# docker-registry takes REGISTRY_* variables as config overrides: none of ours.
		noenv=()
		for v in $(compgen -e); do [[ $v == REGISTRY_* ]] && noenv+=(-u "$v"); done
		env "${noenv[@]}" docker-registry serve "$W/registry.yml" >"$W/registry.log" 2>&1 &
		REGISTRY_PID=$!
		for ((i = 0; i < 300; i++)); do
			kill -0 "$REGISTRY_PID" 2>/dev/null || break
			if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
				REGISTRY=127.0.0.1:$port
				return 0
			fi
			sleep 0.1
		done
		kill "$REGISTRY_PID" 2>/dev/null || true
		wait "$REGISTRY_PID" 2>/dev/null || true
		REGISTRY_PID=
	done
	tail -n 15 "$W/registry.log" >&2 || true
	die "docker-registry did not start"
}
start_registry
REF=$REGISTRY/bench/debian:bookworm
skopeo --insecure-policy copy -q --dest-tls-verify=false "oci-archive:$OCI" "docker://$REF" ||
	die "skopeo could not push $OCI to $REF"
DIGEST=$(skopeo inspect --tls-verify=false --format '{{.Digest}}' "docker://$REF")
log "registry: docker-registry $(docker-registry --version | awk '{print $NF}') on $REGISTRY; $REF = $DIGEST"

# --- the commands ------------------------------------------------------------

q() { printf '%q' "$1"; }
fresh="bash $(q "$SELF") --fresh"
benches=()
for t in $TOOLS; do
	case $t in
	berth)
		benches+=("berth|$fresh $W/berth|$(q "$BERTH") --root $W/berth/root pull -q $REF")
		;;
	podman)
		benches+=("podman|$fresh $W/podman|podman --root $W/podman/root --runroot $W/podman/run --tmpdir $W/podman/libpod --storage-driver overlay --cgroup-manager cgroupfs --events-backend none pull -q --tls-verify=false $REF")
		;;
	docker)
		# The daemon keeps running between prepare and the timed pull.
		benches+=("docker|bash $(q "$SELF") --fresh-docker $W|$(q "$DOCKER") -H unix://$W/docker.sock pull -q $REF")
		;;
	skopeo+umoci)
		benches+=("skopeo+umoci|$fresh $W/umoci|skopeo --insecure-policy copy -q --src-tls-verify=false docker://$REF oci:$W/umoci/layout:deb && umoci unpack --image $W/umoci/layout:deb $W/umoci/bundle >/dev/null")
		;;
	esac
done

# Check once, untimed, that every command works (hyperfine would only say "failed").
for b in "${benches[@]}"; do
	IFS='|' read -r name prep cmd <<<"$b"
	bash -c "$prep" >/dev/null || die "$name: prepare failed: $prep"
	bash -c "$cmd" >"$W/check.out" 2>&1 || {
		tail -n 5 "$W/check.out" >&2
		die "$name failed: $cmd"
	}
done
if [[ " $TOOLS " == *" berth "* ]]; then
	got=$("$BERTH" --root "$W/berth/root" image inspect --format '{{json .RepoDigests}}' "$REF" 2>/dev/null || true)
	[[ $got == *"$DIGEST"* ]] || log "warning: berth's RepoDigests ($got) do not name $DIGEST"
fi

args=(--runs "$RUNS" --warmup 1 --style basic --export-json "$W/results.json")
for b in "${benches[@]}"; do
	IFS='|' read -r name prep cmd <<<"$b"
	args+=(--command-name "$name" --prepare "$prep" "$cmd")
done

log "fixture: $OCI; work dir: $W; $RUNS runs each; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
[[ -n ${BERTH-} ]] && log "berth: $BERTH ($("$BERTH" --version 2>/dev/null || echo '?'))"
command -v podman >/dev/null && log "podman: $(podman --version)"
[[ " $TOOLS " == *" docker "* ]] && log "docker: client $("$DOCKER" --version), daemon $("$DOCKERD" --version)"
hyperfine "${args[@]}" >&2
log "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

# Table: median per tool, ratio to berth; verdict against the fastest peer.
jq -r '
  def fixed($n): (. * pow(10; $n) | round | tostring) as $s
    | ("0" * ([($n + 1) - ($s | length), 0] | max) + $s) as $p
    | "\($p[:($p | length) - $n]).\($p[($p | length) - $n:])";
  [.results[] | {name: .command, median: .median, min: .min, max: .max}] as $rs
  | ($rs | map(select(.name == "berth")) | first | .median) as $berth
  | "| tool | median (s) | min–max (s) | ratio to berth |",
    "| --- | ---: | ---: | ---: |",
    ($rs[] | "| \(.name) | \(.median | fixed(3)) | \(.min | fixed(2))–\(.max | fixed(2)) | \(if $berth then "\(.median / $berth | fixed(2))x" else "–" end) |"),
    "",
    (($rs | map(select(.name != "berth"))) as $peers
      | if ($berth == null) or ($peers | length) == 0 then "no verdict: berth and at least one peer must be timed"
        else ($peers | min_by(.median)) as $f | ($berth / $f.median) as $ratio
          | "berth / fastest peer (\($f.name)) = \($ratio | fixed(2))x; target berth <= 0.5x fastest peer: \(if $ratio <= 0.5 then "MET" else "NOT MET" end)"
        end)
' "$W/results.json"
