"""`drift`: has production moved away from what the golden set describes?

    drift --reference data/processed/eval_set.jsonl [--reference-results eval/results.jsonl]
          --current captures/ [--probe] --out-dir drift

writes `drift/metrics.json` (flat numbers, a DVC metric) and `drift/report.md`, prints one line and
exits 0 (no drift), 1 (drift) or 2 (nothing could be judged, or bad input).

Per target (a flow `flow:<name>` or a prompt id, as golden examples and capture records name it):

- request length: total characters of the request's texts, reference = the eval examples' inputs;
- reply length: the same over the reply, reference = `--reference-results` outputs of that target;
- category mix (flows with `Flow.category`) and the fallback category's share (`Flow.fallback`);
- refusal rate: replies matching `drift.refusal_pattern`, reference = `--reference-results` outputs.

A flow's reference requests and categories also come from prompt examples whose `input` the flow's
request schema accepts (a prompt that classifies the same messages the flow receives), their
category being `Flow.category` of their `expected` where that applies: small golden sets hold only a
few end-to-end examples. Reference texts are redacted as captures are, so lengths compare like with like.

Each of these is a permutation test (divergence.py). It flags drift only when its p-value is below
`alpha / tests run` (Bonferroni: the whole report's false-alarm rate is at most `alpha`) AND its
effect reaches its bar (`min_ks`, `min_psi`, `max_share_increase`): with a million answers every
tiny shift is significant, and a shift nobody would act on is not drift. A target with fewer than
`min_records` captured answers is not judged on its distributions.

Across targets, three rules (no test: they are facts, not estimates):

- provider: an answer's provider (the response's `model` and `system_fingerprint`) that the
  reference results never saw is drift, however few answers carry it;
- negative feedback: the thumbs-down share of ratings above `max_negative_feedback_rate`, once
  there are `min_feedback` ratings;
- `--probe` (probe.py): a few eval examples re-asked now, without the cache, and paired with main's
  answers: drift when more than `max_probe_changed` of them changed, or another provider answered.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import settings as settings_mod
from .. import strict_json
from ..app.contract import App, Flow
from ..errors import UserError, quote, read_text
from ..evaluation import golden
from ..evaluation.results import Result, ResultsError, parse
from ..serving.observability import Redactor
from ..settings import DriftSettings
from . import divergence, records
from .probe import Probed

MIN_REFERENCE = 5  # reference values below which a test is not run: one example is no distribution
SIGNALS = ("request_length", "reply_length", "category_mix", "fallback_share", "refusal_rate")


@dataclass
class Sample:
    """What one side (reference or current) shows of one target."""

    requests: list[int] = field(default_factory=list)  # characters of each request's texts
    replies: list[int] = field(default_factory=list)  # characters of each reply's texts
    categories: list[str] = field(default_factory=list)
    refusals: list[bool] = field(default_factory=list)  # per reply
    answers: int = 0  # current side: captured answers (failed ones too)


@dataclass(frozen=True)
class Signal:
    """One thing judged: its numbers (for metrics.json) and what it says, in words."""

    target: str  # a flow or prompt target, or "all" for the rules across targets
    name: str
    drifted: bool
    numbers: Mapping[str, float]
    says: str


@dataclass(frozen=True)
class Skipped:
    """One thing not judged, and why."""

    target: str
    name: str
    why: str


@dataclass
class Verdict:
    signals: list[Signal] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    tests: int = 0  # distribution tests run (the Bonferroni divisor)
    level: float = 0.0  # the p-value a test must beat
    notes: list[str] = field(default_factory=list)

    @property
    def drifted(self) -> list[Signal]:
        return [s for s in self.signals if s.drifted]


# ------------------------------------------------------------------------------------------- samples


def texts(value: Any) -> Iterator[str]:
    """Every string leaf of a JSON value (object keys are structure, not content)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from texts(item)
    elif isinstance(value, list):
        for item in value:
            yield from texts(item)


