#!/usr/bin/env bash
# MicroVM benchmark: `berth run --isolation vm --rm busybox true` end to end vs
# a bare QEMU boot of the same kernel with the same machine options and an
# equivalent initramfs, and vs the same workload as a container; then memory
# and disk per instance, container vs VM.
#
# Usage: bench/vm.sh
#
# Timed commands (one hyperfine invocation, -N: no shell in between):
#   bare       qemu-system-x86_64 <berth's own -M/-cpu/-smp/-m/-append, read off a
#              running berth VM> -kernel <the same vmlinux> -initrd bare.cpio
#              where bare.cpio's /init is a static C program that forks, runs
#              `true` (itself, exiting 0), waits and reboots: what any VM runtime
#              needs at least, without berth's disks, agent or protocol
#   vm         berth --root <scratch> run --rm --network none --isolation vm busybox true
#              (resumed from the saved guest its shape's first start made: warm-up
#              runs make it, so the timed runs are what every later start costs)
#   vm-cold    the same with BERTH_VM_SNAPSHOT=0: booted, as before warm starts
#   container  berth --root <scratch> run --rm --network none busybox true
#              (no network for either: the bare VM has none)
# Memory (one instance each, idle `sleep`, after it is up): the hypervisor's RSS
# and PSS (smaps_rollup) for berth's VM and the bare VM, the monitor's for both
# isolations. Disk: what one more instance adds (its container directory, du),
# and what all instances of the image share (snapshot / erofs export).
#
# Target (issue 7): berth's VM start median <= 1.10x the bare boot's.
# The accelerator is what berth picks (`berth info`); set BERTH_VM_ACCEL=kvm|tcg
# to force one. Environment: RUNS (default 10), WARMUP (default 2), BERTH
# (default target/release/berth), BERTH_AGENT/BERTH_KERNEL (as for berth),
# BENCH_TMP (default /var/tmp), BERTH_FIXTURES. Everything it creates is
# removed on exit.
set -euo pipefail

SELF=$(readlink -f "${BASH_SOURCE[0]}")
ROOT=$(cd "$(dirname "$SELF")/.." && pwd)
# shellcheck source=bench/lib.sh
. "$(dirname "$SELF")/lib.sh"

