#!/usr/bin/env bash
# Build berth's test fixture images without berth (so its tests are not circular).
#
# Usage: scripts/fixtures.sh [--rebuild] [--prune] [--print-key]
#   (no option)  build the fixtures unless they are cached; print their directory
#   --rebuild    build again even if the cache entry exists (replaces it)
#   --prune      afterwards delete every other cache entry (other keys)
#   --print-key  print the cache key and exit
#
# Needs root (debootstrap) and: busybox-static debootstrap skopeo jq (scripts/deps.sh).
# Needs network access to deb.debian.org for the debian image.
#
# Output: ${BERTH_CACHE:-$HOME/.cache/berth}/fixtures/<key>/ (key = sha256 of this
# script + the busybox-static and debootstrap versions), with a symlink
# fixtures/current -> <key>. The last line of stdout is that directory; progress
# goes to stderr. In it, for busybox (docker.io/library/busybox:latest) and debian
# (docker.io/library/debian:bookworm):
#   <name>.oci.tar     OCI image layout archive, one manifest, one gzip layer;
#                      index annotations org.opencontainers.image.ref.name=<tag>,
#                      io.containerd.image.name=docker.io/library/<name>:<tag>
#   <name>.docker.tar  the same image as a docker-archive (skopeo copy)
#   <name>.rootfs.tar  the uncompressed layer tar (entries "./...", numeric owners)
#   digests.txt        "<name>.oci manifest sha256:… config sha256:…" and the
#                      same for "<name>.docker"
set -euo pipefail
shopt -s nullglob

SCRIPT=$(readlink -f "${BASH_SOURCE[0]}")
CACHE=${BERTH_CACHE:-$HOME/.cache/berth}
MIRROR=http://deb.debian.org/debian
SUITE=bookworm
PATH_ENV=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

log() { printf 'fixtures: %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

rebuild='' prune='' print_key=''
for arg in "$@"; do
	case $arg in
	--rebuild) rebuild=1 ;;
	--prune) prune=1 ;;
	--print-key) print_key=1 ;;
	-h | --help)
		sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$SCRIPT"
		exit 0
		;;
	*) die "unknown argument: $arg (see --help)" ;;
	esac
done

for cmd in dpkg-query sha256sum jq skopeo tar gzip flock debootstrap; do
	command -v "$cmd" >/dev/null || die "$cmd not found; run scripts/deps.sh"
done

versions=$(dpkg-query -W -f='${Version}' busybox-static debootstrap) ||
	die "busybox-static and debootstrap must be installed; run scripts/deps.sh"
key=$({
	cat "$SCRIPT"
	printf '%s' "$versions"
} | sha256sum | cut -d' ' -f1)
if [[ -n $print_key ]]; then
	echo "$key"
	exit 0
fi

mkdir -p "$CACHE/fixtures"
FIXTURES=$(cd "$CACHE/fixtures" && pwd -P)
dir=$FIXTURES/$key

# Point fixtures/current at $key, atomically (rename over the old link).
link_current() {
	[[ $(readlink "$FIXTURES/current" 2>/dev/null) == "$key" ]] && return 0
	local tmplink=$FIXTURES/.current.$$
	ln -sfn "$key" "$tmplink"
	mv -T "$tmplink" "$FIXTURES/current"
}

finish() {
	link_current
	if [[ -n $prune ]]; then
		local d
		for d in "$FIXTURES"/*/; do
			d=${d%/}
			[[ -L $d || ${d##*/} == "$key" ]] && continue
			log "pruning ${d##*/}"
			rm -rf --one-file-system -- "$d"
		done
	fi
	echo "$dir"
	exit 0
}

# Fast path: a cache entry only exists once it is complete.
[[ -z $rebuild && -f $dir/digests.txt ]] && finish

# One builder at a time (per cache); whoever waited re-checks the cache.
exec 9>"$FIXTURES/.lock"
if ! flock -n 9; then
	log "waiting for another fixtures.sh run to finish"
	flock 9
fi
[[ -z $rebuild && -f $dir/digests.txt ]] && finish

((EUID == 0)) || die "building needs root (debootstrap); nothing cached for key $key"

