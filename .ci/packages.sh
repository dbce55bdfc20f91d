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