def reply_value(target: str, reply: Any) -> Any:
    """What a reply says: a flow's reply body; a prompt route's `output` (not its id and version)."""
    if not target.startswith("flow:") and isinstance(reply, Mapping) and "output" in reply:
        return reply["output"]
    return reply


def result_value(output: str) -> Any:
    """A results.jsonl output as the service would have sent it: the JSON it holds, else the text."""
    try:
        parsed = strict_json.loads(output)
    except ValueError:
        return output
    return parsed if isinstance(parsed, dict | list) else output


def category_of(flow: Flow, reply: Any) -> str | None:
    """`Flow.category` of a reply (or of an example's `expected`), None where it does not apply."""
    if flow.category is None or not isinstance(reply, Mapping):
        return None
    try:
        category = flow.category(reply)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError):
        return None
    return category if isinstance(category, str) else None


def accepts(flow: Flow) -> Callable[[Any], bool]:
    import jsonschema

    validator = jsonschema.Draft202012Validator(flow.request)
    return validator.is_valid


def reference_samples(
    examples: Sequence[golden.Example],
    results: Sequence[Result],
    app: App,
    refusal: re.Pattern[str],
    redact: Callable[[str], str],
) -> dict[str, Sample]:
    """target -> what the eval set (and main's results of it) say production should look like."""
    samples: dict[str, Sample] = {}

    def chars(value: Any) -> int:
        return sum(len(redact(text)) for text in texts(value))

    for example in examples:
        samples.setdefault(example.target, Sample()).requests.append(chars(example.input))
    for name, flow in app.flows.items():
        sample = samples.setdefault(f"flow:{name}", Sample())
        valid = accepts(flow)
        for example in examples:
            if example.flow is None and valid(example.input):
                sample.requests.append(chars(example.input))
            if example.flow == name or (example.flow is None and valid(example.input)):
                category = category_of(flow, example.expectations.get("expected"))
                if category is not None:
                    sample.categories.append(category)
    for result in results:
        if result.output is None:
            continue
        said = [redact(text) for text in texts(result_value(result.output))]
        sample = samples.setdefault(result.target, Sample())
        sample.replies.append(sum(map(len, said)))
        sample.refusals.append(any(refusal.search(text) for text in said))
    return samples


def current_samples(answers: Sequence[records.Answer], app: App, refusal: re.Pattern[str]) -> dict[str, Sample]:
    """target -> what the captured answers show (their texts were redacted when captured)."""
    samples: dict[str, Sample] = {}
    for answer in answers:
        sample = samples.setdefault(answer.target, Sample())
        sample.answers += 1
        sample.requests.append(sum(map(len, texts(answer.request))))
        if not answer.ok:
            continue
        said = list(texts(reply_value(answer.target, answer.reply)))
        sample.replies.append(sum(map(len, said)))
        sample.refusals.append(any(refusal.search(text) for text in said))
        category = answer.data.get("category")
        flow = app.flows.get(answer.target.removeprefix("flow:")) if answer.target.startswith("flow:") else None
        if not isinstance(category, str) and flow is not None:
            category = category_of(flow, answer.reply)
        if isinstance(category, str):
            sample.categories.append(category)
    return samples


def providers_of(value: Any) -> set[str]:
    """The providers a record names: results' and captures' `"model fingerprint=fp; ..."` text, or an
    object with `model` and `system_fingerprint` (or `fingerprint`)."""
    if isinstance(value, str):
        return {p.strip() for p in value.split(";") if p.strip()}
    if isinstance(value, Mapping):
        model = str(value.get("model") or "")
        fingerprint = str(value.get("system_fingerprint") or value.get("fingerprint") or "")
        text = f"{model} fingerprint={fingerprint}" if fingerprint else model
        return {text} if text else set()
    if isinstance(value, list):
        return set().union(*map(providers_of, value)) if value else set()
    return set()


# ------------------------------------------------------------------------------------------ judging


@dataclass(frozen=True)
class _Planned:
    target: str
    name: str
    run: Callable[[int], divergence.Test]  # seed -> the test
    bar: float
    words: Callable[[divergence.Test, bool], str]
    effect: str  # what the effect is, in the report's words


