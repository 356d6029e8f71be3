#!/usr/bin/env bash
# Build benchmark: berth build vs. buildah bud vs. docker build, on debian:bookworm.
#
# Usage: bench/build.sh            (RUNS=N to change the number of timed runs, default 5)
#
# The Dockerfile (written by this script) has 10 steps after its two FROMs, in two
# stages: COPY of a source tree (this repository's crates/, ~git archive), RUN steps
# that list, pack, unpack and chown it, a user, ENV/WORKDIR/USER/CMD.
#
# Two measurements per tool (hyperfine, medians of RUNS runs, one untimed warm-up):
#   cold     a store holding only the base image, no build cache. hyperfine's
#            --prepare (not timed) moves the previous run's store aside (see
#            bench/load.sh for why aside and not deleted), makes a fresh one and
#            loads debian:bookworm into it (berth load / buildah pull
#            docker-archive: / for docker: the built image and its dangling
#            intermediates are removed, the base stays; dockerd is not restarted).
#   rebuild  the same build again on a store that has it built (nothing changed):
#            every step is a cache hit.
#
# Commands:
#   berth    target/release/berth --root <store> build -q -t out CTX
#   buildah  buildah --root <store> --runroot <store> --storage-driver overlay
#            bud --layers --isolation chroot --pull=never -q -t out CTX (Debian's
#            buildah; --layers: cache each step, as docker and berth do)
#   docker   docker -H <own socket> build -q --network none -t out CTX, against
#            Debian's dockerd started here on its own socket, data root and exec
#            root (--bridge none --iptables=false), stopped on exit. The docker
#            client here has no buildx plugin, so this is the classic builder
#            (DOCKER_BUILDKIT=0); the base image is loaded with docker load.
#
# Environment: RUNS (default 5), BENCH_FS (loop, the default: a fresh ext4 for the
# run; or host), BERTH (default target/release/berth, built if missing), BENCH_TMP
# (default /var/tmp), BERTH_FIXTURES (fixture dir), DOCKERD / DOCKER (binaries),
# SKIP (space-separated tools to leave out: buildah docker).
# Everything it creates (dockerd, mounts, stores) is removed on exit.
set -euo pipefail

SELF=$(readlink -f "${BASH_SOURCE[0]}")
ROOT=$(cd "$(dirname "$SELF")/.." && pwd)

# shellcheck source=bench/lib.sh
. "$(dirname "$SELF")/lib.sh"

buildah_in() {
	local d=$1
	shift
	buildah --root "$d/root" --runroot "$d/run" --storage-driver overlay "$@"
}

# Internal (hyperfine's --prepare): `build.sh --fresh TOOL DIR FIXTURES`: moves DIR
# aside, recreates it and loads the base image into a new store there.
if [[ ${1-} == --fresh ]]; then
	tool=$2 d=$3 fix=$4
	if [[ -e $d ]]; then
		[[ $tool != buildah ]] || buildah_in "$d" rm --all >/dev/null 2>&1 || true
		unmount_under "$d"
		mkdir -p "$(dirname "$d")/trash"
		mv "$d" "$(mktemp -u "$(dirname "$d")/trash/$(basename "$d").XXXXXX")"
	fi
	mkdir -p "$d"
	case $tool in
	berth) "$BERTH" --root "$d/root" load -q -i "$fix/debian.oci.tar" >/dev/null ;;
	buildah) buildah_in "$d" pull -q "docker-archive:$fix/debian.docker.tar" >/dev/null ;;
	esac
	sync
	exit 0
fi
# Internal: `build.sh --docker-clean`: the built image and the classic builder's cache go.
if [[ ${1-} == --docker-clean ]]; then
	"$DOCKER" -H "$DSOCK" rmi -f out >/dev/null 2>&1 || true
	"$DOCKER" -H "$DSOCK" image prune -f >/dev/null 2>&1 || true
	sync
	exit 0
