"""The HTML viewer's pure parts: escaping, the embedded data, the charts, the diff, the gate's rows.

No browser here (the template's tests/test_viewer.py drives both pages in headless Chromium): these
pin what the pages are built from, fast.
"""

import base64
import hashlib
import json
import re

from {{ cookiecutter.package }}.app.prompts import Prompt
from {{ cookiecutter.package }}.evaluation import catalogue
from {{ cookiecutter.package }}.evaluation.golden import Example
from {{ cookiecutter.package }}.evaluation.results import Result
from {{ cookiecutter.package }}.gate.inputs import GateInputs
from {{ cookiecutter.package }}.gate.paired import compare
from {{ cookiecutter.package }}.gate.power import of_comparison
from {{ cookiecutter.package }}.gate.report import render as render_markdown
from {{ cookiecutter.package }}.gate.verdict import GateResult, Verdict
from {{ cookiecutter.package }}.settings import Policy, parse
from {{ cookiecutter.package }}.viewer import charts, eval_page, gate_page, page

HOSTILE = "</script><script>alert(1)</script> <img src=x onerror=alert(1)> & \u2028\u2029 <!--"


def data_of(html: str) -> object:
    block = re.search(r'<script type="application/json" id="data">(.*?)</script>', html, re.S)
    assert block is not None
    return json.loads(block.group(1))


def test_embedded_json_cannot_close_its_block_and_reads_back_the_same():
    value = {"output": HOSTILE, "nested": [HOSTILE]}
    text = page.embed_json(value)
    assert not set(text) & set("<>&\u2028\u2029")
    assert json.loads(text) == value
    html = page.document("t", "<p>x</p>", value)
    assert html.count("</script>") == 2  # the data block's and the script's own: nothing in the data
    assert data_of(html) == value


def test_the_page_allows_no_request_and_pins_its_own_script_and_style():
    html = page.document("t <b>", "", {"kind": "none"})
    policy = re.search(r'http-equiv="Content-Security-Policy" content="([^"]*)"', html).group(1)
    assert "default-src 'none'" in policy and "unsafe" not in policy
    script = re.findall(r"<script>(.*?)</script>", html, re.S)[-1]
    style = re.search(r"<style>(.*?)</style>", html, re.S).group(1)
    for text in (script, style):
        digest = base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in policy
    assert "<title>t &lt;b&gt;</title>" in html
    assert not re.search(r"https?:|\bsrc=|\bhref=|@import|url\(", html)  # nothing to fetch
    assert "innerHTML" not in script and "insertAdjacentHTML" not in script


def test_bar_chart_scales_values_and_escapes_labels():
    svg = charts.bars("rates", ["<b>", "ok"], [("base", [0.5, None]), ("head", [1.0, 0.25])])
    widths = [
        float(w) for w in re.findall(r'<rect class="s\d" x="\d+" y="\d+" width="([\d.]+)" height="\d+"><title>', svg)
    ]
    assert widths == [0.5 * charts.WIDTH, charts.WIDTH, 0.0, 0.25 * charts.WIDTH]
    assert "&lt;b&gt;" in svg and "<b>" not in svg


def test_histogram_counts_every_value_once():
    counts, low, high = charts.bins([1.0, 2.0, 2.5, 10.0], count=3)
    assert (sum(counts), low, high) == (4, 1.0, 10.0) and counts == [3, 0, 1]
    assert charts.bins([5.0, 5.0], count=3) == ([2], 5.0, 5.0)
    assert "no answered calls" in charts.histogram("latency", [])


def test_mermaid_chart_keeps_hostile_tags_inside_the_block():
    block = charts.mermaid_bars("per tag", ['a"b`]', "ok"], [("base", [0.5, None]), ("head", [1.0, 0.75])])
    assert block.startswith("```mermaid\nxychart-beta\n") and block.endswith("\n```")
    assert '"a_b__"' in block and "bar [0.5000, 0.0000]" in block and "bar [1.0000, 0.7500]" in block
    assert block.count("`") == 6


def test_diff_segments_spell_both_outputs_and_mark_the_changed_words():
    old, new = "The refund takes 5 days.", "The refund takes 10 business days."
    segments = gate_page.diff_segments(old, new)
    assert "".join(t for op, t in segments if op <= 0) == old
    assert "".join(t for op, t in segments if op >= 0) == new
    assert [t for op, t in segments if op == -1] == ["5"] and [t for op, t in segments if op == 1] == ["10 business"]
    assert gate_page.diff_segments(None, "new") == [[1, "new"]]


