#!/usr/bin/env bash
# Installs berth on a fresh Debian 12 machine (as root) and runs the main job.
#
#   1. the Debian packages berth and its tests need (scripts/deps.sh)
#   2. the release binaries, installed as /usr/local/bin/berth and berth-shim
#   3. the fixture images (scripts/fixtures.sh, cached under ~/.cache/berth)
#   4. for `--isolation vm`: the guest kernel (scripts/kernel.sh, cached under
#      ~/.cache/berth/kernel) and the static guest agent (scripts/agent.sh),
#      installed in /usr/local/lib/berth
#   5. the main job: load the fixture images into the default store
#      (/var/lib/berth, or $BERTH_ROOT) and show them and the host's report.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/deps.sh
cargo build --release --locked -p berth  # berth and berth-shim
install -m 0755 target/release/berth /usr/local/bin/berth
# What detached containers' monitors exec into; berth finds it next to itself.
install -m 0755 target/release/berth-shim /usr/local/bin/berth-shim
# The runc-compatible OCI runtime is the same binary under another name.
ln -sf berth /usr/local/bin/berth-runtime
fixtures=$(bash scripts/fixtures.sh | tail -n 1)
kernel=$(bash scripts/kernel.sh | tail -n 1)
agent=$(bash scripts/agent.sh | tail -n 1)
install -d /usr/local/lib/berth
install -m 0644 "$kernel" /usr/local/lib/berth/vmlinux
install -m 0644 "$(dirname "$kernel")/release" /usr/local/lib/berth/release
install -m 0755 "$agent" /usr/local/lib/berth/berth-agent

berth load -i "$fixtures/busybox.oci.tar"
berth load -i "$fixtures/debian.oci.tar"
berth images
berth info
berth run --rm busybox uname -r
berth run --rm --isolation vm busybox uname -r
