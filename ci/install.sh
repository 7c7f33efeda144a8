#!/usr/bin/env bash
# Installs, from the package registries, what the full test suite needs, and exports
# IRIKIT_REQUIRE / IRIKIT_FEATURES accordingly. Sourced by ci/run.sh.
set -euo pipefail

# --- qemu (issue 8): QEMU from bookworm-backports + the Debian guest parts -------------------
# qemu-system-x86 and qemu-utils (qemu-img) both come from bookworm-backports (QEMU 10.x): a
# fresh machine has neither, and bookworm's 7.2 qemu-utils would not match the backported system.
# The guest parts (Debian cloud kernel and busybox-static) are downloaded with `apt-get download`
# and unpacked with `dpkg -x` into a cache dir; the tests build their initramfs from them at run
# time. Idempotent: quick when done.
irikit_install_qemu() {
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    if ! command -v qemu-system-x86_64 >/dev/null 2>&1 || ! command -v qemu-img >/dev/null 2>&1; then
        local list=/etc/apt/sources.list.d/irikit-bookworm-backports.list
        if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
            local uri
            uri=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
            uri=${uri:-http://deb.debian.org/debian}
            echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uri bookworm-backports main" |
                $sudo tee "$list" >/dev/null
        fi
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq -t bookworm-backports \
            --no-install-recommends qemu-system-x86 qemu-utils
    fi
    qemu-system-x86_64 --version | head -n1
    qemu-img --version | head -n1

    local cache="${IRIKIT_CACHE:-${HOME:-/root}/.cache/irikit}/guest"
    if [ ! -e "$cache/.done" ]; then
        local kpkg
        kpkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-/{print $2; exit}')
        if [ -z "$kpkg" ]; then
            $sudo apt-get update -qq
            kpkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-/{print $2; exit}')
        fi
        rm -rf "$cache"
        mkdir -p "$cache/debs" "$cache/x"
        # As root, apt's sandbox user cannot write into a private cache dir: download as root.
        local sandbox=()
        [ "$(id -u)" = 0 ] && sandbox=(-o APT::Sandbox::User=root)
        (cd "$cache/debs" && apt-get download -qq "${sandbox[@]}" "$kpkg" busybox-static)
        for d in "$cache"/debs/*.deb; do
            local n
            n=$(basename "${d%%_*}")
            mkdir -p "$cache/x/$n"
            dpkg -x "$d" "$cache/x/$n"
        done
        # Stable names the tests use: vmlinuz, busybox, modules/ (the kernel's module tree).
        (
            cd "$cache"
            ln -sfn "$(ls x/"$kpkg"/boot/vmlinuz-* | head -n1)" vmlinuz
            ln -sfn x/busybox-static/bin/busybox busybox
            ln -sfn "$(ls -d x/"$kpkg"/lib/modules/* | head -n1)" modules
        )
        rm -rf "$cache/debs"
        touch "$cache/.done"
    fi
    export IRIKIT_GUEST_DIR="$cache"
    export IRIKIT_REQUIRE="${IRIKIT_REQUIRE:+$IRIKIT_REQUIRE,}qemu"
}
irikit_install_qemu
# --- end qemu ---------------------------------------------------------------------------------

# --- etcd (issue 5) ----------------------------------------------------------------------------
# irikit-api's etcd backend: etcd-client needs protoc at build time; the store suite and the
# scheduler race test start a real etcd.
if ! command -v etcd >/dev/null || ! command -v protoc >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server protobuf-compiler >/dev/null
fi
export IRIKIT_REQUIRE="${IRIKIT_REQUIRE:+$IRIKIT_REQUIRE,}etcd"
export IRIKIT_FEATURES="${IRIKIT_FEATURES:+$IRIKIT_FEATURES }irikit-api/etcd scheduler/etcd poollet/etcd"

# --- netns (issue 17) ----------------------------------------------------------------------------
# The partition suite (controlplane/tests/partition.rs) builds its hosts as network namespaces
# with iproute2's `ip` (as root) and runs a 3-member etcd cluster across them.
irikit_install_netns() {
    if ! command -v ip >/dev/null 2>&1; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 >/dev/null
    fi
    export IRIKIT_REQUIRE="${IRIKIT_REQUIRE:+$IRIKIT_REQUIRE,}netns"
}
irikit_install_netns
# --- end netns -----------------------------------------------------------------------------------

# --- python-grpcio (issue 13) -------------------------------------------------------------------
# A stock Python grpcio client (>= 1.57: it sends the percent-encoded socket path as :authority)
# and grpcio-tools (stubs generated from iri-spec/proto at test time), from PyPI, for the serving
# tests of every runtime binary (iri-spec/clients/). Idempotent: quick when installed.
irikit_install_python_grpcio() {
    local check='import grpc, grpc_tools; assert tuple(int(x) for x in grpc.__version__.split(".")[:2]) >= (1, 57)'
    if ! python3 -c "$check" >/dev/null 2>&1; then
        if ! python3 -m pip --version >/dev/null 2>&1; then
            apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip >/dev/null
        fi
        python3 -m pip install -q 'grpcio>=1.57' grpcio-tools ||
            python3 -m pip install -q --break-system-packages 'grpcio>=1.57' grpcio-tools
    fi
    python3 -c "$check; print('python grpcio', grpc.__version__)"
    export IRIKIT_REQUIRE="${IRIKIT_REQUIRE:+$IRIKIT_REQUIRE,}python-grpcio"
}
irikit_install_python_grpcio
# --- end python-grpcio ----------------------------------------------------------------------------

# --- go-grpc (issue 13) -----------------------------------------------------------------------------
# Debian's grpc-go 1.33.3 (golang-google-grpc-dev, sources in /usr/share/gocode), built in GOPATH
# mode by the serving tests (iri-spec/clients/grpc_go). Dialled through a custom dialer it sends
# the raw socket path as :authority. Uses the machine's Go; Debian's golang-go when there is none.
irikit_install_go_grpc() {
    if [ ! -f /usr/share/gocode/src/google.golang.org/grpc/clientconn.go ] || ! command -v go >/dev/null; then
        apt-get update -qq
        local pkgs=(golang-google-grpc-dev)
        command -v go >/dev/null || pkgs+=(golang-go)
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null
    fi
    echo "go-grpc: $(dpkg-query -W -f '${Version}' golang-google-grpc-dev) with $(go version)"
    export IRIKIT_REQUIRE="${IRIKIT_REQUIRE:+$IRIKIT_REQUIRE,}go-grpc"
}
irikit_install_go_grpc
# --- end go-grpc ------------------------------------------------------------------------------------