# From here on stdout is stderr, so only the final path reaches stdout.
exec 3>&1 1>&2

# --- cleanup: kill what we started, unmount, remove temp dirs -----------------

bgpid=''
tmp=''

# Unmount everything mounted at or below $1, deepest first.
unmount_under() {
	local root=$1 m
	local -a mounts=()
	while read -r _ m _; do
		printf -v m '%b' "${m//\\/\\0}" # /proc/self/mounts escapes as \ooo
		[[ $m == "$root" || $m == "$root"/* ]] && mounts+=("$m")
	done </proc/self/mounts
	((${#mounts[@]})) || return 0
	printf '%s\n' "${mounts[@]}" | sort -r | while read -r m; do
		log "unmounting $m"
		umount "$m" 2>/dev/null || umount -l "$m" || log "warning: could not unmount $m"
	done
}

# Kill processes whose root directory is inside $1 (chrooted by debootstrap).
kill_chrooted() {
	local root=$1 p r
	for p in /proc/[0-9]*; do
		r=$(readlink "$p/root" 2>/dev/null) || continue
		if [[ $r == "$root"/* ]]; then
			kill -KILL "${p#/proc/}" 2>/dev/null || true
		fi
	done
}

# Remove a build dir: stop its processes, unmount, then delete (never crossing
# into a file system still mounted there).
remove_build_dir() {
	local d=$1
	[[ -e $d ]] || return 0
	kill_chrooted "$d"
	unmount_under "$d"
	rm -rf --one-file-system -- "$d" || log "warning: could not remove $d"
}

# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
	local rc=$?
	trap - EXIT INT TERM HUP
	if [[ -n $bgpid ]] && kill -0 "$bgpid" 2>/dev/null; then
		log "stopping debootstrap (pid $bgpid)"
		kill -TERM -- "-$bgpid" 2>/dev/null || kill -TERM "$bgpid" 2>/dev/null || true
		wait "$bgpid" 2>/dev/null || true
	fi
	[[ -n $tmp ]] && remove_build_dir "$tmp"
	rm -f "$FIXTURES/.current.$$"
	((rc == 0)) || log "failed (exit $rc); nothing was cached"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# Leftovers of builds that were SIGKILLed (we hold the lock: nobody else builds).
for stale in "$FIXTURES"/.build.*; do
	log "removing stale $stale"
	remove_build_dir "$stale"
done

tmp=$(mktemp -d "$FIXTURES/.build.XXXXXX")
out=$tmp/out # becomes $dir
work=$tmp/work
mkdir -p "$out" "$work" "$tmp/tmp"
export TMPDIR=$tmp/tmp # skopeo unpacks oci-archives there

case $(dpkg --print-architecture) in
amd64) ARCH=amd64 ;;
arm64) ARCH=arm64 ;;
i386) ARCH=386 ;;
ppc64el) ARCH=ppc64le ;;
s390x) ARCH=s390x ;;
riscv64) ARCH=riscv64 ;;
*) die "unsupported architecture $(dpkg --print-architecture)" ;;
esac
CREATED=$(date -u +%Y-%m-%dT%H:%M:%SZ)
SECONDS=0

sha256() { sha256sum "$1" | cut -d' ' -f1; }
size() { stat -c %s "$1"; }

# Move $2 to <layout>/blobs/sha256/<hex>; print "sha256:<hex> <size>".
add_blob() {
	local layout=$1 f=$2 hex
	hex=$(sha256 "$f")
	mkdir -p "$layout/blobs/sha256"
	mv "$f" "$layout/blobs/sha256/$hex"
	echo "sha256:$hex $(size "$layout/blobs/sha256/$hex")"
}

# build_image NAME TAG ROOTFS CMD_JSON CREATED_BY
# Writes $out/NAME.{rootfs,oci,docker}.tar and appends to $out/digests.txt.
build_image() {
	local name=$1 tag=$2 rootfs=$3 cmd=$4 created_by=$5
	local layout=$work/$name.layout fullname=docker.io/library/$name:$tag
	local blob diff_id layer layer_size config config_size manifest manifest_size
	mkdir -p "$layout"

	log "$name: layer tar"
	# --xattrs needs the pax format; drop atime/ctime so the tar is reproducible.
	tar --sort=name --numeric-owner --xattrs --pax-option=delete=atime,delete=ctime \
		-C "$rootfs" -cf "$out/$name.rootfs.tar" .
	diff_id=sha256:$(sha256 "$out/$name.rootfs.tar")

	if command -v pigz >/dev/null; then
		pigz -n -c <"$out/$name.rootfs.tar" >"$work/layer.gz"
	else
		gzip -n -c <"$out/$name.rootfs.tar" >"$work/layer.gz"
	fi
	blob=$(add_blob "$layout" "$work/layer.gz")
	read -r layer layer_size <<<"$blob"

	jq -n -c --arg created "$CREATED" --arg arch "$ARCH" --arg path "$PATH_ENV" \
		--argjson cmd "$cmd" --arg diff_id "$diff_id" --arg by "$created_by" '{
			created: $created,
			architecture: $arch,
			os: "linux",
			config: {Env: [$path], Cmd: $cmd},
			rootfs: {type: "layers", diff_ids: [$diff_id]},
			history: [{created: $created, created_by: $by}]
		}' >"$work/config.json"
	blob=$(add_blob "$layout" "$work/config.json")
	read -r config config_size <<<"$blob"

	jq -n -c --arg config "$config" --argjson config_size "$config_size" \
		--arg layer "$layer" --argjson layer_size "$layer_size" '{
			schemaVersion: 2,
			mediaType: "application/vnd.oci.image.manifest.v1+json",
			config: {mediaType: "application/vnd.oci.image.config.v1+json",
				digest: $config, size: $config_size},
			layers: [{mediaType: "application/vnd.oci.image.layer.v1.tar+gzip",
				digest: $layer, size: $layer_size}]
		}' >"$work/manifest.json"
	blob=$(add_blob "$layout" "$work/manifest.json")
	read -r manifest manifest_size <<<"$blob"

	jq -n -c --arg manifest "$manifest" --argjson size "$manifest_size" \
		--arg arch "$ARCH" --arg tag "$tag" --arg fullname "$fullname" '{
			schemaVersion: 2,
			mediaType: "application/vnd.oci.image.index.v1+json",
			manifests: [{
				mediaType: "application/vnd.oci.image.manifest.v1+json",
				digest: $manifest, size: $size,
				platform: {architecture: $arch, os: "linux"},
				annotations: {
					"org.opencontainers.image.ref.name": $tag,
					"io.containerd.image.name": $fullname
				}
			}]
		}' >"$layout/index.json"
	echo '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"

	log "$name: $name.oci.tar"
	tar --sort=name --numeric-owner --owner=0 --group=0 -C "$layout" \
		-cf "$out/$name.oci.tar" oci-layout index.json blobs

	# Check: skopeo must read it and see exactly our manifest and config.
	local inspected
	inspected=$(skopeo --insecure-policy inspect "oci-archive:$out/$name.oci.tar") ||
		die "$name: skopeo inspect oci-archive failed"
	[[ $(jq -r .Digest <<<"$inspected") == "$manifest" ]] ||
		die "$name: skopeo sees manifest $(jq -r .Digest <<<"$inspected"), expected $manifest"
	[[ $(skopeo --insecure-policy inspect --raw "oci-archive:$out/$name.oci.tar" |
		jq -r .config.digest) == "$config" ]] || die "$name: config digest mismatch"

	log "$name: $name.docker.tar"
	skopeo --insecure-policy copy --quiet "oci-archive:$out/$name.oci.tar" \
		"docker-archive:$out/$name.docker.tar:$fullname" ||
		die "$name: skopeo copy to docker-archive failed"
	local docker_manifest docker_config
	docker_manifest=$(skopeo --insecure-policy inspect "docker-archive:$out/$name.docker.tar" |
		jq -r .Digest) || die "$name: skopeo inspect docker-archive failed"
	docker_config=$(skopeo --insecure-policy inspect --raw "docker-archive:$out/$name.docker.tar" |
		jq -r .config.digest) || die "$name: skopeo inspect --raw docker-archive failed"

	printf '%s.oci manifest %s config %s\n' "$name" "$manifest" "$config" >>"$out/digests.txt"
	printf '%s.docker manifest %s config %s\n' "$name" "$docker_manifest" "$docker_config" \
		>>"$out/digests.txt"
	rm -rf "$layout"
	log "$name: done (${SECONDS}s so far)"
}

# --- busybox ----------------------------------------------------------------

build_busybox() {
	local r=$work/busybox.rootfs bb p n=0
	bb=$(dpkg -L busybox-static | grep -m1 -E '/s?bin/busybox$') ||
		die "no busybox binary in busybox-static"
	log "busybox: rootfs from $bb"
	mkdir -p "$r"/{bin,sbin,usr/bin,usr/sbin,etc,root,home,tmp,var,proc,sys,dev}
	chmod 0700 "$r/root"
	chmod 1777 "$r/tmp"
	install -m 0755 "$bb" "$r/bin/busybox"
	# Applets as hard links to bin/busybox (so the layer has hard-link entries).
	# Skip entries not in a directory (linuxrc: an initrd hook, not a command).
	while read -r p; do
		[[ $p == bin/busybox || $p != */* ]] && continue
		mkdir -p "$r/${p%/*}"
		ln "$r/bin/busybox" "$r/$p"
		n=$((n + 1))
	done < <("$r/bin/busybox" --list-full)
	((n > 100)) || die "busybox --list-full gave only $n applets"
	printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' 'nobody:x:65534:65534:nobody:/home:/bin/false' \
		>"$r/etc/passwd"
	printf '%s\n' 'root:x:0:' 'nobody:x:65534:' >"$r/etc/group"
	chmod 0644 "$r/etc/passwd" "$r/etc/group"
	log "busybox: $n applet links"
	build_image busybox latest "$r" '["sh"]' \
		"busybox-static $(dpkg-query -W -f='${Version}' busybox-static) /bin/busybox, applets hard-linked (berth scripts/fixtures.sh)"
}

