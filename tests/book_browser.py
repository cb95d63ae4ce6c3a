"""The built book in a real browser, offline: every page of _build/html opened in headless Chromium.

Per page: the math is typeset by the local MathJax (no TeX left in the text, no TeX errors), every
``to_jshtml`` animation has its frames and plays, every page slider (``pfcourse.widgets.page_slider``,
on the pages of ``SLIDERS`` at least) shows another picture when moved, every image loads, the JavaScript console shows
no error, and nothing but the local server is requested. Host names resolve to nothing in this
browser, so a page that needed a CDN would fail here.

And the page fits a reader's screen, with every hidden input and dropdown opened: in a 1280-pixel
window no code block, cell output or display equation is wider than the text column (a reader would
have to scroll it sideways, or could not see its end); on a 412-pixel phone no text is cut and the
page does not scroll sideways (a code block or equation that scrolls inside its own box is fine there).

Chromium is Debian's ``chromium`` (``python3 dev.py test`` installs it, see ``dev.ensure_chromium``),
driven by Playwright for Python (requirements.txt) through ``executable_path``: Playwright's own
browser download (``playwright install``) is neither needed nor used.
The book is the one the test session builds once (the `built_book` fixture of tests/conftest.py).
The tests are collected through tests/test_book.py, so that `pytest -n 2 --dist loadfile` (what
`python3 dev.py test` runs) keeps every test of the built book on the worker that built it.
Run on their own, ``.venv/bin/pytest tests/book_browser.py -p no:xdist`` checks the build already in
_build/html without building; ``.venv/bin/python tests/book_browser.py DIR [PAGE ...]`` saves full-page
screenshots of pages at both widths into DIR, to look at.
"""
from __future__ import annotations

import functools
import http.server
import json
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import dev  # noqa: E402


HTML = ROOT / "_build" / "html"
CHAPTERS = ["book/00_preface"] + [line.split("file:")[1].strip() for line in
                                  (ROOT / "_toc.yml").read_text().splitlines() if "file:" in line]
PAGES = [f"{chapter}.html" for chapter in CHAPTERS] + ["genindex.html", "search.html"]

#: The pages whose toy-scale figures move without a kernel (pfcourse.widgets.page_slider), and how many.
SLIDERS = {"book/01_gradient_descent.html": 1, "book/03_principal_flow.html": 1,
           "book/04_stability.html": 1}
WIDE = {"width": 1280, "height": 900}    # a laptop's browser window
PHONE = {"width": 412, "height": 915}    # a common Android phone, in CSS pixels
CHROMIUM_ARGS = [
    "--disable-gpu", "--disable-quic", "--mute-audio",
    # no host name resolves: whatever a page wants from the internet fails (and is reported)
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=127.0.0.1",
]


# Runs in the page after its load event; returns what the test asserts on.
CHECK_PAGE = r"""
async () => {
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

  // Sliders that move in the page (pfcourse.widgets.page_slider): moving one shows another picture.
  out.sliders = [];
  for (const box of document.querySelectorAll('.pf-page-slider')) {
    const input = box.querySelector('input[type=range]'), img = box.querySelector('img');
    const value = box.querySelector('output');
    const before = {src: img.src, text: value.textContent, index: input.value};
    const r = {id: box.id, frames: Number(input.max) + 1};
    input.value = String(input.value === input.max ? 0 : Number(input.max));
    input.dispatchEvent(new Event('input', {bubbles: true}));
    await img.decode().catch(() => null);
    r.moved = img.src !== before.src && value.textContent !== before.text && img.naturalWidth > 0;
    input.value = before.index;
    input.dispatchEvent(new Event('input', {bubbles: true}));
    r.back = img.src === before.src && value.textContent === before.text;
    out.sliders.push(r);
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
}
"""

# Opens what a reader can open (hidden inputs and outputs, dropdown exercises and solutions), so that
# the layout checks see it too, and waits for the layout to settle.
OPEN_EVERYTHING = r"""
async () => {
  document.querySelectorAll('details').forEach(d => { d.open = true; });
  document.querySelectorAll('.toggle-hidden').forEach(e => e.classList.remove('toggle-hidden'));
  await new Promise(resolve => requestAnimationFrame(() => requestAnimationFrame(resolve)));
}
"""

