#!/usr/bin/env bash
# Installs the Debian 12 packages libmq needs, and only those missing, so both README commands and
# .ci/run work on a fresh machine as root. Pass extra package names to install them too.
set -euo pipefail
packages=(cmake g++ make ninja-build pkg-config libcpp-httplib-dev libssl-dev openssl libsimdjson-dev nlohmann-json3-dev doctest-dev libhiredis-dev libcli11-dev "$@")
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
