"""What a person opening a self-contained HTML page would see: headless Chromium loads it, takes
a screenshot and tells what went wrong on the way (console errors, fetches the page must not
make), where the picture is and whether anything is drawn in it, and which principle rows are
there. Only the standard library: Chromium is driven over the DevTools protocol on a pipe
(``--remote-debugging-pipe``) and its PNG screenshot is decoded here.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import signal
import struct
import subprocess
import tempfile
import time
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

INSTALL = "apt-get install chromium-headless-shell"
# the real binary first: /usr/bin/chromium-headless-shell is a shell script that runs it as a
# child (not exec), and a browser must be stopped by its own process id
BINARIES = ("/usr/lib/chromium/chromium-headless-shell", "chromium-headless-shell")
# a page's picture is measured on a screenshot no taller than this
MAX_HEIGHT = 8000
# schemes a self-contained page loads from itself, not from anywhere else
LOCAL = ("data:", "blob:", "about:blank")  # and the page's own file: URL, nothing else
# the page is local and self-contained: nothing the browser does may reach a network either
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
    "--remote-debugging-pipe", "--hide-scrollbars", "--mute-audio",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--disable-breakpad",
    "--disable-domain-reliability", "--disable-client-side-phishing-detection",
    "--metrics-recording-only", "--no-pings",
    "--disable-features=Translate,OptimizationHints,MediaRouter,DialMediaRouteProvider,"
    "AutofillServerCommunication,CertificateTransparencyComponentUpdater",
    # a name or address Fetch did not block (the browser's own requests) resolves to nothing
    "--host-resolver-rules=MAP * ~NOTFOUND",
)
# the picture's box in document coordinates, the principle rows, and the document's height
_FACTS = """(() => {
  const picture = document.querySelector(%s);
  const r = picture && picture.getBoundingClientRect();
  const rows = Array.from(document.querySelectorAll(%s), (el) => el.getAttribute("data-principle"));
  const root = document.documentElement;
  return {
    picture: r ? [r.x + window.scrollX, r.y + window.scrollY, r.width, r.height] : null,
    principles: rows.filter((p) => p !== null),
    height: Math.ceil(Math.max(root.scrollHeight, document.body ? document.body.scrollHeight : 0)),
  };
})()"""


@dataclass
class Look:
    console_errors: list[str]
    requests: list[str]  # URLs it asked for besides itself and LOCAL ones (other files too)
    picture_box: tuple[float, float, float, float] | None  # x, y, width, height; None: no element
    picture_nonblank: float  # 0..1, fraction of non-background pixels in the box (0 if no box)
    principles: list[str]  # data-principle values in document order
    screenshot: Path


@dataclass
class Png:
    width: int
    height: int
    channels: int  # 3 (RGB) or 4 (RGBA), a byte each
    rows: list[bytes]


def chromium() -> str | None:
    """The headless Chromium binary's path, or None when it is not installed."""
    for name in BINARIES:
        found = shutil.which(name)
        if found:
            return found
    return None


