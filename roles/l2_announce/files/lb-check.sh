#!/bin/sh
# keepalived's health check for one LoadBalancer address in l2 mode (the l2_announce role):
# may this node announce it? Asks kube-proxy's health server on this node, as a cloud load
# balancer asks it: the node server (10256 /healthz) for externalTrafficPolicy Cluster, the
# Service's healthCheckNodePort for Local (200 while the node has a ready local endpoint, 503
# otherwise). Exit 0 = healthy; anything else (refused, timed out, 4xx/5xx) = not.
# A shell script with curl, not a Python tool: keepalived runs it every interval per address,
# and a Python start costs several times what curl does (so its source is not named podnet-*,
# which the Python lint takes for a node tool). Installed as podnet-lb-check (PATHS.lb_check).
# usage: podnet-lb-check PORT PATH
set -u
if [ "$#" -ne 2 ]; then
    echo "usage: podnet-lb-check PORT PATH (kube-proxy's health port and path)" >&2
    exit 2
fi
exec curl --silent --fail --output /dev/null --max-time 1 --noproxy '*' \
    "http://127.0.0.1:$1$2"
