"""Readiness decided before rendering (proxier.categorize, as kube-proxy's CategorizeEndpoints):
unready endpoints leave the Service chains and the rest get kube-proxy's probabilities; all
unready fails open; the renderer's JSON input round-trips and marks endpoints by pod and IP."""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from typing import Any

import pytest

from podnet import kubeproxy, proxier
from podnet.proxier import Endpoint, Options, ServicePort

OPTS = Options(node_name="me", node_ip="192.168.56.11", cluster_cidr="10.0.0.0/8")
IPS = {"A": "10.0.0.1", "B": "10.0.0.2", "C": "10.0.0.3"}


def endpoint(name: str, ready: bool = True, node: str | None = None) -> Endpoint:
    return Endpoint(IPS.get(name, "10.0.0.4"), 80, node, ready, pod=f"ns/{name.lower()}")


def services(unready: Collection[str] = ()) -> list[ServicePort]:
    """ns/svc:p with three endpoints and ClientIP affinity; ns/one:p with one (D)."""
    return [
        ServicePort(namespace="ns", name="svc", port_name="p", protocol="TCP",
                    cluster_ip="10.96.0.10", port=80, affinity_timeout=10800,
                    endpoints=tuple(endpoint(n, n not in unready) for n in IPS)),
        ServicePort(namespace="ns", name="one", port_name="p", protocol="TCP",
                    cluster_ip="10.96.0.11", port=80,
                    endpoints=(endpoint("D", "D" not in unready),)),
    ]


SVC_X = kubeproxy.chains("ns", "svc", "p", "TCP")["svc"]


def sep(name: str) -> str:
    return kubeproxy.endpoint_chain("ns", "svc", "p", "TCP", IPS[name], 80)


def rendered(unready: Collection[str] = ()) -> str:
    return proxier.render(services(unready), OPTS)


def svc_x(text: str) -> list[str]:
    """The service chain's jumps to its endpoints (its first rule marks off-cluster traffic)."""
    return [line for line in text.splitlines()
            if line.startswith(f"-A {SVC_X} ") and " -j KUBE-SEP-" in line]


def affinity(name: str) -> str:
    return (f'-A {SVC_X} -m comment --comment "ns/svc:p -> {IPS[name]}:80" -m recent --name '
            f"{sep(name)} --rcheck --seconds 10800 --reap -j {sep(name)}")


STAT = " -m statistic --mode random --probability "


def balance(name: str, probability: str | None) -> str:
    tail = f"{STAT}{probability}" if probability else ""
    return f'-A {SVC_X} -m comment --comment "ns/svc:p -> {IPS[name]}:80"{tail} -j {sep(name)}'


def test_all_ready_is_kube_proxys_three_way_split() -> None:
    assert svc_x(rendered()) == [affinity("A"), affinity("B"), affinity("C"),
                                 balance("A", "0.3333333333"), balance("B", "0.5000000000"),
                                 balance("C", None)]


def test_an_unready_endpoint_leaves_the_others_renumbered() -> None:
    assert svc_x(rendered({"A"})) == [affinity("B"), affinity("C"),
                                      balance("B", "0.5000000000"), balance("C", None)]


def test_the_last_endpoint_unready_makes_the_one_before_it_last() -> None:
    out = svc_x(rendered({"C"}))
    assert out[2:] == [balance("A", "0.5000000000"), balance("B", None)]
    assert out[:2] == [affinity("A"), affinity("B")]


def test_the_unready_endpoint_chain_is_not_written() -> None:
    # kube-proxy writes KUBE-SEP chains for reachable endpoints only; podnet-iptables deletes
    # the one left behind as a stale chain (tests/test_readiness_tools.py, end to end)
    out = rendered({"A"})
    assert sep("A") not in out
    assert f":{sep('B')} - [0:0]" in out.splitlines()


@pytest.mark.parametrize("unready", [{"A", "B", "C"}, set(), {"D"}, {"OTHER"}],
                         ids=["all-of-svc", "none", "the-only-one-of-one", "unknown"])
def test_nothing_changes_without_a_ready_endpoint_left_or_an_unready_one(unready: set[str]
                                                                         ) -> None:
    # all unready fails open (proxier._usable): the Service keeps them all, as before
    assert rendered(unready) == rendered()


def test_other_chains_are_untouched() -> None:
    out, full = rendered({"B"}), rendered()
    assert sep("B") not in out
    assert [x for x in out.splitlines() if not x.startswith(f"-A {SVC_X} ")] == [
        x for x in full.splitlines() if not x.startswith(f"-A {SVC_X} ") and sep("B") not in x]


def test_categorize_keeps_ready_endpoints_and_fails_open() -> None:
    svc = services({"A"})[0]
    cluster, local, reachable, has_any = proxier.categorize(svc, "me")
    assert [e.ip for e in cluster] == [IPS["B"], IPS["C"]] and local == [] and has_any
    assert reachable == cluster
    svc = services({"A", "B", "C"})[0]
    cluster, _, reachable, has_any = proxier.categorize(svc, "me")
    assert [e.ip for e in cluster] == list(IPS.values()) and reachable == cluster and has_any


