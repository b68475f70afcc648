"""The viewer's stylesheet and script, inlined into every page (page.py pins them by hash in its CSP).

The script only reads the page's JSON data block and builds rows with createElement/textContent:
no data ever passes through innerHTML, so a model's `<img onerror=...>` stays text. It renders the
first PAGE matching rows and adds more on demand, so 5,000 examples filter as fast as 50.
"""

STYLE = r"""
:root { --ok: #1a7f37; --bad: #cf222e; --warn: #9a6700; --err: #8250df; --line: #d0d7de; --dim: #57606a; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1280px;
  padding: 16px 24px; color: #1f2328; }
h1 { font-size: 22px; margin: 4px 0 8px; } h2 { font-size: 17px; margin: 20px 0 8px; }
h4 { margin: 8px 0 2px; font-size: 12px; color: var(--dim); text-transform: uppercase; }
table.grid { border-collapse: collapse; margin: 4px 0 12px; }
table.grid th, table.grid td { border: 1px solid var(--line); padding: 3px 8px; text-align: left; vertical-align: top; }
table.grid td.num { text-align: right; font-variant-numeric: tabular-nums; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; margin: 8px 0; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 8px 12px; min-width: 140px; }
.card b { display: block; font-size: 19px; } .card span { color: var(--dim); font-size: 12px; }
.charts { display: flex; flex-wrap: wrap; gap: 24px; }
svg.chart text { font-size: 11px; fill: #1f2328; } svg.chart .axis { stroke: var(--dim); }
svg.chart .s0 { fill: #0969da; } svg.chart .s1 { fill: #bf8700; } svg.chart .hist { fill: #8250df; }
.verdict-ok, .pass { color: var(--ok); } .verdict-bad, .fail { color: var(--bad); }
.error { color: var(--err); } .verdict-warn, .flaky { color: var(--warn); }
.controls { position: sticky; top: 0; background: #fff; padding: 8px 0; border-bottom: 1px solid var(--line);
  display: flex; flex-wrap: wrap; gap: 8px; align-items: center; z-index: 1; }
.controls input[type=search] { flex: 1; min-width: 220px; padding: 4px 8px; }
#count { color: var(--dim); }
details.row { border-bottom: 1px solid var(--line); }
details.row > summary { cursor: pointer; padding: 4px 2px; display: flex; gap: 10px; align-items: baseline; }
details.row > summary > .preview { flex: 1; overflow: hidden; white-space: nowrap; text-overflow: ellipsis;
  color: var(--dim); }
.badge { font-size: 11px; font-weight: 600; text-transform: uppercase; min-width: 64px; }
.id { font-family: ui-monospace, monospace; } .tags { color: var(--dim); font-size: 12px; }
.body { padding: 4px 12px 12px; }
pre { white-space: pre-wrap; overflow-wrap: anywhere; margin: 0; padding: 6px 8px; background: #f6f8fa;
  border-radius: 4px; max-height: 480px; overflow-y: auto; }
.msg { margin: 4px 0; } .msg .role { font-size: 11px; color: var(--dim); }
.sides { display: grid; grid-template-columns: 1fr 1fr; gap: 12px; }
ins { background: #dafbe1; text-decoration: none; } del { background: #ffebe9; }
button#more { margin: 12px 0; padding: 6px 16px; }
ul.scores { margin: 2px 0; padding-left: 18px; }
"""