def look(html: Path, screenshot: Path, picture: str = "#cluster svg",
         rows: str = "[data-principle]", width: int = 1400, timeout: float = 60.0) -> Look:
    """Open `html` in headless Chromium `width` pixels wide, save a screenshot of the page (its
    first MAX_HEIGHT pixels) to `screenshot` and report what a reader would meet. The page may
    fetch nothing: every request but the page's own and LOCAL ones (another file: too) is blocked
    before it is sent, and recorded."""
    binary = chromium()
    if binary is None:
        raise RuntimeError(f"no headless Chromium to look at {html} with: {INSTALL}")
    with (tempfile.TemporaryDirectory(prefix="podnet-chromium-", ignore_cleanup_errors=True)
          as temp,
          _Browser(binary, Path(temp), f"looking at {html}", timeout) as browser):
        session = browser.call("Target.attachToTarget", {
            "targetId": browser.call("Target.createTarget", {"url": "about:blank"})["targetId"],
            "flatten": True,
        })["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            browser.call(f"{domain}.enable", session=session)
        browser.call("Fetch.enable", {"patterns": [{"urlPattern": "*"}]}, session)
        loads = len(browser.events)
        browser.page = html.resolve().as_uri()
        navigated = browser.call("Page.navigate", {"url": browser.page}, session)
        if navigated.get("errorText"):
            raise RuntimeError(f"Chromium could not open {html}: {navigated['errorText']}")
        browser.wait_for("Page.loadEventFired", loads)
        # the layout at the screenshot's width gives the document's height, and that height the
        # viewport's: the box is measured in the layout the screenshot shows
        height = max(1, min(int(browser.facts(session, picture, rows, width, 800, html)["height"]),
                            MAX_HEIGHT))
        facts = browser.facts(session, picture, rows, width, height, html)
        # captureBeyondViewport alone would take the whole page, however tall
        screenshot.write_bytes(browser.capture(session, (0, 0, width, height)))
        box, nonblank = None, 0.0
        if facts["picture"]:
            x, y, w, h = (float(v) for v in facts["picture"])
            box = (x, y, w, h)
            # the part of the box the screenshot shows
            clip = (max(x, 0.0), max(y, 0.0), min(x + w, width), min(y + h, height))
            if clip[2] - clip[0] >= 1 and clip[3] - clip[1] >= 1:
                nonblank = nonblank_fraction(decode_png(browser.capture(session, clip)))
        return Look(console_errors=browser.console_errors(), requests=browser.requests(),
                    picture_box=box, picture_nonblank=nonblank,
                    principles=[str(p) for p in facts["principles"]], screenshot=screenshot)


def problems(seen: Look, principles: Sequence[str], min_nonblank: float = 0.01) -> list[str]:
    """What a reader would find wrong: console errors, fetches, no picture or a blank one,
    a principle row missing — each a sentence naming what and where; [] when all is well."""
    found = [f"the browser console shows an error: {error}" for error in seen.console_errors]
    found += [f"the page fetches {url}: it must be self-contained" for url in seen.requests]
    if seen.picture_box is None:
        found.append(f"the page has no picture: nothing matches its selector (see "
                     f"{seen.screenshot})")
    elif seen.picture_nonblank < min_nonblank:
        x, y, w, h = seen.picture_box
        found.append(f"the picture at ({x:.0f}, {y:.0f}), {w:.0f}x{h:.0f} px, is blank: "
                     f"{seen.picture_nonblank:.1%} of it differs from its background, under "
                     f"{min_nonblank:.1%} (see {seen.screenshot})")
    found += [f"the page has no row for the principle {p!r} (no data-principle={p!r})"
              for p in principles if p not in seen.principles]
    return found


def decode_png(data: bytes) -> Png:
    """The pixels of an 8-bit RGB or RGBA, non-interlaced PNG: what Chromium's screenshots are,
    so nothing more is needed than zlib and the five row filters."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise ValueError("not a PNG: the signature is missing")
    pos, header, idat = 8, b"", []
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length] or b"\0\0\0\0")
        if len(body) != length or zlib.crc32(kind + body) != crc:
            raise ValueError(f"PNG chunk {kind!r} at byte {pos} is cut short or corrupt")
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        pos += 12 + length
    if len(header) != 13:
        raise ValueError("PNG has no IHDR chunk")
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    channels = {2: 3, 6: 4}.get(colour)
    if depth != 8 or channels is None or interlace:
        raise ValueError(f"only 8-bit RGB or RGBA non-interlaced PNGs are decoded; this one has "
                         f"bit depth {depth}, colour type {colour}, interlace {interlace}")
    raw = zlib.decompress(b"".join(idat))
    stride = width * channels
    if len(raw) != height * (stride + 1):
        raise ValueError(f"PNG pixel data is {len(raw)} bytes, not {height * (stride + 1)} for "
                         f"{width}x{height}")
    rows, prev = [], bytes(stride)
    for y in range(height):
        start = y * (stride + 1)
        prev = _unfilter(raw[start], raw[start + 1:start + 1 + stride], prev, channels)
        rows.append(prev)
    return Png(width, height, channels, rows)


def _unfilter(kind: int, line: bytes, prev: bytes, bpp: int) -> bytes:
    if kind == 0:
        return line
    if kind == 2:
        return bytes((a + b) & 0xFF for a, b in zip(line, prev, strict=True))
    out = bytearray(line)
    n = len(out)
    if kind == 1:
        for i in range(bpp, n):
            out[i] = (out[i] + out[i - bpp]) & 0xFF
    elif kind == 3:
        for i in range(bpp):
            out[i] = (out[i] + (prev[i] >> 1)) & 0xFF
        for i in range(bpp, n):
            out[i] = (out[i] + ((out[i - bpp] + prev[i]) >> 1)) & 0xFF
    elif kind == 4:
        for i in range(bpp):
            out[i] = (out[i] + prev[i]) & 0xFF  # no left neighbour: Paeth picks the one above
        for i in range(bpp, n):
            a, b, c = out[i - bpp], prev[i], prev[i - bpp]
            pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
            out[i] = (out[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
    else:
        raise ValueError(f"PNG row filter {kind} does not exist (0 to 4 do)")
    return bytes(out)


def nonblank_fraction(png: Png) -> float:
    """The share of pixels that differ from the most common colour, taken as the background."""
    step = png.channels
    colours = Counter(row[i:i + step] for row in png.rows for i in range(0, len(row), step))
    total = png.width * png.height
    return 1 - colours.most_common(1)[0][1] / total if total else 0.0


class _Browser:
    """One Chromium and its DevTools pipe: every event is kept (the look is read from them at
    the end), and a request the page makes is let through only when it stays on the machine."""

    def __init__(self, binary: str, temp: Path, what: str, timeout: float) -> None:
        self.what, self.timeout = what, timeout
        self.deadline = time.monotonic() + timeout
        self.events: list[dict[str, Any]] = []
        self.page = ""  # the file: URL navigated to: the one file the page may load
        self.log = temp / "chromium.log"
        self._buffer = bytearray()
        self._last_id = 0
        # ours are opened before Popen's error pipe: fds 3 and 4 are open (ours, if they were
        # free) when the child makes pass_fds inheritable, and the error pipe is neither
        to_chrome, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome = os.pipe()

        def onto_3_and_4() -> None:
            # above 4 first, so that neither end is overwritten by the other's dup2
            reads = fcntl.fcntl(to_chrome, fcntl.F_DUPFD, 5)
            writes = fcntl.fcntl(from_chrome, fcntl.F_DUPFD, 5)
            os.dup2(reads, 3)
            os.dup2(writes, 4)

        try:
            with self.log.open("wb") as log:
                self.proc = subprocess.Popen(
                    [binary, *FLAGS, f"--user-data-dir={temp / 'profile'}"],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                    pass_fds=(3, 4), preexec_fn=onto_3_and_4, start_new_session=True)
        except BaseException:
            for fd in (to_chrome, self._to_chrome, self._from_chrome, from_chrome):
                os.close(fd)
            raise
        os.close(to_chrome)
        os.close(from_chrome)

    def __enter__(self) -> _Browser:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        """Close the browser, and kill it (its whole process group) if it does not go."""
        with contextlib.suppress(OSError):
            self._post("Browser.close", {}, None)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        os.close(self._to_chrome)
        os.close(self._from_chrome)

    def call(self, method: str, params: dict[str, Any] | None = None,
             session: str | None = None) -> dict[str, Any]:
        """Send a command and return its result, keeping the events that come first."""
        sent = self._post(method, params or {}, session)
        while True:
            message = self._receive(method)
            if message.get("id") == sent:
                if "error" in message:
                    raise RuntimeError(f"Chromium refused {method} while {self.what}: "
                                       f"{message['error'].get('message')}")
                result: dict[str, Any] = message["result"]
                return result

    def wait_for(self, event: str, since: int) -> None:
        """Read on until `event` is among the events from index `since` on."""
        while not any(e["method"] == event for e in self.events[since:]):
            self._receive(event)

    def facts(self, session: str, picture: str, rows: str, width: int, height: int,
              html: Path) -> dict[str, Any]:
        """Lay the page out `width` x `height` and read the picture's box, the rows, the height."""
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
                  session)
        script = _FACTS % (json.dumps(picture), json.dumps(rows))
        answer = self.call("Runtime.evaluate", {"expression": script, "returnByValue": True},
                           session)
        if "exceptionDetails" in answer:
            raise ValueError(f"could not read {html} with the selectors {picture!r} and {rows!r}: "
                             f"{_exception_text(answer['exceptionDetails'])}")
        value: dict[str, Any] = answer["result"]["value"]
        return value

    def capture(self, session: str, clip: tuple[float, float, float, float]) -> bytes:
        """A PNG of the page from (x0, y0) to (x1, y1), in document coordinates."""
        x0, y0, x1, y1 = clip
        params = {"format": "png", "captureBeyondViewport": True,
                  "clip": {"x": x0, "y": y0, "width": x1 - x0, "height": y1 - y0, "scale": 1}}
        return base64.b64decode(self.call("Page.captureScreenshot", params, session)["data"])

    def console_errors(self) -> list[str]:
        errors = []
        for event in self.events:
            method, params = event["method"], event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
                text = " ".join(_remote_text(arg) for arg in params.get("args", []))
                frames = params.get("stackTrace", {}).get("callFrames", [])
                where = _where(frames[0]) if frames else ""
                errors.append(f"console.{params['type']}: {text}{where}")
            elif method == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                errors.append(f"{_exception_text(details)}{_where(details)}")
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                entry = params["entry"]
                errors.append(f"{entry['text']}{_where(entry)}")
        return errors

    def requests(self) -> list[str]:
        urls = (e["params"]["request"]["url"] for e in self.events
                if e["method"] == "Network.requestWillBeSent")
        return list(dict.fromkeys(url for url in urls if not self.own(url)))

    def own(self, url: str) -> bool:
        """The page itself or what it holds inline: everything else is a fetch."""
        return url == self.page or url.startswith(LOCAL)

    def _post(self, method: str, params: dict[str, Any], session: str | None) -> int:
        self._last_id += 1
        message: dict[str, Any] = {"id": self._last_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        data = json.dumps(message).encode() + b"\0"
        while data:
            data = data[os.write(self._to_chrome, data):]
        return self._last_id

    def _receive(self, awaited: str) -> dict[str, Any]:
        """The next message; an event is kept, and a paused request let through or failed."""
        while (end := self._buffer.find(b"\0")) < 0:
            left = self.deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_chrome], [], [], left)[0]:
                raise TimeoutError(f"Chromium took over {self.timeout:g} s {self.what} "
                                   f"(waiting for {awaited})")
            chunk = os.read(self._from_chrome, 1 << 20)
            if not chunk:
                raise RuntimeError(f"Chromium stopped while {self.what} (waiting for {awaited}): "
                                   f"{self._log_tail()}")
            self._buffer += chunk
        message: dict[str, Any] = json.loads(self._buffer[:end])
        del self._buffer[:end + 1]
        if "method" in message:
            self.events.append(message)
            if message["method"] == "Fetch.requestPaused":
                params = message["params"]
                if self.own(params["request"]["url"]):
                    self._post("Fetch.continueRequest", {"requestId": params["requestId"]},
                               message.get("sessionId"))
                else:
                    self._post("Fetch.failRequest", {"requestId": params["requestId"],
                                                     "errorReason": "BlockedByClient"},
                               message.get("sessionId"))
        return message

    def _log_tail(self) -> str:
        lines = self.log.read_text(errors="replace").strip().splitlines()
        return " | ".join(lines[-5:]) or "it wrote nothing to stderr"


def _where(source: dict[str, Any]) -> str:
    """ `` (at url:line)`` of a DevTools call frame, exception or log entry, when it has one."""
    url = source.get("url")
    line = source.get("lineNumber")
    if not url:
        return ""
    return f" (at {url}:{line + 1})" if isinstance(line, int) else f" (at {url})"


def _exception_text(details: dict[str, Any]) -> str:
    """``Uncaught Error: boom``: the exception's first line (its stack follows) after the text."""
    description = str(details.get("exception", {}).get("description", "")).splitlines()[:1]
    return " ".join([str(details.get("text", "")), *description]).strip()


def _remote_text(arg: dict[str, Any]) -> str:
    return str(arg["value"]) if "value" in arg else str(arg.get("description", arg.get("type")))
