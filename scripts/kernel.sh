#!/usr/bin/env bash
# Build the guest kernel for berth's microVMs from Debian's linux-source-6.1.
#
# Usage: scripts/kernel.sh
#
# tinyconfig + scripts/guest-kernel.config -> an uncompressed x86_64 vmlinux
# with a PVH entry point, which `qemu-system-x86_64 -M microvm -kernel vmlinux`
# boots directly. The result is cached by content:
#
#   $BERTH_CACHE/kernel/<key>/vmlinux   the kernel
#   $BERTH_CACHE/kernel/<key>/config    its final .config
#   $BERTH_CACHE/kernel/<key>/release   its release string (uname -r)
#   $BERTH_CACHE/kernel/current -> <key>
#
# <key> is the first 16 hex digits of the sha256 of the linux-source package
# version, the fragment and this script, so editing either rebuilds. If
# <key>/vmlinux exists nothing is built. BERTH_CACHE defaults to ~/.cache/berth.
# The build runs in a scratch directory next to the cache and is renamed into
# place only when complete, so an interrupted build never leaves a half kernel.
#
# Progress goes to stderr; the last line on stdout is the vmlinux path.
# Needs: linux-source-6.1 bc flex bison libelf-dev libssl-dev make gcc xz-utils
# (scripts/deps.sh installs them).
set -euo pipefail

SRC_PKG=linux-source-6.1
SRC_TARBALL=/usr/src/linux-source-6.1.tar.xz

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
self="$here/$(basename "${BASH_SOURCE[0]}")"
fragment="$here/guest-kernel.config"

log() { printf 'kernel: %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

[[ $(uname -m) == x86_64 ]] || die "only x86_64 hosts are supported (this is $(uname -m))"
[[ -f $fragment ]] || die "missing config fragment $fragment"

version=$(dpkg-query -W -f='${Version}' "$SRC_PKG" 2>/dev/null) ||
	die "$SRC_PKG is not installed; run scripts/deps.sh"
[[ -n $version && -f $SRC_TARBALL ]] ||
	die "$SRC_TARBALL is missing; run scripts/deps.sh"

key=$({
	printf '%s\n' "$SRC_PKG $version"
	cat "$fragment" "$self"
} | sha256sum | cut -c1-16)

cache=${BERTH_CACHE:-$HOME/.cache/berth}
kdir="$cache/kernel"
dest="$kdir/$key"
mkdir -p "$kdir"

# Point `current` at <key>, atomically (rename over the old link).
set_current() {
	ln -sfn "$key" "$kdir/.current.$$"
	mv -fT "$kdir/.current.$$" "$kdir/current"
}

if [[ -f $dest/vmlinux ]]; then
	set_current
	log "cached: $(cat "$dest/release" 2>/dev/null || echo '?') ($key)"
	printf '%s\n' "$dest/vmlinux"
	exit 0
fi

for tool in make gcc flex bison bc xz tar perl readelf flock; do
	command -v "$tool" >/dev/null || die "$tool not found; run scripts/deps.sh"
done
for hdr in /usr/include/gelf.h /usr/include/openssl/ssl.h; do
	[[ -f $hdr ]] || die "$hdr not found (libelf-dev/libssl-dev); run scripts/deps.sh"
done

# One build at a time per cache; a second caller waits and then finds it done.
exec 9>"$kdir/.lock"
if ! flock -n 9; then
	log "another build is running; waiting for it"
	flock 9
fi
if [[ -f $dest/vmlinux ]]; then
	set_current
	log "built meanwhile: $(cat "$dest/release" 2>/dev/null || echo '?') ($key)"
	printf '%s\n' "$dest/vmlinux"
	exit 0
fi

# Scratch space on the cache's filesystem, so the final rename is atomic.
# Leftovers of killed builds (.build.*) are removed here, under the lock.
rm -rf "$kdir"/.build.*
work=$(mktemp -d "$kdir/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT
src="$work/src"
out="$work/out"
buildlog="$work/build.log"
mkdir -p "$src" "$out"

# Run a build step with its chatter in the log; show the log's tail on failure.
step() {
	local what=$1
	shift
	if ! "$@" >>"$buildlog" 2>&1; then
		log "$what failed; last lines of the build log:"
		tail -n 40 "$buildlog" >&2
		die "$what failed"
	fi
}

start=$SECONDS
log "building $SRC_PKG $version as $key (in $work)"
log "unpacking $SRC_TARBALL"
step "unpacking the source" tar -xf "$SRC_TARBALL" -C "$src" --strip-components=1

# Reproducible-ish build metadata: no host name, user or wall clock in it.
export ARCH=x86_64 KBUILD_BUILD_USER=berth KBUILD_BUILD_HOST=berth
export KBUILD_BUILD_TIMESTAMP="linux-source $version"
MAKE=(make -C "$src" -j"$(nproc)")

log "configuring: tinyconfig + $(basename "$fragment")"
step "make tinyconfig" "${MAKE[@]}" tinyconfig
# merge_config.sh -m only merges; olddefconfig then resolves the dependencies.
step "merging the fragment" \
	env -C "$src" ./scripts/kconfig/merge_config.sh -m .config "$fragment"
step "make olddefconfig" "${MAKE[@]}" olddefconfig

# Every line of the fragment must have survived: a symbol whose dependencies
# are missing is silently dropped by kconfig, which would boot a kernel that
# lacks what we asked for. "is not set" may also mean "not visible at all".
bad=()
while IFS= read -r line; do
	if [[ $line =~ ^(CONFIG_[A-Za-z0-9_]+)=(.*)$ ]]; then
		grep -qxF -- "$line" "$src/.config" || {
			got=$(grep -E "^(# )?${BASH_REMATCH[1]}[= ]" "$src/.config" || echo "${BASH_REMATCH[1]} absent")
			bad+=("wanted $line, got: $got")
		}
	elif [[ $line =~ ^#\ (CONFIG_[A-Za-z0-9_]+)\ is\ not\ set$ ]]; then
		if grep -qE "^${BASH_REMATCH[1]}=" "$src/.config"; then
			bad+=("wanted $line, got: $(grep -E "^${BASH_REMATCH[1]}=" "$src/.config")")
		fi
	fi
done <"$fragment"
if ((${#bad[@]})); then
	printf 'kernel:   %s\n' "${bad[@]}" >&2
	die "the config fragment did not apply (missing dependencies?)"
fi

log "compiling vmlinux with $(nproc) jobs (log: $buildlog)"
step "make vmlinux" "${MAKE[@]}" vmlinux
release=$("${MAKE[@]}" -s kernelrelease 2>>"$buildlog") || die "make kernelrelease failed"

# Sanity: the PVH entry point is an ELF note of owner "Xen", type 18
# (XEN_ELFNOTE_PHYS32_ENTRY); without it QEMU refuses to boot vmlinux.
readelf -n "$src/vmlinux" 2>>"$buildlog" | grep -qE 'Xen .*(0x00000012|PHYS32_ENTRY)' ||
	die "vmlinux has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY); is CONFIG_PVH set?"

cp "$src/vmlinux" "$out/vmlinux"
cp "$src/.config" "$out/config"
printf '%s\n' "$release" >"$out/release"
sync -f "$out/vmlinux" 2>/dev/null || true
mv -T "$out" "$dest" || die "could not move the kernel into $dest"
set_current

size=$(stat -c %s "$dest/vmlinux")
log "built $release in $((SECONDS - start))s: $dest/vmlinux ($((size / 1024)) KiB)"
printf '%s\n' "$dest/vmlinux"