def _pct(share: float) -> str:
    return f"{100 * share:.0f}%"


def _median(values: Sequence[int]) -> str:
    return f"{statistics.median(values):.0f}"


def _plan(
    target: str, ref: Sample, cur: Sample, flow: Flow | None, config: DriftSettings
) -> Iterator[_Planned | Skipped]:
    b = config.permutations

    def enough(name: str, n_ref: int, n_cur: int, what: str) -> Skipped | None:
        if n_ref < MIN_REFERENCE:
            return Skipped(target, name, f"the reference holds {n_ref} {what} (a test needs {MIN_REFERENCE})")
        if n_cur < config.min_records:
            return Skipped(target, name, f"{n_cur} current {what}, fewer than drift.min_records={config.min_records}")
        return None

    def lengths(name: str, refs: list[int], curs: list[int], what: str, where: str) -> Iterator[_Planned | Skipped]:
        missing = enough(name, len(refs), len(curs), what)
        if missing:
            yield missing
            return

        def words(test: divergence.Test, drifted: bool) -> str:
            way = "longer" if statistics.median(curs) >= statistics.median(refs) else "shorter"
            head = f"{where}s are {way}" if drifted else f"{where} length"
            return f"{head}: median {_median(refs)} -> {_median(curs)} characters"

        yield _Planned(
            target,
            name,
            lambda s: divergence.ks(refs, curs, permutations=b, seed=s),
            config.min_ks,
            words,
            "KS distance",
        )

    yield from lengths("request_length", ref.requests, cur.requests, "requests", "request")
    if ref.replies or cur.replies:
        yield from lengths("reply_length", ref.replies, cur.replies, "replies", "reply")
        missing = enough("refusal_rate", len(ref.refusals), len(cur.refusals), "replies")
        if missing:
            yield missing
        else:

            def refusals(test: divergence.Test, drifted: bool) -> str:
                was, now = sum(ref.refusals) / len(ref.refusals), sum(cur.refusals) / len(cur.refusals)
                return f"{'more refusals' if drifted else 'refusals'}: {_pct(was)} -> {_pct(now)} of replies"

            yield _Planned(
                target, "refusal_rate",
                lambda s: divergence.share_increase(ref.refusals, cur.refusals, permutations=b, seed=s),
                config.max_share_increase, refusals, "rise",
            )  # fmt: skip
    if flow is None or flow.category is None:
        return
    missing = enough("category_mix", len(ref.categories), len(cur.categories), "categories")
    if missing:
        yield missing
        return

    def mix(test: divergence.Test, drifted: bool) -> str:
        was, now = Counter(ref.categories), Counter(cur.categories)
        moves = sorted(
            set(was) | set(now),
            key=lambda c: -abs(now[c] / len(cur.categories) - was[c] / len(ref.categories)),
        )
        shown = ", ".join(
            f"{c} {_pct(was[c] / len(ref.categories))} -> {_pct(now[c] / len(cur.categories))}" for c in moves[:4]
        )
        return f"{'the category mix moved' if drifted else 'category mix'}: {shown}"

    yield _Planned(
        target, "category_mix",
        lambda s: divergence.category_mix(ref.categories, cur.categories, permutations=b, seed=s),
        config.min_psi, mix, "PSI",
    )  # fmt: skip
    if flow.fallback is None:
        return
    fallback = flow.fallback
    was_fallback = [c == fallback for c in ref.categories]
    now_fallback = [c == fallback for c in cur.categories]

    def share(test: divergence.Test, drifted: bool) -> str:
        was, now = sum(was_fallback) / len(was_fallback), sum(now_fallback) / len(now_fallback)
        verb = "more" if drifted else "share of"
        return f"{verb} {quote(fallback)} (the fallback category): {_pct(was)} -> {_pct(now)}"

    yield _Planned(
        target, "fallback_share",
        lambda s: divergence.share_increase(was_fallback, now_fallback, permutations=b, seed=s),
        config.max_share_increase, share, "rise",
    )  # fmt: skip


