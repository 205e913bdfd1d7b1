#!/usr/bin/env bash
# The routed lab (inventory/lab-routed: node3 on 192.168.57.0/24 behind the lab's router, where
# host-gw cannot work) with each backend that crosses a router: a lab of its own, converged
# with vxlan, then bgp; after each converge a second one must change nothing (idempotence), then
# the pod-network, Services and DNS suites and the backend proofs run against it (JUnit in
# reports/routed-<backend>.xml). The lab is torn down at the end, whatever happened.
#   scripts/routed-suites.sh [BACKEND...]     (default: vxlan bgp)
set -euo pipefail
cd "$(dirname "$0")/.."
INVENTORY=inventory/lab-routed
export PODNET_LAB=${PODNET_LAB:-podnet-rtci}
export ANSIBLE_CONFIG=$PWD/ansible.cfg ANSIBLE_FORCE_COLOR=0 ANSIBLE_NOCOLOR=1
BIN=.venv/bin
SUITES="(flat_network or unique_pod_ip or kubelet_cni or service_abstraction or nodeport or service_dns)"
backends=("$@")
[ ${#backends[@]} -gt 0 ] || backends=(vxlan bgp)
mkdir -p reports

down() {  # the lab's teardown and its residue check, whatever happened before
  echo "==> routed: lab $PODNET_LAB down"
  $BIN/ansible-playbook -i "$INVENTORY" playbooks/lab-down.yml | sed -n '/PLAY RECAP/,$p'
}
trap down EXIT

converge() {  # converge BACKEND [TAGS]: fails unless it succeeds; prints the recap
  local out
  out=$(PODNET_BACKEND=$1 $BIN/ansible-playbook -i "$INVENTORY" playbooks/site.yml \
        ${2:+--tags "$2"} 2>&1) || { echo "$out" | tail -40; return 1; }
  echo "$out" | sed -n '/PLAY RECAP/,$p'
}

echo "==> routed: lab $PODNET_LAB up ($INVENTORY)"
$BIN/ansible-playbook -i "$INVENTORY" playbooks/lab-up.yml >/dev/null
first=1
for backend in "${backends[@]}"; do
  start=$SECONDS
  if [ $first = 1 ]; then
    echo "==> routed: converge with $backend"
    converge "$backend"
    first=0
  else
    echo "==> routed: switch to $backend (--tags network)"
    converge "$backend" network
  fi
  echo "==> routed: converged in $((SECONDS - start)) s; again, which must change nothing"
  recap=$(converge "$backend" network)
  if echo "$recap" | grep -E 'changed=[1-9]' ; then
    echo "routed: the second converge with $backend changed something (not idempotent)" >&2
    exit 1
  fi
  echo "==> routed: the pod-network, Services and DNS suites and the backend proofs ($backend)"
  PODNET_BACKEND=$backend PODNET_INVENTORY=$INVENTORY $BIN/pytest -c verify/pytest.ini verify \
    -m "$SUITES and not changes_lab" \
    --junitxml="reports/routed-$backend.xml" -q
done
