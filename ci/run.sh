#!/usr/bin/env bash
# irikit CI: install what the full suite needs, then fmt, clippy and the README's test command.
# Each stage prints its wall time; the whole run must stay under 60 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TERM_COLOR=never
export INSTA_UPDATE=no
export CARGO_INCREMENTAL=0
# A build cache outside the clone keeps repeated runs on one machine fast.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${HOME:-/root}/.cache/irikit-target}"

run_start=$SECONDS
stage_start=$SECONDS
stage_name=""
stage() {
    if [ -n "$stage_name" ]; then
        echo "== stage '$stage_name' took $((SECONDS - stage_start)) s"
    fi
    stage_name="$1"
    stage_start=$SECONDS
    [ -n "$stage_name" ] && echo "== $stage_name"
    return 0
}

# Components the full suite needs. A test that needs one of these fails (instead of skipping)
# when it is named in IRIKIT_REQUIRE.
export IRIKIT_REQUIRE="${IRIKIT_REQUIRE:-}"
stage "install (package registries)"
source ci/install.sh
echo "IRIKIT_REQUIRE=$IRIKIT_REQUIRE"

stage "cargo fmt"
cargo fmt --all --check
stage "no import circles (ci/import-cycles.py)"
python3 ci/import-cycles.py . | tail -n 20
python3 ci/import-cycles.py . | grep -qx '0 import circles'
stage "cargo clippy"
cargo clippy --workspace --all-targets ${IRIKIT_FEATURES:+--features "$IRIKIT_FEATURES"} -- -D warnings
stage "cargo test"
cargo test --workspace ${IRIKIT_FEATURES:+--features "$IRIKIT_FEATURES"}
stage ""
echo "== .ci/run took $((SECONDS - run_start)) s in all"