[[ $# -eq 0 ]] || die "no arguments expected (see the header of $SELF)"
RUNS=${RUNS:-10}
WARMUP=${WARMUP:-2}
for cmd in hyperfine jq gcc qemu-system-x86_64 python3; do
	command -v "$cmd" >/dev/null || die "$cmd not found; run scripts/deps.sh --bench"
done

W=$(mktemp -d "${BENCH_TMP:-/var/tmp}/berth-vm.XXXXXX")
BARE_PID=
cleanup() {
	[[ -n $BARE_PID ]] && kill "$BARE_PID" 2>/dev/null
	if [[ -x $W/berth.bin ]]; then
		"$W/berth.bin" --root "$W/berth" rm -f bench-vm bench-ctr >/dev/null 2>&1 || true
	fi
	unmount_under "$W"
	rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

BERTH=${BERTH:-$ROOT/target/release/berth}
if [[ ! -x $BERTH ]]; then
	log "building $BERTH (cargo build --release -p berth)"
	(cd "$ROOT" && cargo build --release -p berth) >&2
fi
cp "$(readlink -f "$BERTH")" "$W/berth.bin"
[[ -x $(dirname "$(readlink -f "$BERTH")")/berth-shim ]] &&
	cp "$(dirname "$(readlink -f "$BERTH")")/berth-shim" "$W/berth-shim"
BERTH=$W/berth.bin
export BERTH_AGENT=${BERTH_AGENT:-$(bash "$ROOT/scripts/agent.sh" | tail -n 1)}
export BERTH_KERNEL=${BERTH_KERNEL:-$(bash "$ROOT/scripts/kernel.sh" | tail -n 1)}
FIX=${BERTH_FIXTURES:-$(bash "$ROOT/scripts/fixtures.sh" | tail -n 1)}
BR=$W/berth
B=("$BERTH" --root "$BR")
"${B[@]}" load -q -i "$FIX/busybox.oci.tar" >/dev/null
# The first VM of a shape boots and saves the guest the others resume.
t0=$(date +%s%N)
"${B[@]}" run --rm --network none --isolation vm busybox true || die "berth run --isolation vm failed"
first_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
"${B[@]}" run --rm --network none busybox true || die "berth run failed"
hv=$("${B[@]}" info --format json | jq -r '.vm.hypervisor // .vm.hypervisor_error')
log "berth: $BERTH; hypervisor: $hv; kernel: $BERTH_KERNEL"

# --- the bare VM: berth's machine options, an init that only runs `true` -------

"${B[@]}" run -d --network none --isolation vm --name bench-vm busybox sleep 1000 >/dev/null
"${B[@]}" run -d --network none --name bench-ctr busybox sleep 1000 >/dev/null
qpid=$("${B[@]}" inspect --format '{{.State.Pid}}' bench-vm)
# -M, -cpu, -smp, -m and -append exactly as berth passed them.
mapfile -t QARGS < <(python3 - "$qpid" <<'EOF'
import sys
a = open(f"/proc/{sys.argv[1]}/cmdline", "rb").read().split(b"\0")[:-1]
keep = {b"-M", b"-cpu", b"-smp", b"-m", b"-append"}
for i, x in enumerate(a):
    if x in keep:
        print(x.decode()); print(a[i + 1].decode())
EOF
)
cat >"$W/init.c" <<'EOF'
#include <stdlib.h>
#include <string.h>
#include <sys/reboot.h>
#include <sys/wait.h>
#include <unistd.h>
int main(int argc, char **argv) {
	if (argc > 1 && strcmp(argv[1], "true") == 0) return 0;
#ifdef IDLE
	for (;;) pause();
#endif
	pid_t p = fork();
	if (p == 0) { execl("/init", "/init", "true", (char *)0); _exit(127); }
	int st; waitpid(p, &st, 0);
	reboot(RB_AUTOBOOT);
	return 0;
}
EOF
gcc -O2 -static -o "$W/init-true" "$W/init.c"
gcc -O2 -static -DIDLE -o "$W/init-idle" "$W/init.c"
mkcpio() {
	python3 - "$1" "$2" <<'EOF'
import sys
def entry(name, mode, data=b"", rdev=(0, 0), ino=[0]):
    ino[0] += 1
    f = [ino[0], mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(name) + 1, 0]
    h = b"070701" + b"".join(b"%08x" % x for x in f) + name.encode() + b"\0"
    h += b"\0" * (-len(h) % 4)
    return h + data + b"\0" * (-len(data) % 4)
out = entry("dev", 0o40755) + entry("dev/console", 0o20600, rdev=(5, 1))
out += entry("init", 0o100755, open(sys.argv[1], "rb").read()) + entry("TRAILER!!!", 0)
open(sys.argv[2], "wb").write(out)
EOF
}
mkcpio "$W/init-true" "$W/bare-true.cpio"
mkcpio "$W/init-idle" "$W/bare-idle.cpio"
BARE=(qemu-system-x86_64 "${QARGS[@]}" -nodefaults -no-user-config -display none -no-reboot
	-serial "file:$W/bare-console.log" -kernel "$BERTH_KERNEL")
"${BARE[@]}" -initrd "$W/bare-true.cpio" || die "the bare VM did not boot"

# --- memory and disk per instance ---------------------------------------------

kib() { awk -v k="$2" '$1 == k":" { print $2 }' "/proc/$1/smaps_rollup"; }
"${BARE[@]}" -initrd "$W/bare-idle.cpio" &
BARE_PID=$!
sleep 5 # booted and idle (it never answers: nothing to wait on)
vm_mon=$(jq -r .state.monitor_pid "$BR/containers/$("${B[@]}" inspect --format '{{.Id}}' bench-vm)/record.json")
ctr_mon=$(jq -r .state.monitor_pid "$BR/containers/$("${B[@]}" inspect --format '{{.Id}}' bench-ctr)/record.json")
vm_id=$("${B[@]}" inspect --format '{{.Id}}' bench-vm)
ctr_id=$("${B[@]}" inspect --format '{{.Id}}' bench-ctr)
du_k() { du -sk "$1" | cut -f1; }
{
	echo "| per instance (busybox sleep, 256 MiB guest) | hypervisor RSS | hypervisor PSS | monitor RSS | disk added | disk shared by all instances |"
	echo "| --- | ---: | ---: | ---: | ---: | ---: |"
	printf '| berth --isolation vm | %s KiB | %s KiB | %s KiB | %s KiB | %s KiB (erofs export) + %s KiB (ext4 template, sparse) + %s KiB (saved guest) |\n' \
		"$(kib "$qpid" Rss)" "$(kib "$qpid" Pss)" "$(kib "$vm_mon" Rss)" "$(du_k "$BR/containers/$vm_id")" \
		"$(du_k "$BR/vm/rootfs")" "$(du -k "$BR"/vm/writable-*.ext4 | cut -f1)" "$(du_k "$BR/vm/snapshots")"
	printf '| bare qemu microvm | %s KiB | %s KiB | – | – | – |\n' "$(kib "$BARE_PID" Rss)" "$(kib "$BARE_PID" Pss)"
	printf '| berth --isolation container | – | – | %s KiB | %s KiB | %s KiB (snapshot) |\n' \
		"$(kib "$ctr_mon" Rss)" "$(du_k "$BR/containers/$ctr_id")" "$(du_k "$BR/image/snapshots" 2>/dev/null || echo '?')"
} >"$W/memory.md"
kill "$BARE_PID"
wait "$BARE_PID" 2>/dev/null || true
BARE_PID=
"${B[@]}" rm -f bench-vm bench-ctr >/dev/null

# --- start time ---------------------------------------------------------------

q() { printf '%q ' "$@"; }
hyperfine -N --runs "$RUNS" --warmup "$WARMUP" --export-json "$W/start.json" \
	-n bare "$(q "${BARE[@]}" -initrd "$W/bare-true.cpio")" \
	-n vm "$(q "${B[@]}" run --rm --network none --isolation vm busybox true)" \
	-n vm-cold "$(q env BERTH_VM_SNAPSHOT=0 "${B[@]}" run --rm --network none --isolation vm busybox true)" \
	-n container "$(q "${B[@]}" run --rm --network none busybox true)" >&2

med() { jq -r --arg n "$1" '.results[] | select(.command == $n) | .median' "$W/start.json"; }
bare=$(med bare)
vm=$(med vm)
cold=$(med vm-cold)
ctr=$(med container)
ratio=$(awk -v a="$vm" -v b="$bare" 'BEGIN { printf "%.3f", a / b }')
echo
echo "accelerator: $hv"
echo
echo "| start to exit (median of $RUNS) | time | ratio to bare |"
echo "| --- | ---: | ---: |"
awk -v b="$bare" -v v="$vm" -v k="$cold" -v c="$ctr" 'BEGIN {
	printf "| bare qemu microvm boot (same kernel, options) | %.1f ms | 1.00x |\n", b * 1000
	printf "| berth run --isolation vm --rm busybox true (resumed from its saved guest, the default) | %.1f ms | %.2fx |\n", v * 1000, v / b
	printf "| the same with BERTH_VM_SNAPSHOT=0 (booted) | %.1f ms | %.2fx |\n", k * 1000, k / b
	printf "| berth run --rm busybox true (container) | %.1f ms | %.3fx |\n", c * 1000, c / b
}'
echo "(the first start of this shape, which booted and saved the guest: $first_ms ms, once)"
echo
cat "$W/memory.md"
echo
if awk -v r="$ratio" 'BEGIN { exit !(r <= 1.10) }'; then
	echo "target (vm <= 1.10x bare): met ($ratio)"
else
	echo "target (vm <= 1.10x bare): NOT met ($ratio)"
fi