fi
[[ $# -eq 0 ]] || die "unknown arguments: $* (see the header of $SELF)"

RUNS=${RUNS:-5}
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive integer, not '$RUNS'"
SKIP=${SKIP:-}
for cmd in hyperfine jq awk git; do
	command -v "$cmd" >/dev/null || die "$cmd not found; run scripts/deps.sh --bench"
done
want() { [[ " $SKIP " != *" $1 "* ]]; }
if want buildah && ! command -v buildah >/dev/null; then
	log "buildah not found (apt-get install buildah); leaving it out"
	SKIP="$SKIP buildah"
fi
DOCKERD=${DOCKERD:-dockerd}
export DOCKER=${DOCKER:-docker}
if want docker && ! { command -v "$DOCKERD" && command -v "$DOCKER"; } >/dev/null; then
	log "dockerd/docker not found (apt-get install docker.io); leaving docker out"
	SKIP="$SKIP docker"
fi

BERTH=${BERTH:-$ROOT/target/release/berth}
if [[ ! -x $BERTH ]]; then
	log "building $BERTH (cargo build --release)"
	(cd "$ROOT" && cargo build --release -p berth) >&2
fi
BERTH=$(readlink -f "$BERTH")
export BERTH

FIX=${BERTH_FIXTURES:-$(bash "$ROOT/scripts/fixtures.sh" | tail -n 1)}
[[ -f $FIX/debian.oci.tar && -f $FIX/debian.docker.tar ]] || die "debian fixtures missing in $FIX"

BASE=$(mktemp -d "${BENCH_TMP:-/var/tmp}/berth-bench-build.XXXXXX")
W=$BASE
cleanup() {
	local d
	dockerd_stop "$W"
	for d in "$W"/buildah-*; do
		if [[ -d $d ]]; then buildah_in "$d" rm --all >/dev/null 2>&1 || true; fi
	done
	unmount_under "$W"
	if [[ $W != "$BASE" ]]; then
		umount -l "$W" 2>/dev/null || true
	fi
	rm -rf "$BASE"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
if [[ ${BENCH_FS:-loop} == loop ]]; then
	W=$(fresh_fs "$BASE")
fi
mkdir -p "$W/tmp"
export TMPDIR=$W/tmp
export DSOCK=unix://$W/docker.sock

# The build context: a source tree and the Dockerfile.
CTX=$W/ctx
mkdir -p "$CTX/src"
git -C "$ROOT" archive --format=tar HEAD crates | tar -x -C "$CTX/src"
cat >"$CTX/Dockerfile" <<'EOF'
FROM debian:bookworm AS build
COPY src /src
RUN find /src -type f | sort > /manifest.txt && wc -l /manifest.txt
RUN tar -C /src -czf /src.tgz .

FROM debian:bookworm
ENV APP_HOME=/opt/app
WORKDIR /opt/app
COPY --from=build /src.tgz /manifest.txt ./
RUN tar -xzf src.tgz && rm src.tgz
RUN useradd -r -u 999 app && chown -R app /opt/app
USER app
CMD ["wc", "-l", "manifest.txt"]
EOF
log "context: $(find "$CTX/src" -type f | wc -l) files, $(du -sh "$CTX/src" | cut -f1)"

fresh="bash $SELF --fresh"
q() { printf '%q' "$1"; }
B=$(q "$BERTH")
benches=()
# name | prepare | command
benches+=("berth cold|$fresh berth $W/berth-cold $FIX|$B --root $W/berth-cold/root build -q -t out $CTX")
benches+=("berth rebuild||$B --root $W/berth-warm/root build -q -t out $CTX")
mkdir -p "$W/berth-warm"
"$BERTH" --root "$W/berth-warm/root" load -q -i "$FIX/debian.oci.tar" >/dev/null
"$BERTH" --root "$W/berth-warm/root" build -q -t out "$CTX" >/dev/null

BA="bud --layers --isolation chroot --pull=never -q -t out $CTX"
if want buildah; then
	benches+=("buildah cold|$fresh buildah $W/buildah-cold $FIX|buildah --root $W/buildah-cold/root --runroot $W/buildah-cold/run --storage-driver overlay $BA")
	benches+=("buildah rebuild||buildah --root $W/buildah-warm/root --runroot $W/buildah-warm/run --storage-driver overlay $BA")
	bash "$SELF" --fresh buildah "$W/buildah-warm" "$FIX"
	# shellcheck disable=SC2086 # $BA is a list of arguments
	buildah_in "$W/buildah-warm" $BA >/dev/null
fi

if want docker; then
	dockerd_start "$W" || die "dockerd did not start"
	"$DOCKER" -H "$DSOCK" load -q -i "$FIX/debian.docker.tar" >/dev/null
	export DOCKER_BUILDKIT=0
	D="$(q "$DOCKER") -H $DSOCK build -q --network none -t"
	benches+=("docker cold|bash $SELF --docker-clean|$D out $CTX")
	# Runs after "docker cold", whose last run left the image built.
	benches+=("docker rebuild||$D out $CTX")
fi

args=(--runs "$RUNS" --warmup 1 --style basic --export-json "$W/results.json")
for b in "${benches[@]}"; do
	IFS='|' read -r name prep cmd <<<"$b"
	if [[ -n $prep ]]; then
		args+=(--command-name "$name" --prepare "$prep" "$cmd")
	else
		args+=(--command-name "$name" --prepare true "$cmd")
	fi
done

log "berth: $BERTH ($("$BERTH" --version 2>/dev/null || echo '?'))"
log "work dir: $W; $RUNS runs each; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
hyperfine "${args[@]}" >&2
log "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

jq -r '
  def fixed($n): (. * pow(10; $n) | round | tostring) as $s
    | ("0" * ([($n + 1) - ($s | length), 0] | max) + $s) as $p
    | "\($p[:($p | length) - $n]).\($p[($p | length) - $n:])";
  [.results[] | {tool: (.command | split(" ")[0]), kind: (.command | split(" ")[1]),
                 median: .median, min: .min, max: .max}] as $rs
  | ($rs | map(select(.tool == "berth")) | map({key: .kind, value: .median}) | from_entries) as $berth
  | "| tool | build | median (s) | min–max (s) | ratio to berth |",
    "| --- | --- | ---: | ---: | ---: |",
    ($rs[] | "| \(.tool) | \(.kind) | \(.median | fixed(3)) | \(.min | fixed(3))–\(.max | fixed(3)) | \(.median / $berth[.kind] | fixed(2))x |"),
    "",
    ($rs | map(select(.tool != "berth")) | group_by(.kind) | .[]
      | min_by(.median) as $f
      | ($berth[$f.kind] / $f.median) as $ratio
      | if $f.kind == "rebuild" then
          "rebuild: berth \($berth.rebuild * 1000 | round) ms; / fastest peer (\($f.tool)) = \($ratio | fixed(3))x; target <= 100 ms and <= 0.2x: \(if $berth.rebuild <= 0.1 and $ratio <= 0.2 then "MET" else "NOT MET" end)"
        else
          "cold: berth / fastest peer (\($f.tool)) = \($ratio | fixed(2))x; target <= 1.0x: \(if $ratio <= 1.0 then "MET" else "NOT MET" end)"
        end)
' "$W/results.json"
