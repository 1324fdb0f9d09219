#!/usr/bin/env bash
# herd's whole test suite: formatting, lints, then every test (unit, property, integration with
# real processes and sockets on 127.0.0.1). Installs what it needs; starts and stops the servers
# it uses. Safe to run on a fresh Debian machine as root.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo >/dev/null 2>&1 || { echo "cargo is required (https://rustup.rs)" >&2; exit 1; }
# The suite starts its own herd, demo-app and `sh` processes. The dashboard's browser test
# (crates/herd/tests/dashboard.rs) also needs node (20+), Debian's chromium and playwright-core
# (tests/browser/node_modules; it drives /usr/bin/chromium and downloads no browser).
apt_updated=0
apt_install() {
  if [ "$apt_updated" = 0 ]; then
    apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}
# The shared-store tests (crates/herd-store, crates/herd-services, two-node tests) start their own
# redis-server processes (single and a 3-master cluster) on 127.0.0.1 and stop them.
if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
  echo "==> installing redis-server and redis-tools (for the shared-store tests)"
  apt_install redis-server redis-tools
  # The package starts a system Redis on 6379; the tests use their own servers.
  systemctl disable --now redis-server >/dev/null 2>&1 || service redis-server stop >/dev/null 2>&1 || true
fi
if [ ! -x /usr/bin/chromium ]; then
  echo "==> installing chromium (for the dashboard's browser test)"
  apt_install chromium fonts-liberation fonts-dejavu-core   # fonts: only recommended by chromium
fi
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 \
  || { echo "node 20+ and npm are required for the dashboard's browser test" >&2; exit 1; }
# npm ci only when node_modules is missing or was installed from another lockfile.
lock_sum="$(sha256sum tests/browser/package-lock.json | cut -d' ' -f1)"
lock_stamp=tests/browser/node_modules/.herd-lock-sha256
if [ ! -d tests/browser/node_modules ] || [ "$(cat "$lock_stamp" 2>/dev/null)" != "$lock_sum" ]; then
  echo "==> npm ci --prefix tests/browser (playwright-core)"
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --prefix tests/browser --no-audit --no-fund
  echo "$lock_sum" >"$lock_stamp"
fi

# libfuzzer-sys (the fuzz targets, checked below) builds libFuzzer with a C++ compiler.
if ! command -v c++ >/dev/null 2>&1; then
  echo "==> installing g++ (libFuzzer, for the fuzz targets' check)"
  apt_install g++
fi

# The metrics test checks /metrics with the reference parser (Python prometheus_client).
if ! python3 -c "import prometheus_client" 2>/dev/null; then
  echo "==> pip install prometheus_client (the metrics test's parser)"
  python3 -m pip install -q prometheus_client
fi

# The build needs about 2 GB under target/ (see the profiles in Cargo.toml); say what is free, so a
# full disk is recognised at once.
echo "==> free disk where target/ goes: $(df -h "${CARGO_TARGET_DIR:-.}" 2>/dev/null | awk 'NR==2 {print $4}')"
# A one-off build gains nothing from incremental state; it only costs disk.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
# The fuzz targets are their own workspaces (cargo fuzz; running them: README). Checking that they
# still compile keeps them from rotting. Their lockfiles (not committed, as cargo fuzz does) start
# from the main one each time, so they share herd's pinned versions; cargo adds the fuzzing crates.
echo "==> fuzz targets compile"
fuzz_target_dir="${CARGO_TARGET_DIR:-$PWD/target}/fuzz-check"
for dir in crates/herd-config/fuzz crates/herd-proxy/fuzz crates/herd-services/fuzz; do
  cp Cargo.lock "$dir/Cargo.lock"
  (cd "$dir" && CARGO_TARGET_DIR="$fuzz_target_dir" cargo check --bins --quiet)
done
# `cargo test` builds herd itself (its tests run CARGO_BIN_EXE_herd); the demo app the tests start
# is built here, the same way the tests would build it on demand.
echo "==> build the demo app"
cargo build -p demo-app --locked
echo "==> tests"
rm -f "${CARGO_TARGET_DIR:-$PWD/target}"/test-artifacts/queue-crash-*.txt
cargo test --workspace --locked -- --test-threads="${HERD_TEST_THREADS:-4}"
# The queue's crash tests (kill -9 of herd under load) count the jobs delivered more than once.
for report in "${CARGO_TARGET_DIR:-$PWD/target}"/test-artifacts/queue-crash-*.txt; do
  if [ -f "$report" ]; then cat "$report"; fi
done
echo "==> all tests passed"
