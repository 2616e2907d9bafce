"""The smoke book as a reader sees it: every page opened in headless Chromium at 1280 px.

Checks what the HTML alone cannot: no console errors, every image loaded, the math typeset by
MathJax, no unresolved glue key or Python repr in sight, no page wider than the window, figures
not shrunk below legible text, and the page's layout intact (the previous / next links under
the article). A full-page screenshot of each page is written to
book/_build/screenshots/ (HLS_SCREENSHOTS elsewhere) for a person to look at.

It reuses the smoke build of tests/test_book.py (the `smoke_build` fixture in conftest.py).
Needs Debian's chromium and chromium-driver and the selenium package: without them the test is
skipped, except under CI=true, where it fails.
"""

import functools
import http.server
import json
import os
import re
import shutil
import threading
from pathlib import Path

import nbformat
import pytest

from hls import book, plots

WIDTH = 1280
INSTALL = ("headless Chromium not found: apt-get install -y chromium chromium-driver "
           "(and pip install -e '.[test]' for selenium)")
# the smallest figure text a reader should have to read, in CSS pixels
MIN_TEXT_PX = 9
# Python reprs that mean an object was displayed instead of drawn (a figure without the inline
# backend, an IPython display object, a DataFrame method ...)
REPR = re.compile(r"<(Figure size|matplotlib\.|IPython\.core\.|pandas\.|Axes[:>])|object at 0x[0-9a-f]+>")


def browser_or_skip():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    try:
        import selenium  # noqa: F401
    except ImportError:
        chromium = None
    if not (chromium and driver):
        if os.environ.get("CI") == "true":
            pytest.fail(INSTALL)
        pytest.skip(INSTALL)
    return chromium, driver


def glue_keys() -> set[str]:
    """Every name a chapter glues or places: seen on a page, it was not resolved. Only names
    with an underscore, which ordinary words are not (a key like 'profile' could be prose)."""
    keys = set()
    for chapter in book.chapter_notebooks():
        for cell in nbformat.read(chapter, as_version=4).cells:
            keys |= set(re.findall(r"""glue\(f?["']([A-Za-z0-9_]+)["']""", cell.source))
            keys |= set(re.findall(r"\{glue(?::\w+)?\}`([A-Za-z0-9_]+)", cell.source))
            keys |= set(re.findall(r"""page\.(?:figure|table)\(\s*["']([A-Za-z0-9_]+)["']""", cell.source))
    return {k for k in keys if "_" in k}


def pages(html: Path) -> list[str]:
    """Every page of the book (not Sphinx's search and index pages, nor index.html, which only
    redirects to the root page)."""
    found = sorted(p.relative_to(html).as_posix() for p in html.rglob("*.html")
                   if not p.relative_to(html).parts[0].startswith("_")
                   and 'http-equiv="Refresh"' not in p.read_text()[:2000])
    return [p for p in found if p not in ("search.html", "genindex.html")]


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):      # one line per request would drown pytest's output
        pass


@pytest.fixture(scope="module")
def served(smoke_build):
    """The smoke build over HTTP on a free local port (as a reader gets it; file:// pages
    behave differently in a browser)."""
    if smoke_build.returncode != 0:
        pytest.fail("the smoke build failed (tests/test_book.py::test_jupyter_book_build has its log)")
    handler = functools.partial(QuietHandler, directory=str(smoke_build.html))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield smoke_build.html, f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()


@pytest.fixture(scope="module")
def chrome():
    chromium, driver_path = browser_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={WIDTH},900", "--force-device-scale-factor=1", "--hide-scrollbars"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # the Debian driver given explicitly: selenium would otherwise try to download one
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    driver.set_script_timeout(30)
    yield driver
    driver.quit()


