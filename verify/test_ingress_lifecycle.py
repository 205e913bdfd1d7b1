"""Ingress as things change: an unready backend pod leaves the upstreams (and comes back), the
Ingress keeps serving while one controller pod is stopped, an Ingress added while a client
sends requests loses none of them, and a configuration nginx refuses never replaces the one
that runs. These change the lab and put it back; they run after the other suites."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import ingresschecks as ic
import pytest
import yaml
from conftest import (
    assert_restored,
    container_units,
    converged,
    lab_state,
    manifests_dir,
    observed,
    plan,
    run,
    wait_for,
)

pytestmark = pytest.mark.principle("Ingress")

HOST = "x.apps.example.test"  # demo/wild: every path to demo/whoami
WHOAMI = "demo/whoami"


def whoami_pods() -> list[str]:
    svc = plan().service(WHOAMI)
    return sorted({e.pod for p in svc.ports for e in p.endpoints})


def answering(count: int = 20) -> set[str]:
    replies = ic.send([ic.Request("https", HOST, "/")] * count)
    return {r.pod or ic.answered_by(r) for r in replies}


def test_unready_backend_pod_leaves_the_upstreams_and_comes_back() -> None:
    ic.needs("demo/wild")
    pods = whoami_pods()
    assert len(pods) >= 2, f"{WHOAMI} needs 2 pods for this test: {pods}"
    stopped = plan().pod(pods[0])
    others = {plan().pod(k).host_name for k in pods[1:]}
    before = lab_state()
    units = container_units(stopped.key)
    ip = observed()[stopped.key]["ip"]
    assert all(ip in ic.upstream_ips(c) for c in ic.controller_pods()), ip
    run(stopped.node, "systemctl", "stop", *units)
    try:
        left = wait_for(f"{stopped.key} stopped: {ip} leaves every controller's upstreams",
                        lambda: all(ip not in ic.upstream_ips(c) for c in ic.controller_pods()))
        assert answering() == others
        print(f"{stopped.key} stopped: out of every controller's upstreams after {left:.1f} s")
    finally:
        run(stopped.node, "systemctl", "start", *units)
    back = wait_for(f"{stopped.key} started again: {ip} back in every controller's upstreams",
                    lambda: all(ip in ic.upstream_ips(c) for c in ic.controller_pods()))
    wait_for(f"{stopped.key} started again: it answers through the Ingress",
             lambda: stopped.host_name in answering())
    print(f"{stopped.key} started: back in the upstreams after {back:.1f} s")
    assert_restored(before, f"stopping and starting {stopped.key}")


def test_ingress_keeps_serving_while_a_controller_pod_is_stopped() -> None:
    ic.needs("demo/wild")
    pods = ic.controller_pods()
    assert len(pods) >= 2, f"the controller needs 2 replicas for this test: {pods}"
    victim = plan().pod(pods[0])
    units = container_units(victim.key)
    before = lab_state()
    samples: list[tuple[float, bool]] = []

    def client() -> None:
        samples.extend(ic.load(HOST, "/", seconds=16))

    thread = threading.Thread(target=client)
    thread.start()
    try:
        threading.Event().wait(3)
        stopped_at = time.time()  # the client stamps its requests with time.time() too
        run(victim.node, "systemctl", "stop", *units)
        thread.join()
    finally:
        run(victim.node, "systemctl", "start", *units)
    failures = [t - stopped_at for t, ok in samples if not ok]  # seconds after the stop
    window = max(failures, default=0.0)
    print(f"controller pod {victim.key} on {victim.node} stopped {stopped_at - samples[0][0]:.1f}"
          f" s into {len(samples)} requests: {len(failures)} failed, the last {window:.1f} s "
          f"after the stop (its readinessProbe takes it out of the Service; longest run of "
          f"failures {max(ic.outages(samples), default=0.0):.1f} s)")
    assert all(t >= -0.5 for t in failures), failures  # none before the stop
    # requests hashed to its node fail until its readinessProbe (2 s x 3) takes it out of
    # the controller's Service on every node and the load balancer's health check follows
    assert window <= 10.0, failures
    assert_restored(before, f"stopping and starting controller pod {victim.key}")


ADDED = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "Ingress",
    "metadata": {"name": "added", "namespace": "demo"},
    "spec": {"ingressClassName": "nginx", "rules": [{
        "host": "added.example.test",
        "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": {
            "service": {"name": "whoami", "port": {"name": "http"}}}}]}}]},
}


def test_ingress_added_under_load_loses_no_request(tmp_path: Path) -> None:
    ic.needs("demo/wild")
    before = lab_state()
    copy = tmp_path / "manifests"
    shutil.copytree(manifests_dir(), copy)
    (copy / "zz-added-ingress.yaml").write_text(yaml.safe_dump(ADDED, sort_keys=False))
    samples: list[tuple[float, bool]] = []

    def client() -> None:
        samples.extend(ic.load(HOST, "/", seconds=300, interval=0.05))

    thread = threading.Thread(target=client)
    thread.start()
    try:
        converged(copy, "ingress")
        wait_for("the added Ingress answers", lambda: ic.send(
            [ic.Request("http", "added.example.test", "/")])[0].pod is not None, timeout=20)
        threading.Event().wait(1)
    finally:
        ic.stop_load()
        thread.join()
    failed = [t for t, ok in samples if not ok]
    print(f"Ingress added during {len(samples)} requests: {len(failed)} failed")
    assert samples and not failed, f"{len(failed)} of {len(samples)} requests failed"
    reply = ic.send([ic.Request("http", "added.example.test", "/")])[0]
    ic.assert_answers(reply, WHOAMI)
    converged(manifests_dir(), "ingress")
    gone = ic.send([ic.Request("http", "added.example.test", "/")])[0]
    assert gone.status == 404 and gone.pod is None, gone
    assert_restored(before, "adding an Ingress and removing it")


def test_configuration_nginx_refuses_never_replaces_the_running_one() -> None:
    """A certificate nginx cannot load, written into one node's input: `nginx -t` fails, the
    controller keeps the configuration it runs and says why; the input put back, it applies
    it again."""
    ic.needs("demo/wild")
    victim = plan().pod(ic.controller_pods()[0])
    paths = plan().paths
    status = ic.status_file(victim.key)
    saved = f"{paths.ingress_input}.verify-saved"
    good = run(victim.node, "cat", paths.ingress_input)
    assert good.rc == 0, good
    data = json.loads(good.stdout)
    name = next(iter(data["certificates"]))
    data["certificates"][name]["cert"] = ("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n"
                                          "-----END CERTIFICATE-----\n")
    bad = json.dumps(data)
    before = lab_state()
    assert run(victim.node, "cp", "-p", paths.ingress_input, saved).rc == 0
    try:
        put = run(victim.node, "python3", "-c", "import sys; open(sys.argv[1], 'w')"
                  ".write(sys.argv[2])", paths.ingress_input, bad)
        assert put.rc == 0, put
        wait_for("the controller reports the refused configuration",
                 lambda: ic.status(victim.node, status).get("error"), timeout=20)
        # still serving through that pod, with the configuration it had
        reply = ic.through_pod(victim.key, HOST, "/")
        assert reply.status == 200 and reply.pod, reply
    finally:
        run(victim.node, "mv", saved, paths.ingress_input)
    wait_for("the controller applies the input put back",
             lambda: not ic.status(victim.node, status).get("error"), timeout=20)
    assert_restored(before, "a refused configuration and the input put back")