def judge_distributions(
    reference: Mapping[str, Sample], current: Mapping[str, Sample], app: App, config: DriftSettings, verdict: Verdict
) -> None:
    """Every target's distribution tests, Bonferroni-corrected together, into `verdict`."""
    planned: list[_Planned] = []
    for target in sorted(current):
        cur = current[target]
        if target not in reference:
            verdict.skipped.append(Skipped(target, "distributions", "the reference has no example of this target"))
            continue
        if cur.answers < config.min_records:
            why = f"{cur.answers} captured answers, fewer than drift.min_records={config.min_records}"
            verdict.skipped.append(Skipped(target, "distributions", why))
            continue
        flow = app.flows.get(target.removeprefix("flow:")) if target.startswith("flow:") else None
        for item in _plan(target, reference[target], cur, flow, config):
            (planned if isinstance(item, _Planned) else verdict.skipped).append(item)  # type: ignore[arg-type]
    if not planned:
        return
    verdict.tests = len(planned)
    verdict.level = config.alpha / len(planned)
    if 1 / (1 + config.permutations) >= verdict.level:
        need = int(len(planned) / config.alpha) + 1
        verdict.notes.append(
            f"drift.permutations={config.permutations} cannot give a p-value below {verdict.level:.2g} "
            f"({len(planned)} tests): no test can flag drift; set it to at least {need}"
        )
    for item in planned:
        test = item.run(divergence.seed_of(item.target, item.name))
        drifted = test.p_value < verdict.level and test.effect >= item.bar
        numbers = {
            "statistic": test.statistic, "p_value": test.p_value, "effect": test.effect, "bar": item.bar,
            "n_reference": test.n_reference, "n_current": test.n_current, **test.more,
        }  # fmt: skip
        evidence = (
            f"{item.effect} {test.effect:.3g} {'>=' if test.effect >= item.bar else '<'} {item.bar:g}, "
            f"p = {test.p_value:.2g} {'<' if test.p_value < verdict.level else '>='} {verdict.level:.2g}"
        )
        says = f"{item.words(test, drifted)} ({evidence})"
        verdict.signals.append(Signal(item.target, item.name, drifted, numbers, says))


def judge_provider(results: Sequence[Result] | None, answers: Sequence[records.Answer], verdict: Verdict) -> None:
    if results is None:
        verdict.skipped.append(Skipped("all", "provider", "no --reference-results to compare providers with"))
        return
    known = set().union(*(providers_of(r.provider) for r in results)) if results else set()
    seen: Counter[str] = Counter()
    for answer in answers:
        seen.update(providers_of(answer.data.get("provider")))
    if not known:
        why = "the reference results record no provider (written before providers were, or the endpoint sends none)"
        verdict.skipped.append(Skipped("all", "provider", why))
        return
    if not seen:
        verdict.skipped.append(Skipped("all", "provider", "no captured answer records its provider"))
        return
    new = {p: n for p, n in seen.items() if p not in known}
    listed = ", ".join(f"{quote(p)} ({n} answers)" for p, n in sorted(new.items(), key=lambda kv: -kv[1]))
    says = (
        f"a provider the reference results never saw answered in production: {listed}; "
        f"the reference saw {', '.join(map(quote, sorted(known)))}"
        if new
        else f"every answer came from a provider the reference saw ({', '.join(map(quote, sorted(seen)))})"
    )
    numbers = {"new": len(new), "new_answers": sum(new.values()), "seen": len(seen), "known": len(known)}
    verdict.signals.append(Signal("all", "provider", bool(new), numbers, says))


def judge_feedback(ratings: Sequence[Mapping[str, Any]], config: DriftSettings, verdict: Verdict) -> None:
    n = len(ratings)
    if n < config.min_feedback:
        why = f"{n} ratings, fewer than drift.min_feedback={config.min_feedback}"
        verdict.skipped.append(Skipped("all", "negative_feedback", why))
        return
    rate = sum(r.get("rating") == "down" for r in ratings) / n
    drifted = rate > config.max_negative_feedback_rate
    says = (
        f"{'too many' if drifted else ''} thumbs down: {_pct(rate)} of {n} ratings "
        f"({'above' if drifted else 'within'} drift.max_negative_feedback_rate={config.max_negative_feedback_rate})"
    ).strip()
    numbers = {"rate": rate, "ratings": n, "bar": config.max_negative_feedback_rate}
    verdict.signals.append(Signal("all", "negative_feedback", drifted, numbers, says))


