#!/usr/bin/env bash
# Install the Debian packages berth's development, tests and fixtures need.
#
# Usage: scripts/deps.sh [--bench]  (as root, or with sudo available;
#        --bench adds what only the benchmarks need)
#
# Idempotent: if every package is already installed it does nothing (no
# `apt-get update`), so re-runs take well under a second.
set -euo pipefail

PACKAGES=(
	busybox-static # static /bin/busybox: the busybox fixture image
	debootstrap    # the debian:bookworm fixture image
	skopeo         # oci-archive <-> docker-archive, archive checks
	podman         # reference engine for behaviour comparisons
	umoci          # reference OCI image tool
	buildah        # build tests: the same Dockerfile built by buildah gives the same tree and config
	docker-registry # local registry for push/pull tests
	openssl         # registry tests: test CA, server certs, token-signing key
	apache2-utils   # registry tests: htpasswd (bcrypt) for basic auth
	zstd           # zstd-compressed layers
	jq             # JSON in scripts
	uidmap         # newuidmap/newgidmap for rootless/userns tests
	runc           # reference OCI runtime
	hyperfine      # benchmarks (bench/)
	tmux           # tests driving `run -it` through a real terminal
	containernetworking-plugins # CNI plugins berth's networking runs (bridge, host-local, portmap, loopback)
	iptables       # used by the bridge (ipMasq) and portmap plugins
	iproute2       # ip: berth creates and removes network bridges with it
	ca-certificates
	linux-source-6.1 # source of the microVM guest kernel (scripts/kernel.sh)
	bc             # kernel build (timeconst); also bench/runtime.sh ratios
	flex           # kernel build: kconfig lexer
	bison          # kernel build: kconfig parser
	libelf-dev     # kernel build: objtool
	libssl-dev     # kernel build: sign-file/extract-cert host tools
	make           # kernel build
	gcc            # kernel build
	xz-utils       # unpacks /usr/src/linux-source-6.1.tar.xz
	qemu-system-x86 # VM backend: qemu-system-x86_64 -M microvm
	qemu-utils     # VM backend: qemu-img for disk images
	erofs-utils    # VM backend: mkfs.erofs for read-only image layers
	e2fsprogs      # VM backend: mkfs.ext4 for writable disks
)

# Only the benchmarks (bench/) need these: `scripts/deps.sh --bench`.
BENCH_PACKAGES=(
	docker.io  # dockerd + containerd, the peer of bench/run.sh, density.sh, pull.sh and build.sh
	linux-perf # bench/run.sh --phases
	iperf3     # bench/network.sh: TCP throughput over published ports
)
if [[ ${1:-} == --bench ]]; then
	PACKAGES+=("${BENCH_PACKAGES[@]}")
fi

log() { printf 'deps: %s\n' "$*" >&2; }

# Packages whose status is not "install ok installed".
missing=()
for pkg in "${PACKAGES[@]}"; do
	status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
	if [[ $status != "install ok installed" ]]; then
		missing+=("$pkg")
	fi
done

if ((${#missing[@]} == 0)); then
	log "all ${#PACKAGES[@]} packages already installed"
	exit 0
fi

SUDO=()
if ((EUID != 0)); then
	command -v sudo >/dev/null || {
		log "not root and no sudo; install as root: ${missing[*]}"
		exit 1
	}
	SUDO=(sudo)
fi

APT_OPTS=(-y -qq -o Dpkg::Use-Pty=0 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)

# apt/dpkg/debconf chatter goes to a log that is shown only on failure.
aptlog=$(mktemp -t berth-deps.XXXXXX.log)
trap 'rm -f "$aptlog"' EXIT
run_apt() {
	if ! "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "$@" >>"$aptlog" 2>&1; then
		log "apt-get $1 failed; last lines of its output:"
		tail -n 40 "$aptlog" >&2
		exit 1
	fi
}

log "installing: ${missing[*]}"
run_apt update -qq
# QEMU's packages must come from one build: a machine may already carry a newer
# qemu-utils (e.g. from bookworm-backports) that cannot live beside Debian's
# qemu-system-x86, and apt then gives up ("held broken packages") rather than
# replace a package it was asked to keep. Ask for both at qemu-system-x86's
# candidate version, downgrading qemu-utils if need be.
qemu_version=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ { print $2 }')
if [[ -n $qemu_version && $qemu_version != "(none)" ]]; then
	for i in "${!PACKAGES[@]}"; do
		case ${PACKAGES[$i]} in
		qemu-system-x86 | qemu-utils) PACKAGES[i]="${PACKAGES[$i]}=$qemu_version" ;;
		esac
	done
fi
# Install the whole list (not just the missing ones) so apt also finishes any
# half-configured package; already-installed ones are no-ops.
run_apt install "${APT_OPTS[@]}" --allow-downgrades "${PACKAGES[@]}"
log "done"