PROMPT = Prompt(
    id="echo",
    description="",
    variables=("text",),
    messages=({"role": "system", "content": "Repeat."}, {"role": "user", "content": "{text}"}),
    output_schema=None,
    examples=(),
    source="echo.yaml",
)


def call(example, passed, repeat=0, **extra):
    fields = {"id": example, "repeat": repeat, "target": "echo", "version": "v", "passed": passed}
    return Result.from_json(fields | {"output": f"out {example}", "tags": ["t"]} | extra)


def test_eval_rows_carry_inputs_messages_and_verdicts_with_shared_texts_stored_once():
    examples = [Example(i, "echo", {"text": f"in {i}"}, {"expected": "x"}, ("t",)) for i in ("a", "b")]
    results = [
        call("a", True, scores={"exact": {"passed": True, "value": 1, "detail": ""}}, judge={"rubric": "r1"}),
        call("b", False, 0, output=HOSTILE),
        call("b", True, 1),
        call("c", None, output=None, error="HTTP 500"),
    ]
    data = eval_page.data(results, examples, {"echo": PROMPT})
    rows = data["rows"]
    assert [(r["id"], r["status"], r["flaky"]) for r in rows] == [
        ("a", "pass", False), ("b", "fail", True), ("b", "pass", True), ("c", "error", False)
    ]  # fmt: skip
    assert rows[0]["input"] == "in a" and rows[0]["expected"] == "x"
    assert rows[0]["scores"] == [["exact", True, ""]] and rows[3]["error"] == "HTTP 500"
    assert rows[0]["judge"] == "rubric r1: reported only: not calibrated" and rows[1]["judge"] is None
    assert [[role, data["texts"][i]] for role, i in rows[1]["messages"]] == [["system", "Repeat."], ["user", "in b"]]
    assert data["texts"].count("Repeat.") == 1  # a system prompt shared by every example is stored once
    assert rows[3]["messages"] is None  # no example (or a flow): nothing rendered
    html = eval_page.render(
        {"pass_rate": 0.5}, results, examples, {"echo": PROMPT},
        minimum={"pass_rate": 0.9}, maximum={}, missed=[], model="m",
    )  # fmt: skip
    assert data_of(html)["rows"][1]["output"] == HOSTILE and "<img src=x" not in html
    assert "<h2>LLM judge</h2>" in html  # per rubric version: judged, passed, whether it gates


SETTINGS = parse('model: {base_url: "http://127.0.0.1:9/v1", name: test}\n')


def test_gate_rows_list_every_example_flipped_first_with_both_statuses():
    base = [call("keep", True), call("broke", True), call("fixed", False), call("gone", True)]
    head = [call("keep", True), call("broke", False, output="new words"), call("fixed", True), call("new", True)]
    head += [call("wobbly", True), call("wobbly", False, 1)]
    base += [call("wobbly", True), call("wobbly", True, 1)]
    names = ["pass_rate", "tag_t_pass_rate"]
    known = catalogue.build(names, {}, ["t"])
    paired = compare(base, head, known["pass_rate"])
    # A tag's rate judged twice (its tolerance, an absolute bar) is one bar pair in the charts.
    verdicts = [Verdict("tag_t_pass_rate", 0.75, 0.5, "warn", ""), Verdict("tag_t_pass_rate", 0.75, 0.5, "ok", "")]
    power = of_comparison(paired, pass_rate=0.8, alpha=0.05, detect=0.1)
    result = GateResult(verdicts=verdicts, paired={"pass_rate": paired}, power=power)
    inputs = GateInputs("main", Policy(SETTINGS.thresholds, SETTINGS.gate), {}, {}, known, head, base)
    rows = gate_page.rows(result, inputs)
    assert [(r["id"], r["flip"], r["base"], r["head"]) for r in rows] == [
        ("broke", "pass→fail", "pass", "fail"),
        ("fixed", "fail→pass", "fail", "pass"),
        ("wobbly", "flaky", "pass", "flaky"),
        ("gone", "", "pass", "absent"),
        ("keep", "", "pass", "pass"),
        ("new", "", "absent", "pass"),
    ]
    assert rows[0]["changed"] and not rows[4]["changed"]
    html = gate_page.render(result, inputs)
    assert [r["id"] for r in data_of(html)["rows"]][:2] == ["broke", "fixed"]
    assert "Pass rate per tag" in html and "<h2>Power</h2><p>This golden set detects" in html
    markdown = render_markdown(result, inputs)  # the PR comment: the same rates as a Mermaid chart
    assert "```mermaid\nxychart-beta\n" in markdown and "bar [0.7500]\n    bar [0.5000]" in markdown
    unusable = gate_page.render_unusable("main", HOSTILE)
    assert "&lt;img src=x" in unusable and "<img" not in unusable
