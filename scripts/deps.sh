#!/usr/bin/env bash
# scripts/deps.sh - install the Debian 12 packages libdbpool needs to build, test and run its
# examples. Quick no-op when everything is present. Uses apt-get as root, or through sudo;
# without either it lists what is missing and exits 1.
set -euo pipefail

# openssl: the TLS tests make a CA and certificates; iproute2 + nftables: the partition test
# cuts a connection with a packet filter inside its own network namespace.
PACKAGES=(build-essential g++ cmake pkg-config libmariadb-dev libinih-dev libcmocka-dev
    mariadb-server mariadb-client valgrind clang libclang-rt-14-dev openssl iproute2 nftables)

missing=()
if command -v dpkg-query >/dev/null 2>&1; then
    # One query for all; "ii " is an installed package.
    installed=$(dpkg-query -W -f='${Package} ${db:Status-Abbrev}\n' "${PACKAGES[@]}" 2>/dev/null |
        awk '$2 == "ii" { print $1 }' || true)
    for p in "${PACKAGES[@]}"; do
        grep -qxF "$p" <<<"$installed" || missing+=("$p")
    done
else
    echo "deps: this is not a Debian-like system (no dpkg-query). libdbpool needs the equivalents" \
        "of: ${PACKAGES[*]}" >&2
    exit 1
fi

if [ "${#missing[@]}" -eq 0 ]; then
    echo "deps: all ${#PACKAGES[@]} packages present"
    exit 0
fi

echo "deps: missing: ${missing[*]}"
if [ "$(id -u)" = 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO=(sudo)
elif command -v sudo >/dev/null 2>&1 && [ -t 0 ]; then
    SUDO=(sudo) # sudo will ask for the password
else
    echo "deps: cannot install them: not root and no sudo. As root, run:" >&2
    echo "  apt-get update && apt-get install -y ${missing[*]}" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}"
echo "deps: installed ${missing[*]}"
