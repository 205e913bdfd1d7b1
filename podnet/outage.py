"""Measuring an outage from a client's side: a request every ``interval`` seconds, each on a
new connection (TCP: a new source port, so an L4 hash may pick another node each time), and
how long requests failed. verify and bench run ``SCRIPT`` on an outside host (it needs only
python3) and read its output with :func:`summary`.

The script prints one line per request: ``<seconds since start> <ok|fail> <answer or error>``.
"""

from __future__ import annotations

import shlex
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

# failover's pace: a request every INTERVAL seconds, each given up after TIMEOUT (requests go
# one at a time, so a lost one costs TIMEOUT: the outage is measured to about that much)
INTERVAL = 0.1
TIMEOUT = 0.5

# run as: python3 -c SCRIPT tcp|udp ADDRESS PORT SECONDS INTERVAL TIMEOUT
SCRIPT = r"""
import socket, sys, time
proto, host, port, seconds, interval, timeout = sys.argv[1:7]
port, seconds, interval, timeout = int(port), float(seconds), float(interval), float(timeout)
print("start", flush=True)
start = time.monotonic()
n = 0
while True:
    due = start + n * interval
    now = time.monotonic()
    if due - start > seconds:
        break
    if due > now:
        time.sleep(due - now)
    sent = time.monotonic() - start
    try:
        if proto == "udp":
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.settimeout(timeout)
            s.sendto(b"hostname", (host, port))
            answer = s.recvfrom(999)[0].decode().strip()
        else:
            s = socket.create_connection((host, port), timeout=timeout)
            s.settimeout(timeout)
            s.sendall(b"GET /hostname HTTP/1.0\r\nHost: x\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            head, _, body = data.decode().partition("\r\n\r\n")
            if " 200 " not in head.split("\r\n")[0]:
                raise OSError(head.split("\r\n")[0])
            answer = body.strip()
        s.close()
        print(f"{sent:.3f} ok {answer}", flush=True)
    except OSError as exc:
        print(f"{sent:.3f} fail {type(exc).__name__}", flush=True)
    n += 1
"""


@dataclass(frozen=True)
class Outage:
    requests: int
    failed: int
    first_failure: float | None  # seconds since the start
    recovered: float | None  # the first success after the last failure
    longest: float  # seconds from a failure to the next success, the longest such stretch
    answers: dict[str, int]  # who answered, how often

    def __str__(self) -> str:
        if not self.failed:
            return f"{self.requests} requests, none failed"
        return (f"{self.requests} requests, {self.failed} failed; outage {self.longest:.2f} s "
                f"(first failure at {self.first_failure:.2f} s, recovered at "
                f"{self.recovered if self.recovered is None else round(self.recovered, 2)} s)")


def summary(text: str, end: float | None = None) -> Outage:
    """The outage in SCRIPT's output: the longest stretch from a failed request to the next
    success (to ``end`` when none came)."""
    rows = []
    for line in text.splitlines():
        parts = line.split(" ", 2)
        if len(parts) >= 2 and parts[1] in ("ok", "fail"):
            rows.append((float(parts[0]), parts[1] == "ok", parts[2] if len(parts) > 2 else ""))
    answers: dict[str, int] = {}
    longest, failed_since, first, recovered = 0.0, None, None, None
    for t, ok, answer in rows:
        if ok:
            answers[answer] = answers.get(answer, 0) + 1
            if failed_since is not None:
                longest = max(longest, t - failed_since)
                recovered, failed_since = t, None
        elif failed_since is None:
            failed_since = t
            first = t if first is None else first
    if failed_since is not None:
        last = end if end is not None else (rows[-1][0] if rows else 0.0)
        longest = max(longest, last - failed_since)
        recovered = None
    return Outage(len(rows), sum(1 for r in rows if not r[1]), first, recovered, longest,
                  answers)


def last_failure(text: str, since: float) -> float | None:
    """Seconds from ``since`` (on SCRIPT's clock) to the last failed request in its output;
    None when none failed."""
    fails = [t for t in (_row(line) for line in text.splitlines()
                         if len(line.split()) >= 2 and line.split()[1] == "fail")
             if t is not None]
    return max(fails) - since if fails else None


@dataclass(frozen=True)
class Failover:
    """A client's requests while something (a node's link) was cut and put back."""

    result: Outage  # the whole run
    during: Outage  # the requests sent while it was cut
    cut_at: float  # seconds since the start
    back_at: float

    @property
    def failed_over(self) -> bool:
        """Requests succeeded again while the cut lasted (the traffic moved on), or never
        failed at all."""
        return self.during.recovered is not None or not self.during.failed

    def __str__(self) -> str:
        return (f"cut at {self.cut_at:.1f} s, back at {self.back_at:.1f} s; while cut: "
                f"{self.during}; whole run: {self.result}")


def failover(shell: Sequence[str], address: str, port: int, cut: Callable[[bool], None],
             lead: float = 2.0, hold: float = 8.0, tail: float = 1.0) -> Failover:
    """Run SCRIPT (TCP, a request every INTERVAL, TIMEOUT each) through ``shell`` (an ssh
    command line to the client) against ``address:port``; ``lead`` seconds in, ``cut(True)``
    cuts, ``hold`` seconds later ``cut(False)`` puts it back (also when anything fails)."""
    seconds = lead + hold + tail
    command = shlex.join(["python3", "-c", SCRIPT, "tcp", address, str(port), str(seconds),
                          str(INTERVAL), str(TIMEOUT)])
    probe = subprocess.Popen([*shell, command], stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, text=True)
    # the script's clock starts when it says so (a loaded machine, or ssh, may take longer to
    # start it than the cut's margins): the cut is timed from there, as its rows are
    first = probe.stdout.readline() if probe.stdout else ""
    started = time.monotonic()
    cut_at = lead
    try:
        time.sleep(lead)
        cut_at = time.monotonic() - started  # a request sent from here on may meet the cut
        cut(True)
        time.sleep(hold)
    finally:
        cut(False)
    back_at = time.monotonic() - started
    out, _ = probe.communicate(timeout=seconds + 30)
    out = first + out
    rows = [line for line in out.splitlines() if _row(line) is not None]
    window = "\n".join(line for line in rows
                       if cut_at - INTERVAL <= (_row(line) or 0.0) < back_at - 0.2)
    return Failover(summary(out, end=seconds), summary(window, end=back_at), cut_at, back_at)


def _row(line: str) -> float | None:
    try:
        return float(line.split(" ", 1)[0])
    except ValueError:
        return None
