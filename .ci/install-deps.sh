#!/usr/bin/env bash
# Installs the real Fluentd clients that the interop tests spawn (see tests/clients/README.md):
#   - Debian packages: golang-go, golang-github-fluent-fluent-logger-golang-dev (v1.9.0), python3-venv,
#     haproxy (the NLB stand-in of tests/tests/full_chain.rs)
#   - a Python venv at .ci/venv with pinned fluent-logger, msgpack, moto[server] and
#     prometheus_client (the reference parser for /metrics)
#   - the Go Docker-driver stand-in built into target/interop/dockerlike (GOPATH mode, offline)
# Idempotent; run as root from anywhere (it works relative to the repo root). Fails on any error.
# Under sudo (SUDO_USER set) the files it creates in the clone (.ci/venv, target/interop and
# target/ itself if it was missing) are handed to SUDO_USER, so a later `cargo build` as that
# user can write to target/.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# Pins. fluent-logger 0.11.1 and msgpack 1.2.4 were the newest on PyPI when this was written
# (`pip index versions fluent-logger`); moto 5.2.5 is pinned because the machine image has 5.2.1
# installed globally.
FLUENT_LOGGER_VERSION="0.11.1"
MSGPACK_VERSION="1.2.4"
MOTO_VERSION="5.2.5"
# The reference Prometheus text-format parser (tests/tests/metrics_health.rs parses /metrics).
PROMETHEUS_CLIENT_VERSION=0.26.0
APT_PACKAGES=(golang-go golang-github-fluent-fluent-logger-golang-dev python3-venv haproxy)
PYTHON="${PYTHON:-python3}"
VENV="$ROOT/.ci/venv"
OUT_DIR="$ROOT/target/interop"
GO_SRC="$ROOT/tests/clients/dockerlike/main.go"

log() { printf '[install-deps] %s\n' "$*" >&2; }
die() { printf '[install-deps] ERROR: %s\n' "$*" >&2; exit 1; }
W=""
TARGET_EXISTED=false
[ -e "$ROOT/target" ] && TARGET_EXISTED=true
# Under sudo: give what this script created in the clone back to the user who ran sudo.
give_back() {
    [ "$(id -u)" -eq 0 ] && [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ] || return 0
    local group
    group="$(id -gn "$SUDO_USER")" || return 0
    if [ "$TARGET_EXISTED" = false ] && [ -d "$ROOT/target" ]; then
        chown "$SUDO_USER:$group" "$ROOT/target" || true
    fi
    local d
    for d in "$VENV" "$OUT_DIR"; do
        if [ -e "$d" ]; then chown -R "$SUDO_USER:$group" "$d" || true; fi
    done
}
cleanup() {
    local rc=$?
    if [ -n "$W" ]; then rm -rf "$W"; fi
    give_back
    if [ "$rc" -ne 0 ]; then printf '[install-deps] FAILED (exit %s)\n' "$rc" >&2; fi
}
trap cleanup EXIT

# --- 1. Debian packages -------------------------------------------------------------------
missing=()
for p in "${APT_PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
        missing+=("$p")
    fi
done
if [ "${#missing[@]}" -gt 0 ]; then
    [ "$(id -u)" -eq 0 ] || die "need root to apt-get install: ${missing[*]}"
    log "apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y --no-install-recommends "${APT_PACKAGES[@]}"
else
    log "apt packages already installed: ${APT_PACKAGES[*]}"
fi
command -v go >/dev/null || die "go not on PATH after installing golang-go"
# Debian puts haproxy in /usr/sbin (not on every user's PATH; the tests look there too).
[ -x /usr/sbin/haproxy ] || command -v haproxy >/dev/null || die "haproxy missing after installing it"
FLG_DIR=/usr/share/gocode/src/github.com/fluent/fluent-logger-golang/fluent
[ -f "$FLG_DIR/fluent.go" ] || die "fluent-logger-golang sources missing under $FLG_DIR"

# --- 2. Python venv -----------------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
    log "creating venv $VENV with $($PYTHON --version 2>&1) ($(command -v "$PYTHON"))"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
else
    log "venv exists: $VENV"
fi
# With every pin already satisfied this is a quick no-op that needs no network.
"$VENV/bin/python" -m pip install --disable-pip-version-check -q \
    "fluent-logger==$FLUENT_LOGGER_VERSION" \
    "msgpack==$MSGPACK_VERSION" \
    "moto[server]==$MOTO_VERSION" \
    "prometheus_client==$PROMETHEUS_CLIENT_VERSION"
"$VENV/bin/python" - <<'EOF'
from fluent import sender, asyncsender  # noqa: F401  (the import the client uses)
import msgpack, moto  # noqa: F401
from prometheus_client.parser import text_string_to_metric_families  # noqa: F401
EOF
[ -x "$VENV/bin/moto_server" ] || die "moto_server missing from $VENV/bin"

# --- 3. Go client (GOPATH mode, offline, Debian's fluent-logger-golang) --------------------
[ -f "$GO_SRC" ] || die "missing $GO_SRC"
mkdir -p "$OUT_DIR/gocache"
W="$(mktemp -d)"
mkdir -p "$W/src/dockerlike"
cp "$GO_SRC" "$W/src/dockerlike/main.go"
log "go build -> $OUT_DIR/dockerlike"
(
    cd "$W/src/dockerlike"
    env GO111MODULE=off GOPATH="$W:/usr/share/gocode" GOCACHE="$OUT_DIR/gocache" \
        GOENV=off GOFLAGS= GOPROXY=off GOTOOLCHAIN=local CGO_ENABLED=0 HOME="${HOME:-$W}" \
        go build -o "$OUT_DIR/dockerlike.tmp" .
)
mv -f "$OUT_DIR/dockerlike.tmp" "$OUT_DIR/dockerlike"
"$OUT_DIR/dockerlike" -version >/dev/null || die "built dockerlike does not run"

# --- 4. Summary ---------------------------------------------------------------------------
flg_version="$(sed -n 's/^const Version = "\(.*\)"/\1/p' "$FLG_DIR/version.go")"
cat <<EOF
installed:
  $(go version)
  fluent-logger-golang $flg_version (Debian $(dpkg-query -W -f='${Version}' golang-github-fluent-fluent-logger-golang-dev))
  venv $VENV: $("$VENV/bin/python" --version 2>&1)
$("$VENV/bin/python" -m pip list --disable-pip-version-check --format=freeze 2>/dev/null \
    | grep -iE '^(fluent-logger|msgpack|moto)==' | sed 's/^/    /')
  python client: $VENV/bin/python tests/clients/fluent_sender.py
  go client:     $OUT_DIR/dockerlike ($("$OUT_DIR/dockerlike" -version))
  haproxy:       $( (/usr/sbin/haproxy -v 2>/dev/null || haproxy -v) | head -1)
EOF