# --- debian:bookworm ----------------------------------------------------------

build_debian() {
	local r=$work/debian.rootfs d
	local dlog=$tmp/debootstrap.log
	log "debian: debootstrap --variant=minbase $SUITE $MIRROR (a few minutes; log: $dlog)"
	# Own process group, in the background: a signal to us reaches cleanup at
	# once (bash runs traps only between foreground commands), which stops it.
	setsid -w debootstrap --variant=minbase "$SUITE" "$r" "$MIRROR" >"$dlog" 2>&1 &
	bgpid=$!
	if ! wait "$bgpid"; then
		bgpid=''
		tail -n 30 "$dlog" >&2
		die "debootstrap failed"
	fi
	bgpid=''
	kill_chrooted "$r"
	unmount_under "$r" # debootstrap may leave /proc or /sys mounted
	[[ -d $r/etc/apt ]] || die "debootstrap produced no rootfs"

	rm -f "$r"/var/cache/apt/archives/*.deb
	rm -rf "$r"/var/lib/apt/lists/*
	# Like the official image: no device nodes (debootstrap mknods them; an
	# unprivileged extractor could not), empty /proc and /sys, and nothing of
	# the build host's /etc/hostname or /etc/resolv.conf.
	for d in dev proc sys; do
		find "$r/$d" -xdev -mindepth 1 -delete
	done
	rm -f "$r/etc/hostname"
	if [[ -e $r/etc/resolv.conf ]]; then
		: >"$r/etc/resolv.conf"
		chmod 0644 "$r/etc/resolv.conf"
	fi
	log "debian: rootfs $(du -sh "$r" | cut -f1) (${SECONDS}s so far)"
	build_image debian "$SUITE" "$r" '["bash"]' \
		"debootstrap --variant=minbase $SUITE $MIRROR (debootstrap $(dpkg-query -W -f='${Version}' debootstrap); berth scripts/fixtures.sh)"
}

log "building fixtures $key in $tmp"
build_busybox
build_debian

[[ -e $dir ]] && rm -rf --one-file-system -- "$dir" # --rebuild
mv -T "$out" "$dir"
log "built in ${SECONDS}s: $dir"
cat "$dir/digests.txt" >&2
exec 1>&3 3>&-
finish
