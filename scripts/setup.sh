#!/usr/bin/env bash
# Install everything podnet needs on a Debian 12 controller: apt packages and .venv.
# Idempotent: a second run installs nothing and says so.
set -euo pipefail
cd "$(dirname "$0")/.."

# containernetworking-plugins and iptables: the CNI runtime's unit tests run the real plugins
# in a throwaway network namespace; unbound, dnsutils (dig) and curl: podnet-dns's tests run
# them there too (without dig they would be skipped, and make unit stays green on nothing);
# iputils-ping: verify pings a lab host from the machine's own namespace and expects no answer.
APT_PACKAGES=(systemd-container mmdebstrap util-linux iproute2 netcat-openbsd openssh-client
              python3-venv make git containernetworking-plugins iptables unbound dnsutils curl
              iputils-ping)

if [ "$(id -u)" -ne 0 ]; then
  echo "setup: run as root (the lab creates network namespaces and mounts)" >&2
  exit 1
fi

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: apt-get install ${missing[*]}"
  apt-get update -q
  # packaged servers (unbound) must not start on this machine: tests start their own
  guard=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    guard=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' > "$guard" && chmod +x "$guard"
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
  [ -z "$guard" ] || rm -f "$guard"
else
  echo "setup: apt packages already installed (${APT_PACKAGES[*]})"
fi

stamp=.venv/.podnet-requirements
want=$(sha256sum requirements.txt pyproject.toml | sha256sum | cut -c1-16)
if [ -x .venv/bin/python ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "setup: .venv is up to date with requirements.txt"
else
  echo "setup: building .venv from requirements.txt (a few minutes the first time)"
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -r requirements.txt
  .venv/bin/pip install -q --no-deps -e .
  echo "$want" > "$stamp"
fi

.venv/bin/python scripts/check-collections.py requirements.yml