def local_service(*eps: Endpoint) -> ServicePort:
    return ServicePort(namespace="ns", name="loc", port_name="p", protocol="TCP",
                       cluster_ip="10.96.0.12", port=80, node_port=30012, external_local=True,
                       endpoints=eps)


def test_local_policy_falls_back_on_its_own_local_endpoints() -> None:
    # this node's only endpoint is unready while another node's is ready: the cluster chain
    # takes the ready one, the local chain keeps the unready local one (fails open on its own,
    # as kube-proxy's fallback is decided for cluster and local apart)
    here = Endpoint("10.0.1.1", 80, "me", False, pod="ns/here")
    there = Endpoint("10.0.2.1", 80, "other", True, pod="ns/there")
    cluster, local, reachable, has_any = proxier.categorize(local_service(here, there), "me")
    assert cluster == [there] and local == [here] and reachable == [there, here] and has_any
    chains = kubeproxy.chains("ns", "loc", "p", "TCP")
    text = proxier.render([local_service(here, there)], OPTS)
    svl = [x for x in text.splitlines() if x.startswith(f"-A {chains['svl']} -m comment")]
    svc = [x for x in text.splitlines()
           if x.startswith(f"-A {chains['svc']} ") and "-j KUBE-SEP-" in x]
    assert len(svl) == 1 and svl[0].endswith("10.0.1.1:80\" -j "
                                             + kubeproxy.endpoint_chain("ns", "loc", "p", "TCP",
                                                                        "10.0.1.1", 80))
    assert len(svc) == 1 and "10.0.2.1:80" in svc[0]


def test_local_policy_with_a_ready_local_endpoint_leaves_the_unready_one_out() -> None:
    ready = Endpoint("10.0.1.1", 80, "me", True, pod="ns/a")
    unready = Endpoint("10.0.1.2", 80, "me", False, pod="ns/b")
    _, local, reachable, _ = proxier.categorize(local_service(ready, unready), "me")
    assert local == [ready] and reachable == [ready]


def test_a_service_with_no_endpoints_still_rejects() -> None:
    text = proxier.render([local_service()], OPTS)
    assert '"ns/loc:p has no endpoints"' in text and "-j REJECT" in text


def test_the_input_round_trips_through_json() -> None:
    svcs = [*services(), local_service(Endpoint("10.0.1.1", 80, "me", pod="ns/a")),
            ServicePort(namespace="ns", name="lb", port_name="", protocol="UDP",
                        cluster_ip="10.96.0.13", port=53, lb_ips=("192.168.56.240",),
                        source_ranges=("192.168.56.0/24",), external_ips=("192.168.56.99",),
                        health_check_node_port=31000, internal_local=True)]
    data = json.loads(json.dumps(proxier.rules_input(svcs, OPTS)))
    assert all("ready" not in e for s in data["services"] for e in s["endpoints"])
    back, opts = proxier.from_input(data)
    assert back == svcs and opts == OPTS
    assert proxier.rules_file(back, opts) == proxier.rules_file(svcs, OPTS)


def test_from_input_marks_a_pods_endpoints_in_every_service_unready() -> None:
    # one pod backing two Service ports: both lose it
    both = [ServicePort(namespace="ns", name=n, port_name="p", protocol="TCP",
                        cluster_ip=ip, port=80,
                        endpoints=(Endpoint("10.0.0.1", 8080, "me", pod="ns/a"),
                                   Endpoint("10.0.0.2", 8080, "me", pod="ns/b")))
            for n, ip in (("x", "10.96.0.20"), ("y", "10.96.0.21"))]
    data = proxier.rules_input(both, OPTS)
    back, _ = proxier.from_input(data, {("ns/a", "10.0.0.1")})
    assert [[e.ready for e in s.endpoints] for s in back] == [[False, True], [False, True]]
    # the same pod at another IP (it came back with a new one) is a new endpoint: ready
    back, _ = proxier.from_input(data, {("ns/a", "10.0.0.9")})
    assert all(e.ready for s in back for e in s.endpoints)


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda d: d.update(version=0), "version: 0 is not 1"),
    (lambda d: d["options"].pop("node_ip"), "options: TypeError:"),
    (lambda d: d["services"][1].pop("cluster_ip"), "services[1]: TypeError:"),
    (lambda d: d["services"][0]["endpoints"][0].pop("ip"), "services[0]: KeyError: 'ip'"),
], ids=["version", "options", "service-field", "endpoint-field"])
def test_from_input_names_what_is_wrong(mutate: Callable[[dict[str, Any]], object],
                                        message: str) -> None:
    data = json.loads(json.dumps(proxier.rules_input(services(), OPTS)))
    mutate(data)
    with pytest.raises(ValueError) as caught:
        proxier.from_input(data)
    assert str(caught.value).startswith(message), caught.value
    assert "converge again" in str(caught.value)
