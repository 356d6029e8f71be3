#!/usr/bin/env bash
# Load + unpack benchmark: berth vs. podman vs. skopeo+umoci on debian:bookworm.
#
# Usage: bench/load.sh            (RUNS=N to change the number of timed runs, default 5)
#
# Every tool starts from a cold store each run: hyperfine's --prepare (not timed)
# moves the previous run's directory aside (see --fresh below for why not deleted),
# creates a fresh empty one and syncs, so no run pays for another's writeback. The page cache is NOT dropped (that may not be
# permitted); one untimed warm-up run per command puts the archive in the cache
# for every tool alike.
#
# Timed commands (fixtures from scripts/fixtures.sh):
#   berth         target/release/berth --root <fresh> load -q -i debian.{oci,docker}.tar
#                 (stores the compressed layer blob for save/push AND unpacks the snapshot)
#   podman        podman --root <fresh> --runroot <fresh> --storage-driver overlay
#                 ... load -q -i debian.{oci,docker}.tar   (unpacks into overlay diff dirs)
#   skopeo+umoci  skopeo copy oci-archive:debian.oci.tar oci:<fresh>:deb &&
#                 umoci unpack --image <fresh>:deb <fresh bundle>
#   tar -x        tar -xf debian.rootfs.tar -C <fresh>: not a peer, a reference for
#                 what creating the same tree costs on this file system
#
# Environment: RUNS (default 5), BENCH_FS (loop, the default: a fresh ext4 for the
# run, see below; or host), BERTH (default target/release/berth, built with
# `cargo build --release` if missing), BENCH_TMP (default /var/tmp; not /tmp, where
# file creation is much slower on the CI machine), BERTH_FIXTURES (fixture dir).
# Everything it creates (podman overlay mounts included) is removed on exit.
set -euo pipefail

SELF=$(readlink -f "${BASH_SOURCE[0]}")
ROOT=$(cd "$(dirname "$SELF")/.." && pwd)

# shellcheck source=bench/lib.sh
. "$(dirname "$SELF")/lib.sh"



# Removes a work directory completely: podman state reset, mounts gone, files gone.
wipe() {
	local d=$1 m
	[[ -e $d ]] || return 0
	if [[ -d $d/root && -n $(ls -A "$d/root" 2>/dev/null) ]] && [[ $d == *podman* ]]; then
		podman_in "$d" system reset -f >/dev/null 2>&1 || true
	fi
	while read -r m; do
		[[ -n $m ]] && umount -R "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
	done < <(mounts_under "$d")
	rm -rf "$d"
}

# Internal: `load.sh --fresh DIR` (hyperfine's --prepare): move the previous run's DIR
# aside (into trash/ next to it, after unmounting anything below it), recreate it, sync.
# Why aside and not deleted: on ext4 without a journal (this machine's root file system)
# an inode freed less than 5 s ago (300 s while its inode table block is dirty) is not
# reused, and the allocator pays a buffer lookup for each one it skips
# (recently_deleted() in fs/ext4/ialloc.c). Deleting ~6,700 files before every run made
# each run slower than the one before (perf: up to 60% of system time in
# recently_deleted), a cost of the benchmark's own cleanup that no user loading into a
# store sees. Everything moved aside is deleted once, on exit.
if [[ ${1-} == --fresh ]]; then
	d=$2
	if [[ -e $d ]]; then
		while read -r m; do
			[[ -n $m ]] && umount -R "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
		done < <(mounts_under "$d")
		mkdir -p "$(dirname "$d")/trash"
		mv "$d" "$(mktemp -u "$(dirname "$d")/trash/$(basename "$d").XXXXXX")"
	fi
	mkdir -p "$d"
	sync
	exit 0
