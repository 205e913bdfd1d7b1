"""Address arithmetic: properties over the whole IPv4 space (hypothesis)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from podnet import addresses
from podnet.allocate import Pool, band_offset


@st.composite
def parent_and_prefix(draw: st.DrawFn, longer: int = 0) -> tuple[IPv4Network, int]:
    """A parent network and a prefix at least ``longer`` bits longer (0: the parent itself
    may be the one subnet)."""
    plen = draw(st.integers(8, 28))
    base = draw(st.integers(0, 2**32 - 1)) >> (32 - plen) << (32 - plen)
    prefix = draw(st.integers(plen + longer, min(plen + 12, 30)))
    return IPv4Network((base, plen)), prefix


@given(parent_and_prefix(), st.data())
def test_nth_subnet_is_inside_and_inverts(pp: tuple[IPv4Network, int], data: st.DataObject) -> None:
    parent, prefix = pp
    count = addresses.subnet_count(parent, prefix)
    index = data.draw(st.integers(0, count - 1))
    sub = addresses.nth_subnet(parent, prefix, index)
    assert sub.prefixlen == prefix
    assert sub.subnet_of(parent)
    assert addresses.subnet_index(parent, sub) == index


# split at least in two: a parent that is its one subnet has no pair to compare
@given(parent_and_prefix(longer=1), st.data())
def test_distinct_indexes_give_disjoint_subnets(pp: tuple[IPv4Network, int],
                                                data: st.DataObject) -> None:
    parent, prefix = pp
    count = addresses.subnet_count(parent, prefix)
    a, b = data.draw(st.lists(st.integers(0, count - 1), min_size=2, max_size=2, unique=True))
    event("neighbours" if abs(a - b) == 1 else "apart")
    assert not addresses.nth_subnet(parent, prefix, a).overlaps(
        addresses.nth_subnet(parent, prefix, b))


@given(parent_and_prefix())
def test_index_past_the_end_is_refused(pp: tuple[IPv4Network, int]) -> None:
    parent, prefix = pp
    with pytest.raises(IndexError):
        addresses.nth_subnet(parent, prefix, addresses.subnet_count(parent, prefix))


def test_subnet_count_edges() -> None:
    net = IPv4Network("10.244.0.0/16")
    assert addresses.subnet_count(net, 24) == 256
    assert addresses.subnet_count(net, 15) == 0
    assert addresses.subnet_count(net, 33) == 0
    with pytest.raises(ValueError, match="not inside"):
        addresses.subnet_index(net, IPv4Network("10.245.0.0/24"))


@given(st.integers(0, 2**32 - 1))
def test_dns_forms_of_an_address(value: int) -> None:
    ip = IPv4Address(value)
    assert IPv4Address(addresses.dashed(ip).replace("-", ".")) == ip
    rev = addresses.reverse_name(ip)
    assert rev.endswith(".in-addr.arpa")
    assert IPv4Address(".".join(reversed(rev.removesuffix(".in-addr.arpa").split(".")))) == ip


@given(st.integers(8, 32))
def test_host_range_and_gateway(plen: int) -> None:
    net = IPv4Network(("10.0.0.0", plen))
    first, last = addresses.host_range(net)
    assert int(net.network_address) <= first <= last <= int(net.broadcast_address)
    if plen < 31:
        assert addresses.gateway(net) == IPv4Address(first)


@given(st.integers(1, 300), st.sets(st.integers(0, 299)), st.integers(0, 10**6))
def test_probe_finds_a_free_slot_iff_one_exists(size: int, taken: set[int], start: int) -> None:
    found = addresses.probe(start % size, size, lambda s: s not in taken)
    free = set(range(size)) - taken
    if free:
        assert found in free
    else:
        assert found is None


@pytest.mark.parametrize(("size", "offset"), [(14, 0), (16, 0), (254, 16), (4094, 255),
                                              (65534, 256), (2**20 - 2, 256)])
def test_clusterip_static_band_follows_kep_3070(size: int, offset: int) -> None:
    # min(max(16, size/16), 256): /24 -> 16, /20 -> 255 (4094/16), /16 and /12 -> 256
    assert band_offset(size, 16, 256, 16) == offset


def test_nodeport_static_band() -> None:
    assert band_offset(2768, 16, 128, 32) == 86


@st.composite
def size_and_band(draw: st.DrawFn, most: int) -> tuple[int, int]:
    """A range split in a static band (at least one slot) and a dynamic band above it (at least
    one): with either empty, "above the band" is true of every slot and checks nothing. The
    pools without one are tested on their own below."""
    size = draw(st.integers(2, most))
    return size, draw(st.integers(1, size - 1))


@given(size_and_band(400), st.text(min_size=1, max_size=20))
def test_hashed_slots_prefer_the_dynamic_band(sb: tuple[int, int], key: str) -> None:
    size, band = sb
    pool = Pool(size, band)
    slot = pool.hashed(key)
    event("one dynamic slot" if band == size - 1 else "one static slot" if band == 1 else "more")
    assert slot is not None and 0 <= slot < size
    assert slot >= pool.static_band


@given(st.integers(1, 400), st.text(min_size=1, max_size=20))
def test_a_pool_without_a_static_band_hashes_anywhere_in_it(size: int, key: str) -> None:
    slot = Pool(size, 0).hashed(key)
    assert slot is not None and 0 <= slot < size


@given(st.integers(1, 400), st.text(min_size=1, max_size=20))
def test_a_pool_that_is_all_static_band_hashes_to_its_first_free_slot(size: int,
                                                                       key: str) -> None:
    # no dynamic band to hash into: the fallback takes the first free slot
    pool = Pool(size, size)
    assert pool.hashed(key) == 0
    pool.claim(0, "someone")
    assert pool.hashed(key) == (1 if size > 1 else None)


def test_parse_errors() -> None:
    with pytest.raises(ValueError, match="not an IP address"):
        addresses.parse_address("x")
    with pytest.raises(ValueError, match="IPv6"):
        addresses.parse_address("::1")
    assert addresses.stable_hash("a") == addresses.stable_hash("a")
