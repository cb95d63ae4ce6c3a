"""The built book in a real browser, offline: every page of _build/html opened in headless Chromium.

Per page: the math is typeset by the local MathJax (no TeX left in the text, no TeX errors), every
``to_jshtml`` animation has its frames and plays, every image loads, the JavaScript console shows
no error, and nothing but the local server is requested. Host names resolve to nothing in this
browser, so a page that needed a CDN would fail here.

Chromium (Debian's ``chromium``; ``python3 dev.py test`` installs it, see ``dev.ensure_chromium``)
is driven over the DevTools protocol on a pipe: no driver binary, no extra Python package.
The book is the one the test session builds once (the `built_book` fixture of tests/conftest.py).
The tests are collected through tests/test_book.py, so that `pytest -n 2 --dist loadfile` (what
`python3 dev.py test` runs) keeps every test of the built book on the worker that built it.
"""
from __future__ import annotations

import fcntl
import functools
import http.server
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import dev  # noqa: E402


HTML = ROOT / "_build" / "html"
CHAPTERS = ["book/00_preface"] + [line.split("file:")[1].strip() for line in
                                  (ROOT / "_toc.yml").read_text().splitlines() if "file:" in line]
PAGES = [f"{chapter}.html" for chapter in CHAPTERS] + ["genindex.html", "search.html"]

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--mute-audio", "--hide-scrollbars",
    "--window-size=1280,900",
    # no host name resolves: whatever a page wants from the internet fails (and is reported)
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=127.0.0.1",
]


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def _fd_at_least(fd: int, lowest: int) -> int:
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD, lowest)
    os.close(fd)
    return moved


class Browser:
    """Chromium with ``--remote-debugging-pipe``: DevTools messages are JSON ending in NUL,
    written to the browser's fd 3 and read from its fd 4."""

    def __init__(self, binary: str):
        self.profile = tempfile.mkdtemp(prefix="pfcourse-chromium-")
        self._log = open(Path(self.profile) / "stderr.log", "wb")  # noqa: SIM115 - closed in close()
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # bash puts the browser's two pipe ends on fds 3 and 4, then becomes Chromium; they are
        # first moved to 10 and up, clear of 3 and 4 (and dash takes no fd over 9, hence bash)
        to_browser_r, from_browser_w = (_fd_at_least(fd, 10) for fd in (to_browser_r, from_browser_w))
        script = f'exec "$0" "$@" 3<&{to_browser_r} 4>&{from_browser_w} {to_browser_r}<&- {from_browser_w}>&-'
        self.proc = subprocess.Popen(
            ["bash", "-c", script, binary, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}",
             "--remote-debugging-pipe", "about:blank"],
            pass_fds=(to_browser_r, from_browser_w), stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=self._log)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self.closed = False
        self._next_id = 0
        self._lock = threading.Lock()
        self._replies: dict[int, queue.Queue] = {}
        self.events: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        try:
            target = self.send("Target.createTarget", url="about:blank", timeout=30)["targetId"]
        except (RuntimeError, TimeoutError, OSError) as error:
            log = (Path(self.profile) / "stderr.log").read_text(errors="replace")[-3000:]
            self.close()
            raise RuntimeError(f"Chromium ({binary}) did not start: {error}\n{log}") from None
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable", session=self.session)

    def _read(self):
        pending: list[bytes] = []  # the start of a message not yet ended by its NUL
        with os.fdopen(self._from_browser, "rb", buffering=0) as pipe:
            while chunk := pipe.read(1 << 20):
                *ended, rest = chunk.split(b"\0")
                for piece in ended:
                    message = json.loads(b"".join([*pending, piece]))
                    pending = []
                    if "id" in message:
                        self._replies.setdefault(message["id"], queue.Queue()).put(message)
                    else:
                        self.events.put(message)
                if rest:
                    pending.append(rest)
        self.closed = True
        for waiting in list(self._replies.values()):
            waiting.put({"error": "Chromium exited"})
        self.events.put({"method": "closed"})

    def send(self, method: str, session: str | None = None, timeout: float = 60, **params):
        if self.closed:
            raise RuntimeError(f"{method}: Chromium exited")
        with self._lock:
            self._next_id += 1
            number = self._next_id
            self._replies.setdefault(number, queue.Queue())
            message = {"id": number, "method": method, "params": params}
            if session:
                message["sessionId"] = session
            data = json.dumps(message).encode() + b"\0"
            while data:
                data = data[os.write(self._to_browser, data):]
        try:
            reply = self._replies[number].get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"Chromium did not answer {method} in {timeout} s") from None
        finally:
            self._replies.pop(number, None)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]

    def drain(self) -> list[dict]:
        events = []
        while True:
            try:
                events.append(self.events.get_nowait())
            except queue.Empty:
                return events

    def open(self, url: str, timeout: float = 60) -> list[dict]:
        """Navigate and wait for the load event; return the page's events so far."""
        self.drain()
        self.send("Page.navigate", session=self.session, url=url)
        events, deadline = [], time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                event = self.events.get(timeout=deadline - time.monotonic())
            except queue.Empty:
                break
            events.append(event)
            if event.get("method") == "Page.loadEventFired":
                return events
            if event.get("method") == "closed":
                raise RuntimeError("Chromium exited")
        raise TimeoutError(f"{url} did not finish loading in {timeout} s")

    def evaluate(self, expression: str, timeout: float = 60):
        result = self.send("Runtime.evaluate", session=self.session, timeout=timeout,
                           expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"the check script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def close(self):
        try:
            self.send("Browser.close", timeout=10)
        except Exception:  # noqa: BLE001 - it is going away either way
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_browser)
        self._log.close()
        shutil.rmtree(self.profile, ignore_errors=True)