def judge_probe(probed: Probed, config: DriftSettings, verdict: Verdict) -> None:
    if not probed.asked:
        why = f"drift.probe_examples={config.probe_examples} and main answered none of them"
        verdict.skipped.append(Skipped("all", "probe", why if config.probe_examples else "drift.probe_examples=0"))
        return
    if not probed.answered:
        why = f"none of {len(probed.asked)} probe calls answered (first error: {probed.first_error})"
        verdict.skipped.append(Skipped("all", "probe", why))
        return
    share = len(probed.changed) / probed.answered
    drifted = share > config.max_probe_changed or bool(probed.providers)
    says = (
        f"{len(probed.changed)} of {probed.answered} answers re-asked without the cache differ from main's "
        f"({_pct(share)}; at most {_pct(config.max_probe_changed)} may)"
    )
    if probed.changed:
        says += f": {', '.join(probed.changed[:5])}"
    if probed.providers:
        pairs = sorted({f"{quote(was)} -> {quote(now)}" for was, now in probed.providers.values()})
        says += f"; another provider answered: {', '.join(pairs)}"
    numbers = {
        "changed_share": share, "changed": len(probed.changed), "answered": probed.answered,
        "asked": len(probed.asked), "provider_changed": len(probed.providers), "bar": config.max_probe_changed,
    }  # fmt: skip
    verdict.signals.append(Signal("all", "probe", drifted, numbers, says))


def judge(
    examples: Sequence[golden.Example],
    results: Sequence[Result] | None,
    captures: records.Captures,
    app: App,
    config: DriftSettings,
    redact: Callable[[str], str] | None = None,
) -> Verdict:
    """Everything that can be judged without calling the model (the probe adds its own signal).
    `redact`: what the service's capture applies to texts (lengths only: its hash key is irrelevant)."""
    refusal = re.compile(config.refusal_pattern)
    verdict = Verdict()
    reference = reference_samples(examples, results or (), app, refusal, redact or Redactor())
    current = current_samples(captures.answers, app, refusal)
    judge_distributions(reference, current, app, config, verdict)
    judge_provider(results, captures.answers, verdict)
    judge_feedback(captures.feedback, config, verdict)
    if captures.skipped:
        verdict.notes.append(f"{captures.skipped} unreadable capture line(s) skipped (first: {captures.first_skipped})")
    return verdict


# ------------------------------------------------------------------------------------------ outputs


def metrics(verdict: Verdict, captures: records.Captures) -> dict[str, float]:
    """Flat numbers for `drift/metrics.json` (what `dvc metrics diff` compares between commits)."""
    values: dict[str, float] = {
        "drifted": int(bool(verdict.drifted)),
        "signals_judged": len(verdict.signals),
        "signals_drifted": len(verdict.drifted),
        "tests": verdict.tests,
        "answers": len(captures.answers),
        "ratings": len(captures.feedback),
        "skipped_lines": captures.skipped,
    }
    for signal in verdict.signals:
        prefix = signal.name if signal.target == "all" else f"{signal.target}.{signal.name}"
        values[f"{prefix}.drifted"] = int(signal.drifted)
        values.update({f"{prefix}.{key}": _round(value) for key, value in signal.numbers.items()})
    return values


def _round(value: float) -> float:
    return value if isinstance(value, int) else round(float(value), 6)