# The layout at the window's current width. Returns [{what, text, px}] for each element that is too
# wide: with `wide`, a code block, cell or equation wider than the text column (even one that scrolls
# in its own box); without, text cut off by a box that hides its overflow or by the screen's edge.
# Widths are compared with 1 px of slack: scrollWidth and clientWidth are rounded to whole pixels
# while boxes sit at fractional positions, so a block that fits exactly can read up to 1 px over.
CHECK_LAYOUT = r"""
(wide) => {
  const SLACK = 1;
  const article = document.querySelector('article.bd-article') || document.querySelector('main') || document.body;
  const tex = new Map();   // a typeset equation -> its TeX, to name it
  if (window.MathJax && MathJax.startup && MathJax.startup.document)
    for (const item of MathJax.startup.document.math) if (item.typesetRoot) tex.set(item.typesetRoot, item.math);
  const label = e => (tex.get(e) ?? e.textContent).replace(/\s+/g, ' ').trim().slice(0, 50);
  const shown = e => { const r = e.getBoundingClientRect(); return r.width > 0 && r.height > 0; };
  const found = [];
  const report = (what, e, px, how) => found.push({what, e, how, text: label(e), px: Math.round(px)});

  // how far the element reaches past the column [left, right] (its box, and for an equation the
  // typeset formula, which centred can stick out on the left as well), and past its own box (it
  // scrolls, or hides the rest)
  const past = (e, left, right) => {
    const r = e.getBoundingClientRect();
    let out = Math.max(r.right - right, left - r.left);
    for (const m of e.querySelectorAll(':scope > mjx-math')) {
      const mr = m.getBoundingClientRect();
      out = Math.max(out, mr.right - right, left - mr.left);
    }
    return {out, inside: e.scrollWidth - e.clientWidth};
  };
  // the element's horizontal reach once every box that scrolls has been scrolled: [left, right]
  const reach = e => {
    const r = e.getBoundingClientRect();
    return [r.left, r.left + Math.max(r.width, e.scrollWidth)];
  };
  const scrolls = e => ['auto', 'scroll'].includes(getComputedStyle(e).overflowX);
  const clips = e => ['hidden', 'clip'].includes(getComputedStyle(e).overflowX);

  if (wide) {
    const style = getComputedStyle(article), box = article.getBoundingClientRect();
    const left = box.left + parseFloat(style.paddingLeft), right = box.right - parseFloat(style.paddingRight);
    const kinds = [['code block', 'div.highlight pre'], ['code cell', '.cell_input'],
                   ['printed output', '.cell_output pre'], ['output table', '.cell_output table'],
                   ['display equation', 'mjx-container[display="true"]']];
    for (const [what, selector] of kinds)
      for (const e of article.querySelectorAll(selector)) {
        if (!shown(e)) continue;
        const {out, inside} = past(e, left, right);
        if (Math.max(out, inside) > SLACK)
          report(what, e, Math.max(out, inside),
                 inside >= out ? 'is wider than its box' : 'sticks out of the text column');
      }
  } else {
    const screen = document.documentElement.clientWidth;
    const text = 'p, li, dt, dd, h1, h2, h3, h4, h5, h6, th, td, caption, figcaption, blockquote, ' +
                 'pre, table, .cell_output, mjx-container[display="true"]';
    for (const e of article.querySelectorAll(text)) {
      if (!shown(e)) continue;
      let [left, right] = scrolls(e) ? (r => [r.left, r.right])(e.getBoundingClientRect()) : reach(e);
      let cut = null;
      for (let a = e.parentElement; a && a !== document.documentElement && cut === null; a = a.parentElement) {
        const r = a.getBoundingClientRect();
        if (clips(a) && (right > r.right + SLACK || left < r.left - SLACK))
          cut = Math.max(right - r.right, r.left - left);
        else if (scrolls(a)) [left, right] = [Math.max(left, r.left), Math.min(right, r.right)];
      }
      if (cut === null && (right > screen + SLACK || left < -SLACK)) cut = Math.max(right - screen, -left);
      if (cut !== null) report(e.tagName.toLowerCase() === 'mjx-container' ? 'display equation'
                               : `<${e.tagName.toLowerCase()}>`, e, cut, 'is cut');
    }
    const page = document.documentElement.scrollWidth - screen;
    if (page > SLACK) found.push({what: 'the page', how: 'scrolls sideways', px: page,
                                  text: `(${screen}-px screen)`});
  }
  // the innermost offender only: a cell that is too wide because its code is says no more
  return found.filter(f => !f.e || !found.some(g => g !== f && g.e && f.e.contains(g.e)))
              .map(({what, how, text, px}) => ({what, how, text, px}));
}
"""


def _console_errors(messages: list, page_errors: list) -> list[str]:
    """Console errors and uncaught exceptions (a failed load shows here too, as Chromium logs it)."""
    errors = [f"uncaught {error}" for error in page_errors]
    for message in messages:
        if message.type not in ("error", "assert"):
            continue
        url = message.location.get("url", "")
        if url.endswith("/favicon.ico"):  # the browser's own guess, not the page's
            continue
        errors.append(f"{message.text} {url}".strip())
    return errors


def _foreign_requests(urls: list[str], base: str) -> list[str]:
    return sorted({u[:150] for u in urls if not u.startswith((base, "data:", "blob:", "about:"))})


