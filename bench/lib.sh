# shellcheck shell=bash
# What the benchmark scripts share: logging, finding and unmounting what a run left
# mounted, podman and dockerd with all of their state in one directory, and a fresh
# file system for the stores. Sourced by bench/*.sh; defines functions only.
#
# dockerd_* use $DOCKER and $DOCKERD (client and daemon commands) from the caller.

log() { printf 'bench: %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

# Mount points at or below $1, deepest first.
mounts_under() {
	awk -v d="$1" '$5 == d || index($5, d "/") == 1 { print length($5), $5 }' /proc/self/mountinfo |
		sort -rn | cut -d' ' -f2-
}

# Unmounts everything at or below $1.
unmount_under() {
	local m
	while read -r m; do
		[[ -n $m ]] && { umount -R "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; }
	done < <(mounts_under "$1")
}

# podman with all of its state under $1 (no systemd, no events, no cgroup manager).
podman_in() {
	local d=$1
	shift
	podman --root "$d/root" --runroot "$d/run" --tmpdir "$d/libpod" \
		--storage-driver overlay --cgroup-manager cgroupfs --events-backend none "$@"
}

# Starts Debian's dockerd with everything under $1: data root $1/docker, exec root
# $1/dexec, socket unix://$1/docker.sock, pid file $1/docker.pid, log $1/dockerd.log;
# no bridge, no iptables rules, no userland proxy, so it touches no host network set-up.
# Extra arguments go to dockerd. It is detached (setsid): it may be started from a
# hyperfine --prepare shell and must outlive it. Returns 1 (with the log's tail) if it
# is not there or does not answer within 60 s.
dockerd_start() {
	local w=$1 i
	shift
	command -v "$DOCKERD" >/dev/null || {
		log "docker: $DOCKERD not found (scripts/deps.sh --bench installs docker.io)"
		return 1
	}
	command -v "$DOCKER" >/dev/null || {
		log "docker: client $DOCKER not found"
		return 1
	}
	mkdir -p "$w/docker" "$w/dexec"
	echo '{}' >"$w/daemon.json"
	setsid nohup "$DOCKERD" --config-file "$w/daemon.json" --data-root "$w/docker" \
		--exec-root "$w/dexec" --host "unix://$w/docker.sock" --pidfile "$w/docker.pid" \
		--bridge none --iptables=false --ip6tables=false --ip-masq=false \
		--userland-proxy=false "$@" >>"$w/dockerd.log" 2>&1 </dev/null &
	for ((i = 0; i < 600; i++)); do
		"$DOCKER" -H "unix://$w/docker.sock" version >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	log "docker: dockerd did not answer on unix://$w/docker.sock within 60 s; its last lines:"
	tail -n 15 "$w/dockerd.log" | sed 's/^/    /' >&2
	dockerd_stop "$w"
	return 1
}

# The PID of the dockerd started under $1 (empty if none).
dockerd_pid() {
	[[ -f $1/docker.pid ]] && cat "$1/docker.pid"
	return 0
}

# Stops the dockerd started under $1 (its containers first) and waits for it and its
# containerd to be gone.
dockerd_stop() {
	local w=$1 pid i ids
	pid=$(dockerd_pid "$w")
	[[ -n $pid ]] || return 0
	if kill -0 "$pid" 2>/dev/null; then
		ids=$("$DOCKER" -H "unix://$w/docker.sock" ps -aq 2>/dev/null || true)
		# shellcheck disable=SC2086 # one argument per ID
		[[ -z $ids ]] || "$DOCKER" -H "unix://$w/docker.sock" rm -f $ids >/dev/null 2>&1 || true
		kill -TERM "$pid" 2>/dev/null || true
		for ((i = 0; i < 300; i++)); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$pid" 2>/dev/null || true
	fi
	rm -f "$w/docker.pid"
	# Its managed containerd keeps a pid file in the exec root.
	if [[ -f $w/dexec/containerd/containerd.pid ]]; then
		pid=$(<"$w/dexec/containerd/containerd.pid")
		for ((i = 0; i < 100; i++)); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$pid" 2>/dev/null || true
	fi
}

# Makes a fresh ext4 file system (mkfs defaults, in a 64 GiB sparse file under $1,
# loop-mounted at $1/mnt) and prints the mount point. Stores made on it do not depend
# on what the host file system has been through (see bench/load.sh, --fresh); undo
# with fresh_fs_remove.
fresh_fs() {
	local base=$1
	command -v mkfs.ext4 >/dev/null || die "mkfs.ext4 not found (e2fsprogs)"
	truncate -s 64G "$base/fs.img"
	mkfs.ext4 -q -F "$base/fs.img"
	mkdir -p "$base/mnt"
	mount -o loop "$base/fs.img" "$base/mnt"
	echo "$base/mnt"
}

# Unmounts what fresh_fs made under $1 (the image file goes with $1).
fresh_fs_remove() {
	unmount_under "$1/mnt"
	umount "$1/mnt" 2>/dev/null || umount -l "$1/mnt" 2>/dev/null || true
}
