#!/usr/bin/env bash
# Runs berth's whole test suite on a Debian 12 machine, as root. Installs what
# the tests need first (idempotent, fast when already there), then checks
# formatting and lints, then runs every test. Any failure fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/deps.sh
fixtures=$(bash scripts/fixtures.sh | tail -n 1)
export BERTH_FIXTURES="$fixtures"
# The microVM tests boot the guest kernel (built once, cached under
# ~/.cache/berth/kernel) with the static agent.
BERTH_KERNEL=$(bash scripts/kernel.sh | tail -n 1)
BERTH_AGENT=$(bash scripts/agent.sh | tail -n 1)
export BERTH_KERNEL BERTH_AGENT

cargo fmt --all -- --check
cargo clippy --locked --workspace --all-targets -- -D warnings
if cargo nextest --version >/dev/null 2>&1; then
	cargo nextest run --locked --workspace --no-fail-fast
else
	cargo test --locked --workspace --no-fail-fast
fi