def _check_problems(result: dict) -> list[str]:
    """What CHECK_PAGE found wrong: math, fonts, animations, images."""
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
    for slider in result["sliders"]:
        if slider["frames"] < 2 or not (slider["moved"] and slider["back"]):
            problems.append(f"page slider {slider['id']}: {slider['frames']} pictures; moving it changed the "
                            f"picture and its value: {slider['moved']}, moving it back restored them: {slider['back']}")
    if result["brokenImages"]:
        problems.append(f"images that did not load: {result['brokenImages'][:5]}")
    return problems


def _layout_problems(tab, viewport: dict) -> list[str]:
    """CHECK_LAYOUT at one window width, as lines that name each offender and by how much it is over."""
    tab.set_viewport_size(viewport)
    tab.evaluate(OPEN_EVERYTHING)
    return [f"{viewport['width']} px: {o['what']} {o['how']} by {o['px']} px: {o['text']!r}"
            for o in tab.evaluate(CHECK_LAYOUT, viewport["width"] == WIDE["width"])]


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextmanager
def serve(directory: Path) -> Iterator[str]:
    """The folder over HTTP on a free local port; yields its URL."""
    handler = functools.partial(_Quiet, directory=str(directory))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()


@contextmanager
def chromium() -> Iterator:
    """Debian's Chromium in headless mode, under Playwright (a Playwright ``Browser``)."""
    from playwright.sync_api import Error, sync_playwright

    binary = dev.ensure_chromium()
    assert binary, ("headless Chromium is needed (Debian: apt-get install chromium); "
                    "`python3 dev.py test` installs it when run as root")
    with sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(executable_path=binary, args=CHROMIUM_ARGS, timeout=60_000)
        except Error as error:
            raise RuntimeError(f"Chromium ({binary}) did not start under Playwright: {error}") from None
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def book_html(request) -> Path:
    """_build/html, as the session's book build (tests/conftest.py) left it; run on its own
    (`pytest tests/book_browser.py`), the build already there."""
    if request.module.__name__ != __name__:        # collected by tests/test_book.py: build it first
        request.getfixturevalue("built_book")
    assert (HTML / "searchindex.js").exists(), \
        f"no built book in {HTML}: the build failed (see tests/test_book.py), or run `python3 dev.py book`"
    missing = [page for page in PAGES if not (HTML / page).exists()]
    assert not missing, f"pages missing from {HTML}: {missing}"
    return HTML


@pytest.fixture(scope="module")
def server(book_html):
    with serve(book_html) as url:
        yield url


class Tab:
    """One browser tab for every page (its renderer and cache stay warm from page to page; a tab per
    page made the checks slower), and what the page in it reported since :meth:`open`."""

    def __init__(self, page):
        self.page = page
        self.messages, self.errors, self.requests, self.failed = [], [], [], []
        # lambdas, not the lists' bound `append`: Playwright tags its handlers, and a builtin takes no tag
        page.on("console", lambda message: self.messages.append(message))
        page.on("pageerror", lambda error: self.errors.append(error))
        page.on("request", lambda request: self.requests.append(request.url))
        page.on("requestfailed", lambda request: self.failed.append(f"{request.url} ({request.failure})"))

    def open(self, url: str) -> None:
        """Forget the last page's reports; load ``url`` in the wide window, up to its load event."""
        if self.page.viewport_size != WIDE:     # not the last page laid out again at the new size
            self.page.goto("about:blank")
            self.page.set_viewport_size(WIDE)
        for log in (self.messages, self.errors, self.requests, self.failed):
            log.clear()
        self.page.goto(url, wait_until="load", timeout=60_000)


@pytest.fixture(scope="module")
def browser():
    with chromium() as chrome:
        context = chrome.new_context(viewport=WIDE, service_workers="block")
        yield Tab(context.new_page())
        context.close()


def test_every_page_is_checked(book_html):
    """The pages opened below are all the pages of the current build (its search index lists them;
    a stale page left in _build/html by an older build is not one of them)."""
    index = (book_html / "searchindex.js").read_text()
    docnames = json.loads(index[index.index("(") + 1:index.rindex(")")])["docnames"]
    assert {f"{name}.html" for name in docnames} | {"genindex.html", "search.html"} == set(PAGES)


