"""The outage probe (podnet/outage.py): its script against a real server on loopback, and how
its output is read."""

from __future__ import annotations

import http.server
import sys
import threading
from collections.abc import Iterator

import pytest

from podnet import outage


def test_summary_finds_the_longest_stretch_from_a_failure_to_a_success() -> None:
    text = "\n".join([
        "0.000 ok a", "0.100 fail timeout", "0.200 fail timeout", "0.300 ok b",
        "0.400 ok a", "0.500 fail ConnectionRefusedError", "1.100 fail x", "1.700 ok b",
        "garbage line",
    ])
    got = outage.summary(text)
    assert (got.requests, got.failed) == (8, 4)
    assert got.first_failure == pytest.approx(0.1)
    assert got.longest == pytest.approx(1.2)  # 0.5 -> 1.7
    assert got.recovered == pytest.approx(1.7)
    assert got.answers == {"a": 2, "b": 2}
    assert "outage 1.20 s" in str(got)


def test_a_failure_that_never_recovers_lasts_to_the_end() -> None:
    got = outage.summary("0.0 ok a\n0.5 fail t\n0.6 fail t", end=3.0)
    assert got.recovered is None and got.longest == pytest.approx(2.5)
    assert str(outage.summary("0.0 ok a\n0.1 ok a")) == "2 requests, none failed"


class Hostname(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"pod-a\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[http.server.ThreadingHTTPServer]:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hostname)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def test_failover_measures_what_the_client_saw_while_the_server_was_cut(
        server: http.server.ThreadingHTTPServer) -> None:
    port = server.server_address[1]
    paused = threading.Event()
    original = Hostname.do_GET

    def cut(down: bool) -> None:
        if down:
            paused.set()
        else:
            paused.clear()

    def maybe(self: Hostname) -> None:
        if paused.is_set():  # a cut link: the request gets no answer (the client times out)
            self.close_connection = True
            return
        original(self)

    Hostname.do_GET = maybe  # type: ignore[method-assign]
    try:
        got = outage.failover([sys.executable, "-c", "import os, sys; "
                               "os.execvp('sh', ['sh', '-c', sys.argv[1]])"],
                              "127.0.0.1", port, cut, lead=0.6, hold=1.0, tail=0.6)
    finally:
        Hostname.do_GET = original  # type: ignore[method-assign]
    assert got.result.answers.get("pod-a", 0) >= 8, got  # before and after the cut
    assert got.during.failed >= 5 and not got.failed_over, got  # never recovered while cut
    assert got.result.recovered is not None and got.result.recovered >= got.back_at - 0.15, got


def test_the_last_failure_is_counted_from_the_cut() -> None:
    text = "start\n0.100 ok a\n2.100 fail TimeoutError\n2.200 ok b\n6.600 fail OSError\n7.0 ok c\n"
    assert outage.last_failure(text, 2.0) == pytest.approx(4.6)
    assert outage.last_failure("start\n0.1 ok a\n", 2.0) is None
