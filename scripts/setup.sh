#!/usr/bin/env bash
# Install what podnet needs on a Debian 12 controller, in two steps:
#   scripts/setup.sh venv   .venv from requirements.txt; no root (make lint, unit, plan)
#   scripts/setup.sh host   the apt packages the lab and the root-only unit tests use; root
#   scripts/setup.sh        both, host first (python3-venv is one of the packages)
# Idempotent: a second run installs nothing and says so.
set -euo pipefail
cd "$(dirname "$0")/.."

# dpkg-dev: dpkg-scanpackages indexes the lab's package mirror.
# containernetworking-plugins and iptables: the CNI runtime's unit tests run the real plugins
# in a throwaway network namespace; unbound, dnsutils (dig) and curl: podnet-dns's tests run
# them there too (without dig they would be skipped, and make unit stays green on nothing);
# nginx and openssl: the ingress controller's config is served by a real nginx there, with
# certificates made by openssl (tests/test_nginxconf.py, tests/test_podnet_ingress.py).
# bird2: a routed lab's router runs BIRD inside its namespace as the nodes' BGP peer
# (lab_router_bgp_as, tests/test_lab_router_bgp.py); Debian's bird.service never starts here.
# chromium-headless-shell and its font: make test looks at the verify report as a reader would
# (python -m podnet report --check, tests/test_browser.py).
APT_PACKAGES=(systemd-container mmdebstrap util-linux iproute2 netcat-openbsd openssh-client
              python3-venv make git containernetworking-plugins iptables unbound dnsutils curl
              dpkg-dev nginx openssl bird2 chromium-headless-shell fonts-dejavu-core)

host_packages() {
  missing=()
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if [ "$(id -u)" -ne 0 ]; then
    # the lab makes network namespaces, mounts and containers: nothing of it works without root
    echo "setup: the lab needs root (it creates network namespaces, mounts and containers);" \
         "run this make target as root.${missing[*]:+ Missing apt packages: ${missing[*]}.}" \
         "make lint, make unit and make plan need no root." >&2
    exit 1
  fi
  if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: apt-get install ${missing[*]}"
    apt-get update -q
    # packaged servers (unbound, nginx, bird) must not start on this machine: tests and the lab
    # start their own
    guard=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      guard=/usr/sbin/policy-rc.d
      printf '#!/bin/sh\nexit 101\n' > "$guard" && chmod +x "$guard"
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
    [ -z "$guard" ] || rm -f "$guard"
    # nor at the next boot: Debian enables bird.service, a BIRD in this machine's own namespace
    # that would export its routes to this machine's kernel (the lab runs its own, in the router)
    if [[ " ${missing[*]} " == *" bird2 "* ]]; then
      systemctl disable --quiet bird.service 2>/dev/null ||
        rm -f /etc/systemd/system/multi-user.target.wants/bird.service
    fi
  else
    echo "setup: apt packages already installed (${APT_PACKAGES[*]})"
  fi
}

venv() {
  stamp=.venv/.podnet-requirements
  want=$(sha256sum requirements.txt pyproject.toml | sha256sum | cut -c1-16)
  if [ -x .venv/bin/python ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    echo "setup: .venv is up to date with requirements.txt"
  else
    if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
      # Debian splits venv and ensurepip out of python3; installing them needs root once
      echo "setup: python3 cannot make a venv here; as root run 'apt-get install python3-venv'" \
           "(or 'make setup', which installs it with the lab's packages), then run this again" >&2
      exit 1
    fi
    echo "setup: building .venv from requirements.txt (a few minutes the first time)"
    python3 -m venv .venv
    .venv/bin/pip install -q --upgrade pip
    .venv/bin/pip install -q -r requirements.txt
    .venv/bin/pip install -q --no-deps -e .
    echo "$want" > "$stamp"
  fi
  .venv/bin/python scripts/check-collections.py requirements.yml
}

case "${1:-all}" in
  host) host_packages ;;
  venv) venv ;;
  all) host_packages; venv ;;
  *) echo "usage: scripts/setup.sh [host|venv|all]" >&2; exit 2 ;;
esac