# Runs in the page after its load event; returns what the test asserts on.
CHECK_PAGE = r"""
(async () => {
  const sleep = ms => new Promise(resolve => setTimeout(resolve, ms));
  const out = {};

  // Math: MathJax (loaded only on pages with math) typesets every .math element.
  const mathNodes = [...document.querySelectorAll('.math')];
  out.mathNodes = mathNodes.length;
  out.mathjax = !!(window.MathJax && MathJax.startup && MathJax.startup.promise);
  if (out.mathjax) {
    await MathJax.startup.promise;
    out.mathjaxVersion = MathJax.version;
  }
  out.containers = document.querySelectorAll('mjx-container').length;
  out.untypeset = mathNodes.filter(n => !n.querySelector('mjx-container'))
                           .map(n => n.textContent.trim().slice(0, 120));
  // TeX errors: CHTML draws glyphs with CSS, so text left in the output is an error or an undefined \macro
  out.texErrors = [];
  if (out.mathjax && MathJax.startup.document) {
    for (const item of MathJax.startup.document.math) {
      if (!item.typesetRoot) continue;
      const copy = item.typesetRoot.cloneNode(true);
      copy.querySelectorAll('mjx-assistive-mml').forEach(e => e.remove());
      if (copy.querySelector('mjx-merror') || copy.textContent.includes('\\')) out.texErrors.push(item.math);
    }
  }
  // TeX left in the text outside code: delimiters that MathJax or MyST did not consume.
  const text = document.body.cloneNode(true);
  text.querySelectorAll('pre, code, script, style, textarea, mjx-container, .highlight')
      .forEach(e => e.remove());
  const plain = text.textContent;
  out.rawTex = [];
  for (const pattern of [/\\\(/g, /\\\)/g, /\\\[/g, /\\\]/g, /\$\$/g, /\$(?=\S)[^$\n]*?\\[A-Za-z]+[^$\n]*?\$/g]) {
    for (const m of plain.matchAll(pattern))
      out.rawTex.push(plain.slice(Math.max(0, m.index - 40), m.index + 60).replace(/\s+/g, ' '));
  }
  await document.fonts.ready;
  out.fontErrors = [...document.fonts].filter(f => f.status === 'error').map(f => f.family);

  // Animations (matplotlib's to_jshtml): frames decoded, and Play moves through them.
  out.animations = [];
  for (const img of document.querySelectorAll('.animation img[id^="_anim_img"]')) {
    const id = img.id.slice('_anim_img'.length);
    const box = img.closest('.animation');
    let anim = window['anim' + id];
    for (let i = 0; !anim && i < 40; i++) { await sleep(50); anim = window['anim' + id]; }
    const r = {id, exists: !!anim};
    out.animations.push(r);
    if (!anim) continue;
    r.frames = anim.frames.length;
    await Promise.all(anim.frames.map(f => f.decode().catch(() => null)));
    r.badFrames = anim.frames.filter(f => !(f.naturalWidth > 0)).length;
    const slider = document.getElementById('_anim_slider' + id);
    const start = anim.current_frame;
    const seen = new Set([start]);
    box.querySelector('button[title="Play"]').click();
    const deadline = performance.now() + Math.max(8 * anim.interval, 2000);
    while (seen.size < Math.min(3, r.frames) && performance.now() < deadline) {
      await sleep(Math.max(10, anim.interval / 3));
      seen.add(anim.current_frame);
    }
    box.querySelector('button[title="Pause"]').click();
    r.framesSeen = seen.size;
    await img.decode().catch(() => null);
    r.shows = img.src === anim.frames[anim.current_frame].src && img.naturalWidth > 0 &&
              String(slider.value) === String(anim.current_frame);
    // the buttons' icons: Font Awesome (the theme's copy) turns each <i> into an <svg>
    r.iconless = [...box.querySelectorAll('.anim-buttons button')]
                   .filter(b => !b.querySelector('svg')).map(b => b.title);
  }

  // Images: every <img> loaded (loading=lazy would wait for scrolling; load them all now).
  const images = [...document.images];
  images.forEach(i => { i.loading = 'eager'; });
  await Promise.all(images.map(i => i.complete ? null : new Promise(resolve => {
    i.addEventListener('load', resolve); i.addEventListener('error', resolve); setTimeout(resolve, 10000);
  })));
  out.images = images.length;
  out.brokenImages = images.filter(i => !(i.complete && i.naturalWidth > 0))
                           .map(i => (i.getAttribute('src') || '(no src) ' + i.outerHTML).slice(0, 150));
  return out;
})()
"""


