"""podnet.browser on real pages in headless Chromium: a drawn picture, a blank one, console
errors, a fetch (blocked before anything is sent), a missing row; and its PNG decoder on images
built here with every row filter."""

from __future__ import annotations

import itertools
import socket
import struct
import tempfile
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from podnet import browser

PRINCIPLES = ("hosts", "flat network")
# rows in a table: an HTML parser drops a <tr> outside one
ROWS = "<table>{}</table>".format(
    "".join(f'<tr data-principle="{p}"><td>{p}</td></tr>' for p in PRINCIPLES))
CIRCLE = ('<div id="cluster"><svg width="300" height="150">'
          '<circle cx="150" cy="75" r="60" fill="#1f77b4"/></svg></div>')


@pytest.fixture
def temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where Chromium's profile goes, to see it removed; the test skips without Chromium."""
    if browser.chromium() is None:
        pytest.skip(f"no headless Chromium to look at pages with: {browser.INSTALL}")
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    return tmp_path / "tmp"


@pytest.fixture
def look_at(tmp_path: Path, temp: Path) -> Callable[[str], browser.Look]:
    """Look at a page with this body."""
    def look_at(body: str) -> browser.Look:
        html = tmp_path / "page.html"
        html.write_text(f'<!doctype html><html><head><meta charset="utf-8"><title>t</title>'
                        f"</head><body>{body}</body></html>")
        return browser.look(html, tmp_path / "page.png", timeout=30)
    return look_at


def test_a_drawn_picture_with_every_row_has_no_problems(
        look_at: Callable[[str], browser.Look], temp: Path) -> None:
    seen = look_at(f"{CIRCLE}{ROWS}")
    assert browser.problems(seen, PRINCIPLES) == []
    assert seen.picture_box == (8.0, 8.0, 300.0, 150.0)  # inside the body's 8 px margin
    assert 0.2 < seen.picture_nonblank < 0.3  # a circle of radius 60 in 300x150
    assert seen.principles == list(PRINCIPLES)
    shot = browser.decode_png(seen.screenshot.read_bytes())
    assert shot.width == 1400
    assert list(temp.iterdir()) == []  # the profile is gone with the browser


def test_an_empty_picture_is_blank(look_at: Callable[[str], browser.Look]) -> None:
    seen = look_at(f'<div id="cluster"><svg width="300" height="150"></svg></div>{ROWS}')
    assert seen.picture_nonblank == 0
    [problem] = browser.problems(seen, PRINCIPLES)
    assert problem.startswith("the picture at (8, 8), 300x150 px, is blank: 0.0% of it differs")


def test_no_picture_and_a_missing_row_are_named(look_at: Callable[[str], browser.Look]) -> None:
    seen = look_at(f'<div id="cluster"><p>drawing soon</p></div>{ROWS}')
    assert seen.picture_box is None
    assert seen.picture_nonblank == 0
    assert browser.problems(seen, [*PRINCIPLES, "service DNS"]) == [
        f"the page has no picture: nothing matches its selector (see {seen.screenshot})",
        "the page has no row for the principle 'service DNS' (no data-principle='service DNS')",
    ]


def test_console_error_is_a_problem(look_at: Callable[[str], browser.Look]) -> None:
    seen = look_at(f'{CIRCLE}{ROWS}<script>console.log("fine"); console.error("x");</script>')
    page = seen.screenshot.with_suffix(".html").as_uri()
    assert seen.console_errors == [f"console.error: x (at {page}:1)"]
    assert browser.problems(seen, PRINCIPLES) == [
        f"the browser console shows an error: {seen.console_errors[0]}"]


def test_a_thrown_exception_is_a_console_error(look_at: Callable[[str], browser.Look]) -> None:
    seen = look_at(f'{CIRCLE}{ROWS}<script>throw new Error("boom");</script>')
    [error] = seen.console_errors
    assert error.startswith("Uncaught Error: boom (at file://")
    assert browser.problems(seen, PRINCIPLES) != []


