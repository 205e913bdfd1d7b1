"""podnet.lab.ping_answered: the "no route into the lab" check reads ping right.

verify/test_lab.py pings a lab host from the machine's own network namespace and expects no
answer. That proves something only if a failed ping means "not reached": these are iputils'
real outputs, and a ping that could not run must raise instead of passing the check.
"""

from __future__ import annotations

import subprocess

import pytest

from podnet import lab

ADDRESS = "192.168.56.11"

ANSWERED = f"""\
PING {ADDRESS} ({ADDRESS}) 56(84) bytes of data.
64 bytes from {ADDRESS}: icmp_seq=1 ttl=64 time=0.041 ms

--- {ADDRESS} ping statistics ---
1 packets transmitted, 1 received, 0% packet loss, time 0ms
rtt min/avg/max/mdev = 0.041/0.041/0.041/0.000 ms
"""
TIMED_OUT = f"""\
PING {ADDRESS} ({ADDRESS}) 56(84) bytes of data.

--- {ADDRESS} ping statistics ---
1 packets transmitted, 0 received, 100% packet loss, time 0ms

"""
HOST_UNREACHABLE = f"""\
PING {ADDRESS} ({ADDRESS}) 56(84) bytes of data.
From 192.0.2.1 icmp_seq=1 Destination Host Unreachable

--- {ADDRESS} ping statistics ---
1 packets transmitted, 0 received, +1 errors, 100% packet loss, time 0ms
"""


@pytest.mark.parametrize(
    ("rc", "output", "answered"),
    [
        (0, ANSWERED, True),
        (1, TIMED_OUT, False),
        (1, HOST_UNREACHABLE, False),
        (2, "ping: connect: Network is unreachable\n", False),
        (2, "ping: connect: No route to host\n", False),
    ],
    ids=["answered", "timed-out", "host-unreachable", "no-route", "no-route-to-host"],
)
def test_ping_outcome_is_read_from_exit_code_and_output(rc: int, output: str,
                                                        answered: bool) -> None:
    assert lab.ping_answered(ADDRESS, rc, output) is answered


@pytest.mark.parametrize(
    ("rc", "output", "needle"),
    [
        # could not ping at all: these must not count as "the lab is not reached"
        (2, "ping: socktype: SOCK_RAW\nping: socket: Operation not permitted\n", "exit 2"),
        (2, f"ping: {ADDRESS}x: Name or service not known\n", "Name or service"),
        (127, "sh: 1: ping: not found\n", "exit 127"),
        (1, "", "exit 1"),
        # an exit 0 must be an answer from the address itself, not from .111
        (0, ANSWERED.replace(f"from {ADDRESS}:", f"from {ADDRESS}1:"), "without an answer"),
    ],
    ids=["no-permission", "bad-name", "not-installed", "silent-failure", "other-address"],
)
def test_a_ping_that_could_not_run_raises(rc: int, output: str, needle: str) -> None:
    with pytest.raises(lab.LabError, match=needle):
        lab.ping_answered(ADDRESS, rc, output)


def test_ping_from_here_runs_one_echo_and_reads_it(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []

    def fake(cmd: list[str], **_: object) -> subprocess.CompletedProcess[str]:
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 1, TIMED_OUT, "")

    monkeypatch.setattr(lab.subprocess, "run", fake)
    assert lab.ping_from_here(ADDRESS) is False
    assert calls == [["ping", "-c1", "-W1", ADDRESS]]


def test_ping_from_here_without_ping_says_what_to_install(monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    def missing(cmd: list[str], **_: object) -> subprocess.CompletedProcess[str]:
        raise FileNotFoundError(2, "No such file or directory", cmd[0])

    monkeypatch.setattr(lab.subprocess, "run", missing)
    with pytest.raises(lab.LabError, match="install iputils-ping"):
        lab.ping_from_here(ADDRESS)
