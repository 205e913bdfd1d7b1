"""The allocator API on its own: each typed answer, the record's holds, the dynamic band and
exhaustion. The model's wording of these answers is tested in test_allocation.py and
test_model_validation.py."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from podnet import allocate
from podnet.allocate import (
    Allocated,
    Full,
    HeldByRecord,
    NotInRange,
    PortRange,
    Reserved,
    SubnetRange,
)


def ports(low: int = 100, high: int = 109, band: int | None = None) -> PortRange:
    return PortRange(low, high, band)


# -- allocate(value, owner) ----------------------------------------------------------------------
@pytest.mark.parametrize("port", [99, 110, -1, 0])
def test_a_value_outside_the_range_is_not_in_range(port: int) -> None:
    assert ports().allocate(port, "a") == NotInRange(port)


def test_the_range_ends_are_inside_it() -> None:
    pool = ports()
    assert pool.allocate(100, "a") is None
    assert pool.allocate(109, "b") is None


def test_an_address_range_refuses_ipv6_and_addresses_beside_it() -> None:
    pool = allocate.cluster_ips(IPv4Network("10.96.0.0/28"))
    for addr in (IPv4Address("10.96.0.0"), IPv4Address("10.96.0.15"), IPv6Address("::1")):
        assert pool.allocate(addr, "a") == NotInRange(addr)
    assert pool.allocate(IPv4Address("10.96.0.14"), "a") is None


def test_a_subnet_range_refuses_a_subnet_of_another_size_or_outside() -> None:
    pool = SubnetRange(IPv4Network("10.244.0.0/22"), 24)
    for net in ("10.244.0.0/25", "10.244.4.0/24", "10.245.0.0/24"):
        assert pool.allocate(IPv4Network(net), "a") == NotInRange(IPv4Network(net))
    assert pool.allocate(IPv4Network("10.244.3.0/24"), "a") is None


def test_a_value_taken_in_this_plan_names_its_holder() -> None:
    pool = ports()
    assert pool.allocate(105, "Service a") is None
    assert pool.allocate(105, "Service b") == Allocated(105, "Service a")


def test_an_owner_may_ask_again_for_a_value_it_holds() -> None:
    # ports of one Service with the same number (TCP and UDP 53) share one NodePort
    pool = ports()
    assert pool.allocate(105, "Service a") is None
    assert pool.allocate(105, "Service a") is None


def test_a_reserved_value_is_refused_to_all_but_its_owner() -> None:
    pool = ports()
    pool.reserve(101, "the DNS port", owner="dns")
    pool.reserve(102, "a host")
    assert pool.allocate(101, "a") == Reserved(101, "the DNS port")
    assert pool.allocate(102, "a") == Reserved(102, "a host")
    assert pool.allocate(101, "dns") is None
    # the owner's claim does not lift the reservation for others
    assert pool.allocate(101, "b") == Reserved(101, "the DNS port")


def test_reserving_outside_the_range_does_nothing() -> None:
    pool = ports()
    pool.reserve(500, "elsewhere")
    assert pool.usable == 10


def test_a_value_the_record_holds_is_refused_to_others() -> None:
    pool = ports()
    pool.hold(104, "default/a")
    assert pool.allocate(104, "Service b") == HeldByRecord(104, "default/a")
    assert pool.allocate(104, "default/a") is None


def test_the_first_holder_the_record_names_keeps_a_value() -> None:
    pool = ports()
    pool.hold(104, "first")
    pool.hold(104, "second")
    assert pool.allocate(104, "x") == HeldByRecord(104, "first")


@pytest.mark.parametrize("recorded", ["not an address", "10.0.0.1", "fd00::1", 5])
def test_a_record_hold_that_is_no_value_of_the_range_holds_nothing(recorded: str | int) -> None:
    pool = allocate.lb_ips(IPv4Network("192.168.56.240/28"))
    pool.hold(recorded, "default/a")
    assert pool.record_holds == {}


def test_refusals_come_in_order_range_reservation_holder_record() -> None:
    pool = ports()
    pool.reserve(101, "reserved")
    pool.hold(101, "recorded")
    pool.hold(102, "recorded")
    assert pool.allocate(102, "a") == HeldByRecord(102, "recorded")
    assert pool.allocate(101, "a") == Reserved(101, "reserved")
    assert pool.allocate(103, "a") is None
    pool.hold(103, "recorded")
    assert pool.allocate(103, "b") == Allocated(103, "a")


# -- keep(recorded, owner) -----------------------------------------------------------------------
def test_keep_gives_back_a_recorded_value_that_is_still_free() -> None:
    pool = allocate.cluster_ips(IPv4Network("10.96.0.0/24"))
    assert pool.keep("10.96.0.77", "a") == IPv4Address("10.96.0.77")
    assert pool.allocate(IPv4Address("10.96.0.77"), "b") == Allocated(IPv4Address("10.96.0.77"),
                                                                      "a")


def test_keep_shares_a_value_with_the_same_owner_only() -> None:
    pool = ports()
    assert pool.keep(105, "Service a") == 105
    assert pool.keep(105, "Service a") == 105
    assert pool.keep(105, "Service b") is None


@pytest.mark.parametrize("recorded", ["bad", "10.96.1.5", "10.96.0.0", "10.96.0.10", 7])
def test_keep_refuses_what_is_no_longer_the_owners(recorded: str | int) -> None:
    pool = allocate.cluster_ips(IPv4Network("10.96.0.0/24"))
    pool.reserve(IPv4Address("10.96.0.10"), "podnet_dns_service_ip", "kube-system/kube-dns")
    assert pool.keep(recorded, "a") is None


def test_keep_is_not_stopped_by_the_records_holds() -> None:
    # the holds are the record's own entries; keep is how their owners take them back
    pool = ports()
    pool.hold(105, "default/a")
    assert pool.keep(105, "Service a") == 105


def test_keep_parses_what_the_record_writes() -> None:
    pool = SubnetRange(IPv4Network("10.244.0.0/16"), 24)
    assert pool.keep("10.244.7.0/24", "n1") == IPv4Network("10.244.7.0/24")
    assert pool.keep("10.244.8.0/25", "n2") is None
    assert pool.keep("10.244.8.1/24", "n3") is None  # host bits set: not a network
    assert ports().keep("105", "a") is None  # ports are recorded as numbers


# -- allocate_next(key, owner) and exhaustion ----------------------------------------------------
def test_first_free_in_request_order_without_a_band() -> None:
    pool = allocate.lb_ips(IPv4Network("192.168.56.240/29"))
    pool.reserve(IPv4Address("192.168.56.241"), "host a")
    got = [pool.allocate_next(f"k{i}", f"o{i}") for i in range(3)]
    assert got == [IPv4Address("192.168.56.240"), IPv4Address("192.168.56.242"),
                   IPv4Address("192.168.56.243")]


@st.composite
def size_and_band(draw: st.DrawFn) -> tuple[int, int]:
    """A range split in a static band (at least one value) and a dynamic band above it (at least
    one): with either empty, "above the band" is true of every value and checks nothing. The
    ranges without one are tested on their own below."""
    size = draw(st.integers(2, 300))
    return size, draw(st.integers(1, size - 1))


@given(size_and_band(), st.text(min_size=1, max_size=20))
def test_hashed_values_land_in_the_dynamic_band(sb: tuple[int, int], key: str) -> None:
    size, band = sb
    pool = PortRange(1000, 999 + size, band)
    got = pool.allocate_next(key, "o")
    event("one dynamic value" if band == size - 1 else "one static value" if band == 1
          else "more")
    assert isinstance(got, int) and 1000 <= got < 1000 + size
    assert got >= 1000 + band


@given(st.integers(1, 300), st.text(min_size=1, max_size=20))
def test_a_range_without_a_static_band_hashes_anywhere_in_it(size: int, key: str) -> None:
    got = PortRange(1000, 999 + size, 0).allocate_next(key, "o")
    assert isinstance(got, int) and 1000 <= got < 1000 + size


@given(st.integers(1, 300), st.text(min_size=1, max_size=20))
def test_a_range_that_is_all_static_band_gives_its_first_free_value(size: int,
                                                                    key: str) -> None:
    pool = PortRange(1000, 999 + size, size)
    assert pool.allocate_next(key, "o") == 1000


def test_hashing_is_stable_and_by_key() -> None:
    first = allocate.node_ports(30000, 32767).allocate_next("default/a:http", "Service a")
    again = allocate.node_ports(30000, 32767).allocate_next("default/a:http", "Service z")
    assert first == again


def test_the_static_band_is_used_when_the_dynamic_band_is_full() -> None:
    pool = PortRange(100, 109, 4)
    dynamic = {pool.allocate_next(f"k{i}", f"o{i}") for i in range(6)}
    assert dynamic == set(range(104, 110))
    assert pool.allocate_next("k6", "o6") in range(100, 104)


@given(st.integers(1, 40), st.integers(0, 40), st.sets(st.integers(0, 39)), st.booleans())
def test_every_usable_value_is_given_once_then_full(size: int, band: int, reserved: set[int],
                                                    hashed: bool) -> None:
    pool = PortRange(0, size - 1, min(band, size) if hashed else None)
    for value in reserved:
        pool.reserve(value, "reserved")
    usable = pool.usable
    assert usable == size - len({v for v in reserved if v < size})
    got = [pool.allocate_next(f"k{i}", f"o{i}") for i in range(usable)]
    assert len(set(got)) == usable and not set(got) & reserved
    assert pool.allocate_next("one more", "o") == Full(usable)


def test_keep_or_allocate_keeps_old_values_before_giving_new_ones() -> None:
    pool = PortRange(100, 102)
    # "new" comes first but may not take 100, which the record keeps for "old"
    got = pool.keep_or_allocate(["new", "old", "gone"], {"old": 100, "gone": 555})
    assert got == {"new": 101, "old": 100, "gone": 102}
    assert list(got) == ["new", "old", "gone"]


def test_keep_or_allocate_answers_full_for_keys_left_without() -> None:
    pool = PortRange(100, 101)
    pool.reserve(100, "reserved")
    assert pool.keep_or_allocate(["a", "b"], {}) == {"a": 101, "b": Full(1)}


# -- the ranges of a cluster ---------------------------------------------------------------------
def test_cluster_ips_cover_the_host_addresses_above_kep_3070s_band() -> None:
    pool = allocate.cluster_ips(IPv4Network("10.96.0.0/12"))
    assert (pool.pool.size, pool.pool.static_band) == (2**20 - 2, 256)
    assert pool.value(0) == IPv4Address("10.96.0.1")


def test_node_ports_band_and_lb_ips_whole_pool() -> None:
    node_ports = allocate.node_ports(30000, 32767)
    assert (node_ports.pool.size, node_ports.pool.static_band) == (2768, 86)
    lb = allocate.lb_ips(IPv4Network("192.168.56.240/28"))
    assert (lb.value(0), lb.value(15), lb.hashed) == (
        IPv4Address("192.168.56.240"), IPv4Address("192.168.56.255"), False)


def test_pod_cidrs_in_order() -> None:
    pool = allocate.pod_cidrs(IPv4Network("10.244.0.0/16"), 24)
    assert pool.allocate(IPv4Network("10.244.0.0/24"), "b") is None
    assert pool.allocate_next("a", "a") == IPv4Network("10.244.1.0/24")
    assert pool.usable == 256
