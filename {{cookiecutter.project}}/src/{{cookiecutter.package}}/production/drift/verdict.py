"""The tests and rules of `drift`, judged into one `Verdict`: pure, given what was read."""

from __future__ import annotations

import re
import statistics
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ...app.contract import App, Flow
from ...errors import quote
from ...evaluation import golden
from ...evaluation.results import Result
from ...serving.observability import Redactor
from ...settings import DriftSettings
from .. import records
from . import divergence
from .probe import Probed
from .samples import Sample, current_samples, providers_of, reference_samples

MIN_REFERENCE = 5  # reference values below which a test is not run: one example is no distribution


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
            if isinstance(item, Skipped):
                verdict.skipped.append(item)
            else:
                planned.append(item)
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


def judge_feedback(feedback: Sequence[Mapping[str, Any]], config: DriftSettings, verdict: Verdict) -> None:
    # One vote per answer: a user who changes their mind (down, then up) counts once, as they left it.
    last = {f.get("request_id"): f for f in sorted(feedback, key=lambda f: str(f.get("at", "")))}
    ratings = list(last.values())
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