def test_a_fetch_is_reported_and_never_sent(look_at: Callable[[str], browser.Look]) -> None:
    """The same block stops the TEST-NET address and a loopback port this test listens on: the
    listener proves nothing was sent."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        local = f"http://127.0.0.1:{listener.getsockname()[1]}/y.png"
        seen = look_at(f'{CIRCLE}{ROWS}<img src="http://192.0.2.1/x.png"><img src="{local}">')
        with pytest.raises(BlockingIOError):
            listener.accept()
    assert seen.requests == ["http://192.0.2.1/x.png", local]
    found = browser.problems(seen, PRINCIPLES)
    assert "the page fetches http://192.0.2.1/x.png: it must be self-contained" in found
    assert any("ERR_BLOCKED_BY_CLIENT" in error for error in seen.console_errors)


def test_another_local_file_is_a_fetch_too(look_at: Callable[[str], browser.Look],
                                           tmp_path: Path) -> None:
    """Self-contained means the one file: a picture beside it is not part of the page."""
    (tmp_path / "beside.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"/>')
    seen = look_at(f'{CIRCLE}{ROWS}<img src="beside.svg">')
    assert seen.requests == [(tmp_path / "beside.svg").as_uri()]
    assert browser.problems(seen, PRINCIPLES) != []


def test_a_tall_page_is_shot_down_to_the_cap(look_at: Callable[[str], browser.Look]) -> None:
    seen = look_at(f'<div style="height: 3000px"></div>{CIRCLE}<div style="height: 9000px"></div>'
                   f"{ROWS}")
    assert seen.picture_box == (8.0, 3008.0, 300.0, 150.0)
    assert 0.2 < seen.picture_nonblank < 0.3
    assert seen.principles == list(PRINCIPLES)  # the rows are in the page below the screenshot
    width, height = struct.unpack(">II", seen.screenshot.read_bytes()[16:24])
    assert (width, height) == (1400, browser.MAX_HEIGHT)


def test_a_missing_page_and_a_bad_selector_are_clear_errors(temp: Path, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=r"could not open .*gone\.html: net::ERR_FILE_NOT_FOUND"):
        browser.look(tmp_path / "gone.html", tmp_path / "page.png")
    html = tmp_path / "page.html"
    html.write_text(CIRCLE)
    with pytest.raises(ValueError, match=r"selectors 'svg\[' .* is not a valid selector"):
        browser.look(html, tmp_path / "page.png", picture="svg[")


def test_a_look_that_takes_too_long_times_out(temp: Path, tmp_path: Path) -> None:
    html = tmp_path / "page.html"
    html.write_text(CIRCLE)
    with pytest.raises(TimeoutError, match=r"Chromium took over 0\.001 s looking at .*page\.html"):
        browser.look(html, tmp_path / "page.png", timeout=0.001)
    assert list(temp.iterdir()) == []


def test_no_chromium_names_the_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(browser, "BINARIES", ("/nonexistent/chromium-headless-shell",))
    assert browser.chromium() is None
    with pytest.raises(RuntimeError, match="apt-get install chromium-headless-shell"):
        browser.look(tmp_path / "page.html", tmp_path / "page.png")


def filtered(rows: Sequence[bytes], channels: int, filters: Sequence[int]) -> bytes:
    """PNG pixel data: each row filtered with the next of `filters` as the spec defines them."""
    raw, prev = bytearray(), bytes(len(rows[0]))
    for row, kind in zip(rows, itertools.cycle(filters)):
        raw.append(kind)
        for i, value in enumerate(row):
            a = row[i - channels] if i >= channels else 0
            b = prev[i]
            c = prev[i - channels] if i >= channels else 0
            p = a + b - c
            paeth = min((abs(p - a), 0, a), (abs(p - b), 1, b), (abs(p - c), 2, c))[2]
            raw.append((value - (0, a, b, (a + b) // 2, paeth)[kind]) & 0xFF)
        prev = row
    return bytes(raw)


def encode_png(raw: bytes, width: int, height: int, channels: int, depth: int = 8,
               colour: int | None = None, interlace: int = 0) -> bytes:
    """A PNG of this pixel data, split over two IDAT chunks."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body)))

    data = zlib.compress(raw)
    colour = {3: 2, 4: 6}[channels] if colour is None else colour
    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, interlace)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data[:10])
            + chunk(b"IDAT", data[10:]) + chunk(b"IEND", b""))


@pytest.mark.parametrize("channels", [3, 4])
@pytest.mark.parametrize("first", range(5))
def test_decode_png_undoes_every_filter(channels: int, first: int) -> None:
    """Every filter on the first row (no row above) and after each other one; bytes near 0 and
    255 make the sums wrap."""
    width, height = 7, 12
    values = (0, 1, 2, 127, 128, 200, 254, 255)
    rows = [bytes(values[(x * 5 + y * 3 + first) % 8] for x in range(width * channels))
            for y in range(height)]
    filters = [(first + n) % 5 for n in range(5)] + [4, 3, 2, 1, 0, 4, 4]
    png = browser.decode_png(encode_png(filtered(rows, channels, filters), width, height,
                                        channels))
    assert (png.width, png.height, png.channels) == (width, height, channels)
    assert png.rows == rows


@pytest.mark.parametrize(("depth", "colour", "interlace"), [(16, 2, 0), (8, 3, 0), (8, 0, 0),
                                                            (8, 6, 1)])
def test_decode_png_refuses_what_chromium_does_not_write(depth: int, colour: int,
                                                         interlace: int) -> None:
    data = encode_png(bytes(7), 2, 1, 3, depth, colour, interlace)
    with pytest.raises(ValueError, match=f"only 8-bit RGB or RGBA non-interlaced PNGs .* bit depth "
                                         f"{depth}, colour type {colour}, interlace {interlace}"):
        browser.decode_png(data)


def test_decode_png_refuses_an_unknown_filter_and_a_corrupt_chunk() -> None:
    with pytest.raises(ValueError, match="row filter 5 does not exist"):
        browser.decode_png(encode_png(b"\x05" + bytes(6), 2, 1, 3))
    data = bytearray(encode_png(bytes(7), 2, 1, 3))
    data[20] ^= 1  # in IHDR
    with pytest.raises(ValueError, match="chunk b'IHDR' at byte 8 is cut short or corrupt"):
        browser.decode_png(bytes(data))


def test_nonblank_counts_what_differs_from_the_commonest_colour() -> None:
    white, blue = b"\xff\xff\xff", b"\x1f\x77\xb4"
    png = browser.Png(2, 2, 3, [white + white, blue + white])
    assert browser.nonblank_fraction(png) == 0.25
