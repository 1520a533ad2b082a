"""The built site as a reader sees it: its pages loaded in headless Chromium.

At a 1280 px wide window, no code block of the main pages may need a
horizontal scroll bar, and every gallery page must show its example's output.
The pages are served from a local HTTP server to one Chromium process, which
loads them one by one in a frame of that width, measures them with a small
script and writes the measurements into the DOM it prints (``--dump-dom``).
Chromium is Debian's ``chromium`` package (``.ci/install_chromium.sh``);
without it these tests fail.
"""

from __future__ import annotations

import contextlib
import functools
import html
import http.server
import json
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests._docs_helpers import built_site

WIDTH = 1280
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--virtual-time-budget=120000",
    f"--window-size={WIDTH},900",
]
# Pages that hold no prose or code of their own.
NOT_MAIN = {"genindex.html", "search.html", "py-modindex.html"}

# Loads every page of PAGES in a frame WIDTH wide, in turn, and records for
# each what the tests check; the result replaces the driver page's body.
DRIVER = """<!DOCTYPE html>
<html><head><meta charset="utf-8"></head><body>
<script>
const PAGES = %(pages)s;
const WIDTH = %(width)d;
const results = {};
function measure(doc) {
  const visible = (el) => el.getClientRects().length > 0;
  const blocks = Array.from(doc.querySelectorAll("pre")).filter(visible);
  return {
    title: doc.title,
    blocks: blocks.length,
    overflowing: blocks
      .filter((pre) => pre.scrollWidth > pre.clientWidth)
      .map((pre) => ({
        scrollWidth: pre.scrollWidth,
        clientWidth: pre.clientWidth,
        text: pre.textContent.split("\\n").slice(0, 3).join("\\n"),
      })),
    outputs: Array.from(doc.querySelectorAll(".sphx-glr-script-out pre"))
      .filter(visible)
      .map((pre) => pre.textContent.trim()),
  };
}
function next(i) {
  if (i === PAGES.length) {
    const out = document.createElement("pre");
    out.id = "measurements";
    out.textContent = JSON.stringify(results);
    document.body.replaceChildren(out);
    return;
  }
  const frame = document.createElement("iframe");
  frame.style.width = WIDTH + "px";
  frame.style.height = "900px";
  frame.style.border = "0";
  frame.onload = () => {
    // Let the theme's scripts settle before measuring.
    setTimeout(() => {
      try {
        results[PAGES[i]] = measure(frame.contentDocument);
      } catch (err) {
        results[PAGES[i]] = {error: String(err)};
      }
      frame.remove();
      next(i + 1);
    }, 200);
  };
  frame.src = PAGES[i];
  document.body.appendChild(frame);
}
next(0);
</script>
</body></html>
"""


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, (
        "Chromium is needed to check the built pages: "
        "run .ci/install_chromium.sh (Debian's chromium package)"
    )
    return found


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def _serve(root: Path) -> Iterator[str]:
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def site() -> Path:
    return built_site().html


def _pages(html_root: Path) -> list[str]:
    return sorted(
        path.relative_to(html_root).as_posix()
        for path in html_root.rglob("*.html")
        if not path.relative_to(html_root).parts[0].startswith("_")
    )


@pytest.fixture(scope="module")
def measured(site: Path) -> dict[str, dict[str, Any]]:
    """What the pages look like at WIDTH px, by page path."""
    pages = _pages(site)
    (site / "_measure.html").write_text(
        DRIVER % {"pages": json.dumps(pages), "width": WIDTH}, encoding="utf-8"
    )
    chromium = _chromium()
    with tempfile.TemporaryDirectory() as profile, _serve(site) as url:
        profile_flag = f"--user-data-dir={profile}"
        completed = subprocess.run(
            [chromium, *CHROMIUM_FLAGS, profile_flag, "--dump-dom", f"{url}/_measure.html"],
            capture_output=True,
            text=True,
            timeout=100,
            check=False,
        )
    found = re.search(r'<pre id="measurements">(.*?)</pre>', completed.stdout, re.S)
    assert found, (
        f"Chromium printed no measurements (exit {completed.returncode})\n"
        f"--- stdout\n{completed.stdout[-2000:]}\n--- stderr\n{completed.stderr[-2000:]}"
    )
    results: dict[str, dict[str, Any]] = json.loads(html.unescape(found.group(1)))
    assert set(results) == set(pages)
    return results


def test_every_page_loads(measured: dict[str, dict[str, Any]]) -> None:
    failed = {page: r["error"] for page, r in measured.items() if "error" in r}
    assert not failed
    assert all(r["title"] for r in measured.values())


def test_code_blocks_fit_their_column(measured: dict[str, dict[str, Any]]) -> None:
    main = {
        page: r
        for page, r in measured.items()
        if page not in NOT_MAIN and not page.startswith("auto_examples/")
    }
    assert "index.html" in main and "getting-started.html" in main
    assert sum(r["blocks"] for r in main.values()) > 20  # the check saw code
    too_wide = {page: r["overflowing"] for page, r in main.items() if r["overflowing"]}
    assert not too_wide, f"code blocks wider than the column at {WIDTH} px: {too_wide}"


def test_gallery_pages_show_their_output(measured: dict[str, dict[str, Any]]) -> None:
    examples = sorted(
        path.stem
        for path in (Path(__file__).resolve().parent.parent / "examples").glob("*.py")
        if not path.name.startswith(("_", "test_"))
    )
    assert examples
    for name in examples:
        page = measured[f"auto_examples/{name}.html"]
        assert page["outputs"] and all(page["outputs"]), f"{name}: no output shown"
    assert "auto_examples/index.html" in measured
