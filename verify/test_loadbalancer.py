"""LoadBalancer: the Service's address answers from outside the cluster, the way the lab's
podnet_lb_mode makes it reachable (cloud: the lb host hands each flow to a healthy node; l2: one
node answers for the address). The proofs are in lbchecks.py; test_lb_lifecycle.py runs them
again in the other mode and cuts a node off."""

from __future__ import annotations

import lbchecks
import pytest
import targets
from conftest import params, plan, selected

pytestmark = pytest.mark.principle("LoadBalancer")


@pytest.mark.quick
@pytest.mark.parametrize(("service", "port_name", "protocol"), [
    pytest.param(s, p, t, id=f"{s}:{p}/{t}") for s, p, t in selected(targets.lb_ports) or []
] or [pytest.param(None, None, None, id="none", marks=pytest.mark.skip(
    reason=str(targets.NotInPlan(targets.LB_PORT))))])
def test_every_load_balancer_port_answers_from_outside(service: str, port_name: str,
                                                       protocol: str) -> None:
    lbchecks.every_port_answers(service, port_name, protocol)


def test_cluster_policy_spreads_connections_over_every_endpoint() -> None:
    lbchecks.cluster_policy_spreads()


@pytest.mark.parametrize("service", params(
    [s.key for s in selected(targets.lb_local_services) or []], targets.LB_LOCAL))
def test_local_policy_keeps_the_client_address(service: str) -> None:
    lbchecks.local_policy_keeps_the_client_address(service)


def test_only_nodes_with_a_local_endpoint_get_the_traffic() -> None:
    lbchecks.only_nodes_with_a_local_endpoint_get_traffic(plan().settings.lb_mode)


def test_source_ranges_admit_one_client_and_refuse_another() -> None:
    lbchecks.source_ranges_admit_and_refuse()

