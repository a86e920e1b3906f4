#!/usr/bin/env bash
# Runs every check and test. Assumes the interop clients are installed (.ci/install-deps.sh,
# which `bash .ci/run` runs first on a fresh machine).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo build (binaries the end-to-end tests spawn)"
cargo build --workspace --bins
echo "== fuzz target builds"
cargo build --manifest-path fuzz/Cargo.toml
echo "== cargo test"
cargo test --workspace
