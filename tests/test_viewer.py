"""The HTML viewer in a real browser: Debian's headless Chromium, driven by Playwright, offline.

Pages of 250 synthetic examples (a failure every 7th, an error every 13th, flaky repeats, a row
whose output is `<img src=x onerror=alert(1)>`) are written by the default bake's own viewer
(tests/viewer_pages.py); what each filter must show is counted in Python beside them. One browser
serves the module. The 5,000-example timings are in benchmarks/bench_viewer.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.viewer_pages import HOSTILE_OUTPUT, browser, write_pages

EXAMPLES = 250


@pytest.fixture(scope="module")
def pages(ready, tmp_path_factory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("viewer")
    return out, write_pages(ready(), out, EXAMPLES)


@pytest.fixture(scope="module")
def chromium(tmp_path_factory) -> Iterator[Any]:
    with browser(tmp_path_factory.mktemp("profile")) as context:
        yield context


class Opened:
    """A page opened from disk, with every request, console message and dialog it caused."""

    def __init__(self, context: Any, path: Path) -> None:
        self.url = path.as_uri()
        self.requests: list[str] = []
        self.console: list[str] = []
        self.dialogs: list[str] = []
        self.page = context.new_page()
        self.failed: dict[str, str] = {}
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("requestfailed", lambda r: self.failed.update({r.url: r.failure or ""}))
        self.page.on("console", lambda m: self.console.append(m.text))
        self.page.on("pageerror", lambda e: self.console.append(str(e)))
        self.page.on("dialog", self.dismiss)
        self.page.goto(self.url)

    def dismiss(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def count(self) -> int:
        return int(self.page.locator("#count").get_attribute("data-matching"))

    def choose(self, select: str, value: str) -> int:
        self.page.select_option(f"#{select}", value)
        return self.count()

    def search(self, text: str) -> int:
        self.page.fill("#search", text)
        return self.count()

    def ids(self) -> list[str]:
        return self.page.locator("#rows > details").evaluate_all("rows => rows.map(r => r.dataset.id)")


def test_the_eval_page_makes_no_request_and_filters_to_the_right_counts(pages, chromium):
    out, expected = pages
    opened = Opened(chromium, out / "report.html")
    page = opened.page
    assert opened.count() == expected["calls"]
    assert page.locator("#rows > details").count() == 200  # the first 200 rows; the rest on demand
    page.click("#more")
    assert page.locator("#rows > details").count() == expected["calls"] and page.locator("#more").is_hidden()
    for status, n in expected["status"].items():
        assert opened.choose("status", status) == n, status
    assert opened.choose("status", "flaky") == expected["flaky"]
    assert opened.choose("status", "all") == expected["calls"]
    for tag, n in expected["tag"].items():
        assert opened.choose("tag", tag) == n, tag
    opened.choose("status", "fail")
    assert opened.count() == expected["fail_vip"]  # filters combine
    opened.choose("status", "all")
    opened.choose("tag", "all")
    for target, n in expected["target"].items():
        assert opened.choose("target", target) == n, target
    opened.choose("target", "all")
    for term, n in expected["search"].items():
        assert opened.search(term.upper()) == n, term  # case-insensitive
    assert opened.search("") == expected["calls"]
    # Nothing but the file itself was asked for, and the policy refused nothing the page needed.
    assert opened.requests == [opened.url]
    assert opened.console == [] and opened.dialogs == []


PROBE = """async () => {
  const refused = [];
  document.addEventListener("securitypolicyviolation", e => refused.push(e.violatedDirective));
  const image = new Image();
  image.src = "http://127.0.0.1:9/pixel.png";
  document.body.appendChild(image);
  const fetched = await fetch("http://127.0.0.1:9/data").then(() => "answered", () => "refused");
  await new Promise(done => setTimeout(done, 100));
  return [fetched, refused.sort()];
}"""


def test_the_browser_itself_refuses_any_request_the_page_would_make(pages, chromium):
    """The page's policy, not only the test's offline switch: what a script in it tries is refused
    before it reaches the network (the violation names the directive)."""
    out, _ = pages
    opened = Opened(chromium, out / "report.html")
    fetched, refused = opened.page.evaluate(PROBE)
    assert fetched == "refused" and refused == ["connect-src", "img-src"]
    # Chromium reports the image it was asked for, then blocks it by the policy, never by the network.
    assert opened.requests == [opened.url, "http://127.0.0.1:9/pixel.png"]
    assert opened.failed == {"http://127.0.0.1:9/pixel.png": "csp"}


WIDE = "() => document.documentElement.scrollWidth > window.innerWidth"


def test_a_hostile_output_renders_as_text(pages, chromium):
    out, _ = pages
    opened = Opened(chromium, out / "report.html")
    page = opened.page
    assert opened.search("hostile") == 1
    page.click("#rows > details > summary")
    body = page.locator("#rows > details .body")
    body.wait_for()
    assert HOSTILE_OUTPUT in body.inner_text() and "<script>alert(2)</script>" in body.inner_text()
    assert page.locator("img").count() == 0 and page.locator("#rows script").count() == 0
    # A 13,000-character line (3,000 without a space) wraps inside its box: no horizontal scroll bar,
    # here nor on the gate page, whose rows preview the input.
    assert page.evaluate(WIDE) is False
    assert opened.dialogs == [] and opened.requests == [opened.url]
    gate = Opened(chromium, out / "gate.html")
    assert gate.search("hostile") == 1
    gate.page.click("#rows > details > summary")
    gate.page.locator("#rows .sides").wait_for()
    assert gate.page.evaluate(WIDE) is False and gate.page.locator("img").count() == 0


def test_the_gate_page_lists_exactly_the_flipped_examples_first(pages, chromium):
    out, expected = pages
    opened = Opened(chromium, out / "gate.html")
    flipped = expected["pass_to_fail"] + expected["fail_to_pass"]
    assert opened.count() == expected["examples"]
    assert opened.ids()[: len(flipped)] == flipped  # pass→fail first, then fail→pass
    assert opened.choose("flip", "flipped") == len(flipped)
    assert opened.ids() == flipped
    assert opened.choose("flip", "pass→fail") == len(expected["pass_to_fail"])
    assert opened.ids() == expected["pass_to_fail"]
    opened.choose("flip", "flipped")
    opened.page.click("#rows > details > summary")  # the first flipped example, opened
    first = opened.page.locator("#rows > details").first
    first.locator(".sides").wait_for()  # built when first opened (the toggle event comes a task later)
    # Base and head side by side; the words only the base's output had are marked in it.
    assert first.locator(".sides pre").count() == 2
    assert first.locator("del").all_inner_texts() == [" in the old words"] and first.locator("ins").count() == 0
    assert opened.requests == [opened.url] and opened.console == []
    opened.page.screenshot(path=str(out / "gate.png"))
    assert (out / "gate.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
