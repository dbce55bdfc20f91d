# Sourced by the scripts in .ci/: installs Debian packages that are missing, so that a fresh
# machine needs nothing installed by hand.
#
#     install_packages unbound stress-ng

install_packages() {
    local missing=() package
    for package in "$@"; do
        # Installed means "install ok installed": a removed package can leave its files behind
        # (status "deinstall ok config-files"), which `dpkg -s` still reports.
        [[ $(dpkg-query -W -f='${Status}' "$package" 2>/dev/null) == "install ok installed" ]] ||
            missing+=("$package")
    done
    ((${#missing[@]})) || return 0
    local sudo=""
    [[ $(id -u) -eq 0 ]] || sudo="sudo"
    printf '==> installing %s\n' "${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# The Debian packages the test suite needs:
# - unbound: the real DNS server the DNS source tests run against (tests/src/dns/unbound.rs).
# - iproute2 and nftables: the partition test's network namespace and its packet-drop rule
#   (tests/tests/suite/partition.rs).
TEST_PACKAGES=(unbound iproute2 nftables)

# The Python package of the test suite: grpcio, a real xDS client (gRPC C-core) the xDS
# management server rig is checked against (tests/tests/suite/xds.rs). Pinned, and installed
# into a virtual environment beside the build (nothing goes into the system's Python); the
# tests find its interpreter through WAYPOST_XDS_PYTHON.
GRPCIO_VERSION=1.85.3

# Makes the environment at $1 (unless it already imports grpcio) and exports its interpreter
# as WAYPOST_XDS_PYTHON.
install_xds_python() {
    local env="$1"
    if ! [[ -x "$env/bin/python" ]] || ! "$env/bin/python" -c "import grpc" 2>/dev/null; then
        command -v python3 >/dev/null 2>&1 || install_packages python3 python3-venv
        printf '==> installing grpcio %s into %s\n' "$GRPCIO_VERSION" "$env"
        rm -rf "$env"
        # Debian's python3 needs python3-venv for ensurepip.
        python3 -m venv "$env" 2>/dev/null || {
            install_packages python3-venv
            python3 -m venv "$env"
        }
        "$env/bin/python" -m pip install --quiet --disable-pip-version-check "grpcio==$GRPCIO_VERSION"
    fi
    export WAYPOST_XDS_PYTHON="$env/bin/python"
}