@pytest.mark.parametrize("page", PAGES)
def test_page_in_browser(page, server, browser):
    browser.open(server + page)
    result = browser.page.evaluate(CHECK_PAGE)
    problems = _check_problems(result)
    if len(result["sliders"]) < SLIDERS.get(page, 0):
        problems.append(f"{len(result['sliders'])} page sliders, {SLIDERS[page]} expected (they move without a kernel)")
    problems += _layout_problems(browser.page, WIDE) + _layout_problems(browser.page, PHONE)
    browser.page.wait_for_timeout(50)  # errors logged while the checks ran
    problems += [f"console: {e}" for e in _console_errors(browser.messages, browser.errors)]
    problems += [f"failed to load: {f}" for f in browser.failed if f.startswith(server)]
    problems += [f"requested from outside the book: {u}" for u in _foreign_requests(browser.requests, server)]
    problems = list(dict.fromkeys(problems))  # an image that failed is logged once per attempt
    assert not problems, f"{page}:\n  " + "\n  ".join(problems)


# A page with one of each thing the layout checks must catch, and its look-alikes that fit.
MISFITS = """<!DOCTYPE html><html><head><meta name="viewport" content="width=device-width, initial-scale=1">
<style>article { width: 600px; max-width: 100%; padding: 0 20px; box-sizing: border-box; }
pre { overflow: auto; } .box { overflow: hidden; } mjx-container { display: block; overflow: auto; }
mjx-math { display: inline-block; }</style></head><body><article class="bd-article">
<p>A paragraph that wraps as it should, in words of a few letters each, on any screen.</p>
<div class="highlight"><pre>fits()</pre></div>
<div class="cell_input"><div class="highlight"><pre>too_wide(${long})</pre></div></div>
<mjx-container display="true"><mjx-math style="width: 900px">wide</mjx-math></mjx-container>
<mjx-container display="true"><mjx-math style="width: 100px">narrow</mjx-math></mjx-container>
<div class="box"><p>cut_${long}</p></div>
</article></body></html>""".replace("${long}", "x" * 120)


def test_layout_checks_catch_what_does_not_fit(tmp_path, browser):
    """CHECK_LAYOUT on MISFITS: at 1280 px the wide code block and equation are reported, not the
    ones that fit nor the cell around the code (its innermost offender is); at 412 px the paragraph
    its box hides the end of, and not the code block, which scrolls in its own box."""
    (tmp_path / "misfits.html").write_text(MISFITS)
    with serve(tmp_path) as url:
        browser.open(url + "misfits.html")
        wide, phone = _layout_problems(browser.page, WIDE), _layout_problems(browser.page, PHONE)
    assert [line.split(" by ")[0] for line in wide] == [
        "1280 px: code block is wider than its box", "1280 px: display equation is wider than its box"]
    assert "too_wide(xxx" in wide[0] and "wide" in wide[1]
    assert len(phone) == 1 and phone[0].startswith("412 px: <p> is cut") and "cut_xxx" in phone[0]


def test_slider_check_sees_a_slider_move_and_a_stuck_one(tmp_path, browser):
    """CHECK_PAGE on two page sliders (pfcourse.widgets.page_slider): one as the chapters make it,
    which moves, and the same without its script, whose picture stays: only that one is reported."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from pfcourse.widgets import page_slider

    def draw(v):
        fig, ax = plt.subplots(figsize=(2, 1.5))
        ax.plot([0, 1], [0, v])
        return fig

    works = page_slider(draw, [0.0, 0.5, 1.0], label="v")._repr_html_()
    stuck = page_slider(draw, [1.0, 2.0], label="w")._repr_html_()
    stuck = stuck[:stuck.index("<script>")] + "</div>"
    (tmp_path / "sliders.html").write_text(f"<!DOCTYPE html><html><body>{works}{stuck}</body></html>")
    with serve(tmp_path) as url:
        browser.open(url + "sliders.html")
        result = browser.page.evaluate(CHECK_PAGE)
    assert [s["moved"] for s in result["sliders"]] == [True, False]
    problems = _check_problems(result)
    assert len(problems) == 1 and problems[0].startswith("page slider pf-slider-"), problems


def screenshots(folder: Path, pages: list[str]) -> list[Path]:
    """Full-page PNGs of the built pages at both widths, everything opened, to look at."""
    folder.mkdir(parents=True, exist_ok=True)
    saved = []
    with serve(HTML) as url, chromium() as chrome:
        tab = chrome.new_page(viewport=WIDE)
        for page in pages:
            tab.goto(url + page, wait_until="load", timeout=60_000)
            tab.evaluate("async () => { if (window.MathJax?.startup?.promise) await MathJax.startup.promise; }")
            for viewport in (WIDE, PHONE):
                tab.set_viewport_size(viewport)
                tab.evaluate(OPEN_EVERYTHING)
                saved.append(folder / f"{Path(page).stem}-{viewport['width']}.png")
                tab.screenshot(path=saved[-1], full_page=True, timeout=300_000)
            tab.set_viewport_size(WIDE)
    return saved


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: .venv/bin/python tests/book_browser.py FOLDER [PAGE.html ...] (default: every page)")
    for path in screenshots(Path(sys.argv[1]), sys.argv[2:] or PAGES):
        print(path)