fi
[[ $# -eq 0 ]] || die "unknown arguments: $* (see the header of $SELF)"

RUNS=${RUNS:-5}
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive integer, not '$RUNS'"
for cmd in hyperfine podman skopeo umoci jq awk; do
	command -v "$cmd" >/dev/null || die "$cmd not found; run scripts/deps.sh --bench"
done

BERTH=${BERTH:-$ROOT/target/release/berth}
if [[ ! -x $BERTH ]]; then
	log "building $BERTH (cargo build --release)"
	(cd "$ROOT" && cargo build --release -p berth) >&2
fi
BERTH=$(readlink -f "$BERTH")

FIX=${BERTH_FIXTURES:-$(bash "$ROOT/scripts/fixtures.sh" | tail -n 1)}
OCI=$FIX/debian.oci.tar
DOCKER=$FIX/debian.docker.tar
ROOTFS=$FIX/debian.rootfs.tar
[[ -f $OCI && -f $DOCKER && -f $ROOTFS ]] || die "debian fixtures missing in $FIX"

# Every store lives on a file system made for this run (ext4 with its default journal,
# in a sparse file under BENCH_TMP, loop-mounted): runs do not depend on what the host
# file system has been through (see --fresh above), and each tool finds the same clean
# allocator state a fresh /var/lib store has. BENCH_FS=host uses BENCH_TMP directly.
BASE=$(mktemp -d "${BENCH_TMP:-/var/tmp}/berth-bench.XXXXXX")
W=$BASE
cleanup() {
	local d
	for d in "$W"/*; do wipe "$d"; done
	[[ $W == "$BASE" ]] || fresh_fs_remove "$BASE"
	rm -rf "$BASE"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
if [[ ${BENCH_FS:-loop} == loop ]]; then
	W=$(fresh_fs "$BASE")
fi
mkdir -p "$W/tmp"
export TMPDIR=$W/tmp # skopeo/podman stage big files in $TMPDIR

fresh="bash $SELF --fresh"
q() { printf '%q' "$1"; }

# name | prepare | command
benches=(
	"berth (oci)|$fresh $W/berth-oci|$(q "$BERTH") --root $W/berth-oci/root load -q -i $(q "$OCI")"
	"podman (oci)|$fresh $W/podman-oci|podman --root $W/podman-oci/root --runroot $W/podman-oci/run --tmpdir $W/podman-oci/libpod --storage-driver overlay --cgroup-manager cgroupfs --events-backend none load -q -i $(q "$OCI")"
	"skopeo+umoci (oci)|$fresh $W/umoci|skopeo --insecure-policy copy -q oci-archive:$(q "$OCI") oci:$W/umoci/layout:deb && umoci unpack --image $W/umoci/layout:deb $W/umoci/bundle"
	"berth (docker)|$fresh $W/berth-docker|$(q "$BERTH") --root $W/berth-docker/root load -q -i $(q "$DOCKER")"
	"podman (docker)|$fresh $W/podman-docker|podman --root $W/podman-docker/root --runroot $W/podman-docker/run --tmpdir $W/podman-docker/libpod --storage-driver overlay --cgroup-manager cgroupfs --events-backend none load -q -i $(q "$DOCKER")"
	# Reference, not a peer: the cost of just creating this tree on this file
	# system (no decompression, no digests, no store).
	"tar -x (rootfs)|$fresh $W/tar|tar -xf $(q "$ROOTFS") -C $W/tar"
)

args=(--runs "$RUNS" --warmup 1 --style basic --export-json "$W/results.json")
for b in "${benches[@]}"; do
	IFS='|' read -r name prep cmd <<<"$b"
	args+=(--command-name "$name" --prepare "$prep" "$cmd")
done

log "berth: $BERTH ($("$BERTH" --version 2>/dev/null || echo '?'))"
log "fixtures: $FIX; work dir: $W; $RUNS runs each; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
hyperfine "${args[@]}" >&2
log "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

# Table: median per tool, ratio to berth on the same input (the tar reference:
# to berth on the oci-archive), verdict per input against the fastest peer.
jq -r '
  def fixed($n): (. * pow(10; $n) | round | tostring) as $s
    | ("0" * ([($n + 1) - ($s | length), 0] | max) + $s) as $p
    | "\($p[:($p | length) - $n]).\($p[($p | length) - $n:])";
  def r2: fixed(2);
  def r3: fixed(3);
  [.results[] | {name: .command, median: .median, min: .min, max: .max,
                 input: (.command | capture("\\((?<i>[a-z]+)\\)").i)}] as $rs
  | ($rs | map(select(.name | startswith("berth"))) | map({key: .input, value: .median}) | from_entries) as $berth
  | "| tool | input | median (s) | min–max (s) | ratio to berth |",
    "| --- | --- | ---: | ---: | ---: |",
    ($rs[] | "| \(.name | sub(" \\(.*"; "")) | \(if .input == "rootfs" then "rootfs.tar (reference)" else "\(.input)-archive" end) | \(.median | r3) | \(.min | r2)–\(.max | r2) | \(.median / ($berth[.input] // $berth.oci) | r2)x |"),
    "",
    ($rs | map(select((.name | startswith("berth") | not) and .input != "rootfs")) | group_by(.input) | reverse | .[]
      | min_by(.median) as $f
      | ($berth[$f.input] / $f.median) as $ratio
      | "\($f.input)-archive: berth / fastest peer (\($f.name | sub(" \\(.*"; ""))) = \($ratio | r2)x; target berth <= 0.5x fastest peer: \(if $ratio <= 0.5 then "MET" else "NOT MET" end)")
' "$W/results.json"