def _console_errors(events: list[dict]) -> list[str]:
    errors = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            exception = details.get("exception", {})
            errors.append(f"uncaught {exception.get('description') or details.get('text')} "
                          f"({details.get('url', '')}:{details.get('lineNumber', '?')})")
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            errors.append("console.error: " + " ".join(
                str(arg.get("value", arg.get("description", ""))) for arg in params.get("args", [])))
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            entry = params["entry"]
            if entry.get("url", "").endswith("/favicon.ico"):  # the browser's own guess, not the page's
                continue
            errors.append(f"{entry.get('text')} {entry.get('url', '')}".strip())
    return errors


def _foreign_requests(events: list[dict], base: str) -> list[str]:
    urls = [e["params"]["request"]["url"] for e in events if e.get("method") == "Network.requestWillBeSent"]
    return sorted({u[:150] for u in urls if not u.startswith((base, "data:", "blob:", "about:"))})


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def book_html(built_book) -> Path:
    """_build/html, as the session's book build (tests/conftest.py) left it."""
    assert (HTML / "searchindex.js").exists(), "the book build failed: see tests/test_book.py"
    missing = [page for page in PAGES if not (HTML / page).exists()]
    assert not missing, f"pages missing from {HTML}: {missing}"
    return HTML


@pytest.fixture(scope="module")
def server(book_html):
    handler = functools.partial(_Quiet, directory=str(book_html))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def browser():
    binary = chromium_path()
    if binary is None and hasattr(dev, "ensure_chromium"):
        dev.ensure_chromium()
        binary = chromium_path()
    assert binary, ("headless Chromium is needed (Debian: apt-get install chromium); "
                    "`python3 dev.py test` installs it when run as root")
    chrome = Browser(binary)
    yield chrome
    chrome.close()


def test_every_page_is_checked(book_html):
    """The pages opened below are all the pages of the current build (its search index lists them;
    a stale page left in _build/html by an older build is not one of them)."""
    index = (book_html / "searchindex.js").read_text()
    docnames = json.loads(index[index.index("(") + 1:index.rindex(")")])["docnames"]
    assert {f"{name}.html" for name in docnames} | {"genindex.html", "search.html"} == set(PAGES)


@pytest.mark.parametrize("page", PAGES)
def test_page_in_browser(page, server, browser):
    url = server + page
    events = browser.open(url)
    result = browser.evaluate(CHECK_PAGE)
    time.sleep(0.05)  # errors logged while the checks ran
    events += browser.drain()

    problems = []
    if result["mathNodes"]:
        if not result["mathjax"]:
            problems.append(f"{result['mathNodes']} math elements but MathJax did not load")
        if result["containers"] == 0:
            problems.append("no MathJax output on a page with math")
    if result["untypeset"]:
        problems.append(f"math not typeset: {result['untypeset'][:5]}")
    if result["texErrors"]:
        problems.append(f"TeX errors (undefined macro or bad syntax): {result['texErrors'][:5]}")
    if result["rawTex"]:
        problems.append(f"raw TeX in the text: {result['rawTex'][:5]}")
    if result["fontErrors"]:
        problems.append(f"fonts that failed to load: {sorted(set(result['fontErrors']))}")
    for anim in result["animations"]:
        if not anim["exists"]:
            problems.append(f"animation {anim['id']}: no player object (its script did not run)")
            continue
        if anim["frames"] < 2 or anim["badFrames"]:
            problems.append(f"animation {anim['id']}: {anim['frames']} frames, {anim['badFrames']} not decodable")
        if anim["framesSeen"] < min(3, anim["frames"]) or not anim["shows"]:
            problems.append(f"animation {anim['id']}: Play showed {anim['framesSeen']} frame(s), "
                            f"image in sync with the player: {anim['shows']}")
        if anim["iconless"]:
            problems.append(f"animation {anim['id']}: buttons without an icon: {anim['iconless']}")
    if result["brokenImages"]:
        problems.append(f"images that did not load: {result['brokenImages'][:5]}")
    problems += [f"console: {e}" for e in _console_errors(events)]
    problems += [f"requested from outside the book: {u}" for u in _foreign_requests(events, server)]
    problems = list(dict.fromkeys(problems))  # an image that failed is logged once per attempt
    assert not problems, f"{page}:\n  " + "\n  ".join(problems)
