#!/usr/bin/env bash
# Installs, from the package registries, what the full test suite needs, and exports
# IRIKIT_REQUIRE / IRIKIT_FEATURES accordingly. Sourced by ci/run.sh.
set -euo pipefail

# irikit-api's etcd backend: etcd-client needs protoc at build time; the store suite and the
# scheduler race test start a real etcd.
if ! command -v etcd >/dev/null || ! command -v protoc >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server protobuf-compiler >/dev/null
fi
export IRIKIT_REQUIRE="${IRIKIT_REQUIRE:+$IRIKIT_REQUIRE,}etcd"
export IRIKIT_FEATURES="${IRIKIT_FEATURES:+$IRIKIT_FEATURES }irikit-api/etcd scheduler/etcd"
