#!/usr/bin/env bash
# Installs, from the package registries, what the full test suite needs, and exports
# IRIKIT_REQUIRE / IRIKIT_FEATURES accordingly. Sourced by ci/run.sh.
set -euo pipefail
# Nothing yet: the iri-spec crate needs only the Rust toolchain.
