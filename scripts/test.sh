#!/usr/bin/env bash
# herd's whole test suite: formatting, lints, then every test (unit, property, integration with
# real processes and sockets on 127.0.0.1). Installs what it needs; starts and stops the servers
# it uses. Safe to run on a fresh Debian machine as root.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo >/dev/null 2>&1 || { echo "cargo is required (https://rustup.rs)" >&2; exit 1; }
# Nothing external is needed yet: the suite starts its own herd, demo-app and `sh` processes.

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "==> build binaries (herd, demo-app)"
cargo build --workspace --bins --locked
echo "==> tests"
cargo test --workspace --locked -- --test-threads="${HERD_TEST_THREADS:-4}"
echo "==> all tests passed"
