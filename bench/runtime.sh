#!/usr/bin/env bash
# OCI runtime benchmark: `berth runtime run` vs `runc run` (and crun where it
# works) of the same bundle — create, start, wait and delete of a container
# running `true` — side by side in one hyperfine run.
#
# Usage: bench/runtime.sh            (RUNS=N, default 20; BERTH=path)
#
# The bundle comes from `runc spec` with the busybox fixture as its rootfs and
# `true` as its process. Each tool gets its own state directory; `run` deletes
# the container when it exits, so every iteration starts from nothing.
# Scratch lives under BENCH_TMP (default /var/tmp; /tmp is slow here).
set -euo pipefail

SELF=$(readlink -f "${BASH_SOURCE[0]}")
ROOT=$(cd "$(dirname "$SELF")/.." && pwd)
RUNS=${RUNS:-20}
BERTH=${BERTH:-$ROOT/target/release/berth}
BENCH_TMP=${BENCH_TMP:-/var/tmp}

die() {
	printf 'bench: error: %s\n' "$*" >&2
	exit 1
}
for cmd in hyperfine runc jq; do
	command -v "$cmd" >/dev/null || die "$cmd not found; run scripts/deps.sh --bench"
done
[[ -x $BERTH ]] || (cd "$ROOT" && cargo build --release -q -p berth)
fixtures=${BERTH_FIXTURES:-$(bash "$ROOT/scripts/fixtures.sh" | tail -n 1)}

work=$(mktemp -d "$BENCH_TMP/berth-bench-runtime.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/bundle/rootfs"
tar -xf "$fixtures/busybox.rootfs.tar" -C "$work/bundle/rootfs"
runc spec --bundle "$work/bundle"
jq '.process.terminal = false | .process.args = ["true"]' "$work/bundle/config.json" >"$work/c.json"
mv "$work/c.json" "$work/bundle/config.json"
cp "$BERTH" "$work/berth"

cmds=(
	-n berth "$work/berth runtime --root $work/state-berth run --bundle $work/bundle b"
	-n runc "runc --root $work/state-runc run --bundle $work/bundle r"
)
if command -v crun >/dev/null && crun --root "$work/state-crun" run --bundle "$work/bundle" probe >/dev/null 2>&1; then
	cmds+=(-n crun "crun --root $work/state-crun run --bundle $work/bundle c")
fi

hyperfine -N --warmup 3 --runs "$RUNS" --export-json "$work/result.json" "${cmds[@]}" >&2

echo
printf '%-8s %12s %12s\n' tool "median (ms)" "vs runc"
runc_median=$(jq -r '.results[] | select(.command=="runc") | .median' "$work/result.json")
jq -r '.results[] | "\(.command) \(.median)"' "$work/result.json" | while read -r name median; do
	printf '%-8s %12.1f %11.2fx\n' "$name" "$(echo "$median * 1000" | bc -l)" "$(echo "$median / $runc_median" | bc -l)"
done
berth_median=$(jq -r '.results[] | select(.command=="berth") | .median' "$work/result.json")
ratio=$(echo "$berth_median / $runc_median" | bc -l)
if (($(echo "$ratio <= 0.8" | bc -l))); then
	printf 'target berth <= 0.8x runc: MET (%.2fx)\n' "$ratio"
else
	printf 'target berth <= 0.8x runc: NOT MET (%.2fx)\n' "$ratio"
fi
