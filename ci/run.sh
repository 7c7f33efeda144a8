#!/usr/bin/env bash
# irikit CI: install what the full suite needs, then fmt, clippy and the README's test command.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TERM_COLOR=never
export INSTA_UPDATE=no
export CARGO_INCREMENTAL=0
# A build cache outside the clone keeps repeated runs on one machine fast.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${HOME:-/root}/.cache/irikit-target}"

# Components the full suite needs. A test that needs one of these fails (instead of skipping)
# when it is named in IRIKIT_REQUIRE.
export IRIKIT_REQUIRE="${IRIKIT_REQUIRE:-}"
source ci/install.sh

echo "== cargo fmt"
cargo fmt --all --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets ${IRIKIT_FEATURES:+--features "$IRIKIT_FEATURES"} -- -D warnings
echo "== cargo test"
cargo test --workspace ${IRIKIT_FEATURES:+--features "$IRIKIT_FEATURES"}