def render(verdict: Verdict, sources: str) -> str:
    """The Markdown report: the verdict, what moved, every number, and what was not judged and why."""
    drifted = verdict.drifted
    if drifted:
        head = f"**Drift**: {len(drifted)} of {len(verdict.signals)} judged signals moved."
    elif verdict.signals:
        head = f"**No drift**: {len(verdict.signals)} signals judged, none moved."
    else:
        head = "**Cannot judge**: nothing could be judged (see below)."
    lines = ["# Drift report", "", head, "", sources, ""]
    if verdict.tests:
        lines += [
            f"A distribution test flags drift when its permutation p-value is below alpha / tests = "
            f"{verdict.level * verdict.tests:g} / {verdict.tests} = {verdict.level:.2g} (so the whole report "
            "raises a false alarm at most alpha of the time) and its effect reaches its bar.",
            "",
        ]
    if drifted:
        lines += ["## What moved", ""] + [f"- **{s.target} {s.name}**: {s.says}." for s in drifted] + [""]
    if verdict.signals:
        lines += ["## Judged", "", "| target | signal | drifted | numbers | in words |", "|---|---|---|---|---|"]
        for s in verdict.signals:
            numbers = ", ".join(f"{k} {_show(v)}" for k, v in s.numbers.items())
            lines.append(f"| {s.target} | {s.name} | {'yes' if s.drifted else 'no'} | {numbers} | {s.says} |")
        lines.append("")
    if verdict.skipped:
        lines += ["## Not judged", ""] + [f"- {s.target} {s.name}: {s.why}." for s in verdict.skipped] + [""]
    if verdict.notes:
        lines += ["## Notes", ""] + [f"- {note}" for note in verdict.notes] + [""]
    return "\n".join(lines)


def _show(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:.4g}"


def summary(verdict: Verdict, out_dir: Path) -> str:
    if verdict.drifted:
        names = ", ".join(s.name if s.target == "all" else f"{s.target} {s.name}" for s in verdict.drifted)
        return f"drift: {names} ({len(verdict.drifted)} of {len(verdict.signals)} signals); report {out_dir}/report.md"
    if verdict.signals:
        return (
            f"no drift: {len(verdict.signals)} signals judged, {len(verdict.skipped)} not; report {out_dir}/report.md"
        )
    return f"cannot judge: nothing could be judged ({len(verdict.skipped)} signals skipped); report {out_dir}/report.md"


def write(path: Path, text: str) -> None:
    """Replace `path` whole or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None, prog: str = "drift") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", type=Path, required=True, help="the eval set (or a golden-set file)")
    parser.add_argument("--reference-results", type=Path, help="main's eval/results.jsonl: replies and providers")
    parser.add_argument("--current", type=Path, nargs="+", required=True, help="capture files or directories")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--prompts", type=Path, default=Path("prompts"), help="for --probe")
    parser.add_argument("--probe", action="store_true", help="re-ask drift.probe_examples examples, uncached")
    parser.add_argument("--out-dir", type=Path, default=Path("drift"))
    args = parser.parse_args(argv)
    if args.probe and args.reference_results is None:
        raise UserError("--probe needs --reference-results (main's answers, to pair the probe's with)")

    from ..app.loader import load_app

    config = settings_mod.load(args.params)
    app = load_app(config.app.entry)
    examples = golden.load(args.reference)
    results = None
    if args.reference_results is not None:
        results = parse(read_text(args.reference_results, ResultsError), str(args.reference_results))
    captures = records.load(args.current)
    if not captures.answers and not captures.feedback:
        raise UserError(f"{', '.join(map(str, args.current))}: nothing to judge: {captures.note()}")

    verdict = judge(examples, results, captures, app, config.drift)
    if args.probe:
        from .probe import probe

        judge_probe(probe(config, args.params, args.prompts, app, examples, results or []), config.drift, verdict)

    sources = (
        f"Reference: `{args.reference}` ({len(examples)} examples)"
        + (f", `{args.reference_results}` ({len(results)} results)" if results is not None else "")
        + f". Current: {captures.note()}."
    )
    write(args.out_dir / "metrics.json", json.dumps(metrics(verdict, captures), indent=2) + "\n")
    write(args.out_dir / "report.md", render(verdict, sources))
    line = summary(verdict, args.out_dir)
    print(line, file=sys.stdout)
    if verdict.drifted:
        return 1
    return 0 if verdict.signals else 2