SCRIPT = r"""
"use strict";
(function () {
  const data = JSON.parse(document.getElementById("data").textContent);
  const PAGE = 200;

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  function field(parent, title, text) {
    if (text === null || text === undefined || text === "") return;
    parent.appendChild(el("h4", null, title));
    parent.appendChild(el("pre", null, text));
  }
  function options(select, values) {
    for (const value of values) {
      const option = el("option", null, value);
      option.value = value;
      select.appendChild(option);
    }
  }
  function preview(text) {
    return text === null || text === undefined ? "" : String(text).slice(0, 240);
  }
  // A row's details are built when it is first opened: the page holds summaries only.
  function lazyRow(summaryParts, cls, id, fill) {
    const row = el("details", "row" + (cls ? " row-" + cls : ""));
    row.dataset.id = id;
    const summary = el("summary");
    for (const part of summaryParts) summary.appendChild(part);
    row.appendChild(summary);
    row.addEventListener("toggle", function () {
      if (row.open && row.childElementCount === 1) {
        const body = el("div", "body");
        fill(body);
        row.appendChild(body);
      }
    });
    return row;
  }

  function list(rows, matches, render, controls) {
    const target = document.getElementById("rows");
    const count = document.getElementById("count");
    const more = document.getElementById("more");
    let matching = [];
    let shown = 0;
    function showMore() {
      const end = Math.min(shown + PAGE, matching.length);
      const fragment = document.createDocumentFragment();
      for (let i = shown; i < end; i++) fragment.appendChild(render(matching[i]));
      target.appendChild(fragment);
      shown = end;
      count.dataset.matching = String(matching.length);
      count.dataset.shown = String(shown);
      count.textContent = matching.length + " of " + rows.length + " match" +
        (shown < matching.length ? " (first " + shown + " shown)" : "");
      more.hidden = shown >= matching.length;
    }
    function apply() {
      matching = rows.filter(matches);
      target.replaceChildren();
      shown = 0;
      showMore();
    }
    for (const control of controls) control.addEventListener("input", apply);
    more.addEventListener("click", showMore);
    apply();
  }

  function evalView() {
    const texts = data.texts;
    const status = document.getElementById("status");
    const tag = document.getElementById("tag");
    const target = document.getElementById("target");
    const search = document.getElementById("search");
    options(tag, data.tags);
    options(target, data.targets);
    for (const r of data.rows) {
      r.search = [r.id, r.target, r.tags.join(" "), r.input, r.output, r.expected, r.error]
        .filter(function (x) { return x; }).join("\n").toLowerCase();
    }
    function matches(r) {
      const s = status.value;
      if (s === "flaky" ? !r.flaky : s !== "all" && r.status !== s) return false;
      if (tag.value !== "all" && r.tags.indexOf(tag.value) < 0) return false;
      if (target.value !== "all" && r.target !== target.value) return false;
      const q = search.value.trim().toLowerCase();
      return !q || r.search.indexOf(q) >= 0;
    }
    function render(r) {
      const parts = [
        el("span", "badge " + r.status, r.flaky ? r.status + " · flaky" : r.status),
        el("span", "id", r.repeats > 1 ? r.id + " #" + r.repeat : r.id),
        el("span", "target", r.target),
        el("span", "tags", r.tags.join(", ")),
        el("span", "latency", r.latency_ms === null ? "" : Math.round(r.latency_ms) + " ms"),
        el("span", "preview", preview(r.error ? "error: " + r.error : r.output)),
      ];
      return lazyRow(parts, r.status, r.id, function (body) {
        field(body, "Input", r.input);
        if (r.messages) {
          body.appendChild(el("h4", null, "Messages sent"));
          for (const m of r.messages) {
            const box = el("div", "msg");
            box.appendChild(el("div", "role", m[0]));
            box.appendChild(el("pre", null, texts[m[1]]));
            body.appendChild(box);
          }
        }
        field(body, "Output", r.output);
        field(body, "Error", r.error);
        field(body, "Expected", r.expected);
        field(body, "Judge", r.judge);
        if (r.scores.length) {
          body.appendChild(el("h4", null, "Scorers"));
          const ul = el("ul", "scores");
          for (const s of r.scores) {
            ul.appendChild(el("li", s[1] ? "pass" : "fail", (s[1] ? "✓ " : "✗ ") + s[0] + (s[2] ? ": " + s[2] : "")));
          }
          body.appendChild(ul);
        }
      });
    }
    list(data.rows, matches, render, [status, tag, target, search]);
  }

  function gateView() {
    const flip = document.getElementById("flip");
    const search = document.getElementById("search");
    function side(segments, keep, mark) {
      const pre = el("pre");
      for (const s of segments) {
        if (s[0] === 0) pre.appendChild(document.createTextNode(s[1]));
        else if (s[0] === keep) pre.appendChild(el(mark, null, s[1]));
      }
      return pre;
    }
    for (const r of data.rows) {
      const outputs = r.diff.map(function (s) { return s[1]; }).join("");
      r.search = [r.id, r.input, r.expected, outputs].filter(function (x) { return x; }).join("\n").toLowerCase();
    }
    function matches(r) {
      const f = flip.value;
      if (f === "flipped" ? !(r.flip === "pass→fail" || r.flip === "fail→pass")
        : f === "changed" ? !r.changed : f !== "all" && r.flip !== f) return false;
      const q = search.value.trim().toLowerCase();
      return !q || r.search.indexOf(q) >= 0;
    }
    function render(r) {
      const parts = [
        el("span", "badge " + (r.flip === "pass→fail" ? "fail" : r.flip === "fail→pass" ? "pass" : r.flip),
          r.flip || (r.changed ? "changed" : "same")),
        el("span", "id", r.id),
        el("span", r.base, r.base),
        el("span", null, "→"),
        el("span", r.head, r.head),
        el("span", "preview", preview(r.input)),
      ];
      return lazyRow(parts, r.flip ? "flipped" : "", r.id, function (body) {
        field(body, "Input", r.input);
        field(body, "Expected", r.expected);
        const sides = el("div", "sides");
        const left = el("div");
        left.appendChild(el("h4", null, "Base output (" + r.base + ")"));
        left.appendChild(side(r.diff, -1, "del"));
        const right = el("div");
        right.appendChild(el("h4", null, "Head output (" + r.head + ")"));
        right.appendChild(side(r.diff, 1, "ins"));
        sides.appendChild(left);
        sides.appendChild(right);
        body.appendChild(sides);
      });
    }
    list(data.rows, matches, render, [flip, search]);
  }

  if (data.kind === "eval") evalView();
  else if (data.kind === "gate") gateView();
})();
"""
