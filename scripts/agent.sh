#!/usr/bin/env bash
# Builds berth-agent, PID 1 of berth's microVMs, as a fully static binary
# (glibc's libc.a: the guest's initramfs holds nothing else) and prints its
# path as the last line.
#
# The flag is given with an explicit --target so that it reaches only the
# agent and its dependencies, not build scripts or proc macros, and so the
# static binary lands apart from the workspace's ordinary (dynamic) build.
set -euo pipefail
cd "$(dirname "$0")/.."

target=x86_64-unknown-linux-gnu
# Stripped: the initramfs is unpacked at every boot (a third of the size).
RUSTFLAGS="-C target-feature=+crt-static -C strip=symbols" \
	cargo build --locked --release -p berth-agent --bin berth-agent --target "$target" >&2
echo "$PWD/target/$target/release/berth-agent"