# What the page shows, measured in the browser once MathJax has finished.
MEASURE = """
const done = arguments[arguments.length - 1];
const typeset = (window.MathJax && MathJax.startup && MathJax.startup.promise) || Promise.resolve();
typeset.then(() => {
  const article = document.querySelector('article.bd-article') || document.body;
  const shown = article.cloneNode(true);
  shown.querySelectorAll('.cell_input, script, style, mjx-assistive-mml').forEach(e => e.remove());
  done({
    images: Array.from(article.querySelectorAll('img')).map(i => ({
      src: i.getAttribute('src'), complete: i.complete, natural: i.naturalWidth,
      shown: i.getBoundingClientRect().width})),
    math: article.querySelectorAll('.math').length,
    typeset: Array.from(article.querySelectorAll('.math')).filter(m => m.querySelector('mjx-container')).length,
    errors: article.querySelectorAll('mjx-merror').length,
    text: shown.textContent,
    scrollWidth: document.documentElement.scrollWidth,
    innerWidth: window.innerWidth,
    height: document.documentElement.scrollHeight,
    // the previous / next links: below the article and in its column (docutils 0.18 and 0.19
    // pushed them beside it on the References page)
    layout: (() => {
      const a = article.getBoundingClientRect(), f = document.querySelector('footer.prev-next-footer');
      if (!f) return null;
      const b = f.getBoundingClientRect();
      return {below: b.top >= a.bottom - 1, inside: b.left >= a.left - 1 && b.right <= a.right + 1};
    })(),
  });
}).catch(e => done({failed: String(e)}));
"""


@pytest.mark.slow
def test_every_page_renders_in_a_browser(served, chrome):
    html, url = served
    shots = Path(os.environ.get("HLS_SCREENSHOTS", book.BOOK / "_build" / "screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    keys = glue_keys()
    # a key glued to the text around it still counts (textContent joins blocks without a space)
    key_pattern = (re.compile(r"(?<![A-Za-z0-9_])(" + "|".join(map(re.escape, sorted(keys, key=len, reverse=True)))
                              + r")(?![A-Za-z_])") if keys else None)
    # the figure's smallest text (FONT_PT at DPI) times the browser's scaling of the image
    min_ratio = MIN_TEXT_PX / (plots.FONT_PT * plots.DPI / 72)
    problems = []
    listed = pages(html)
    assert any(p.startswith("chapters/") for p in listed), f"no chapter pages in {html}"
    for name in listed:
        chrome.set_window_size(WIDTH, 900)
        chrome.get(url + name)
        page = chrome.execute_async_script(MEASURE)
        if "failed" in page:
            problems.append(f"{name}: MathJax failed: {page['failed']}")
            continue
        for img in page["images"]:
            if not (img["complete"] and img["natural"] > 0):
                problems.append(f"{name}: image did not load: {img['src']}")
            elif img["shown"] / img["natural"] < min_ratio:
                problems.append(f"{name}: figure {img['src']} shown at {img['shown']:.0f} of its "
                                f"{img['natural']} px: its text is under {MIN_TEXT_PX} px; draw it "
                                f"at most plots.WIDTH = {plots.WIDTH} in wide")
        if page["math"] and (page["typeset"] < page["math"] or page["errors"]):
            problems.append(f"{name}: {page['typeset']} of {page['math']} formulas typeset, "
                            f"{page['errors']} MathJax errors")
        for match in REPR.finditer(page["text"]):
            problems.append(f"{name}: a Python repr on the page: {page['text'][match.start():match.start() + 80]!r}")
        if "{glue" in page["text"]:
            problems.append(f"{name}: an unrendered glue role")
        if key_pattern:
            for match in key_pattern.finditer(page["text"]):
                problems.append(f"{name}: a raw glue key on the page: {match.group(0)!r}")
        if page["scrollWidth"] > page["innerWidth"] + 1:
            problems.append(f"{name}: the page is {page['scrollWidth']} px wide in a {page['innerWidth']} px "
                            "window: something runs off it")
        layout = page["layout"]
        if layout is None or not (layout["below"] and layout["inside"]):
            problems.append(f"{name}: the previous / next links are not below the article: {layout}")
        # the whole page, for a person to look at
        chrome.set_window_size(WIDTH, min(page["height"], 20000))
        chrome.save_screenshot(str(shots / (name.replace("/", "__").removesuffix(".html") + ".png")))
        # read after the screenshot, whose resize may load more: every message is this page's.
        # Chrome asks every site for /favicon.ico on its own; the book declares none.
        for entry in chrome.get_log("browser"):
            if entry["level"] == "SEVERE" and "favicon.ico" not in entry["message"]:
                problems.append(f"{name}: console error: {entry['message'][:300]}")
    (shots / "problems.json").write_text(json.dumps(problems, indent=1))
    assert not problems, f"{len(problems)} problem(s) in the browser (screenshots in {shots}):\n" + "\n".join(problems)
