"""The drift probe: re-ask a few eval examples now, past the response cache, and pair the answers
with main's (`eval/results.jsonl`).

A hosted model can change under the same name (new weights, a new runtime, another quantisation):
the eval's cache would keep replaying last week's answers and never notice. The probe asks the
configured endpoint again through the evaluation's own path (runner, solver, client: the same
render, call and parse), with the cache off, so what it sees is what the endpoint says today.

The examples are chosen deterministically, the `drift.probe_examples` with the lowest sha256 of their
id among those main answered, so two runs probe the same ones and a change between them is the
endpoint's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ... import settings as settings_mod
from ...app.contract import App
from ...errors import UserError
from ...evaluation import golden
from ...evaluation.results import Result


@dataclass(frozen=True)
class Probed:
    """What the probe saw: the examples asked, those answered, and how they compare with main's."""

    asked: list[str]
    answered: int
    changed: list[str] = field(default_factory=list)  # ids whose output differs from main's
    providers: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> (main's, now) where they differ
    first_error: str = ""


def choose(examples: Sequence[golden.Example], main: Sequence[Result], count: int) -> list[golden.Example]:
    """The `count` examples main answered (first repeat) with the lowest sha256 of their id."""
    answered = {r.id for r in main if r.repeat == 0 and r.output is not None}
    candidates = [e for e in examples if e.id in answered]
    return sorted(candidates, key=lambda e: hashlib.sha256(e.id.encode()).hexdigest())[:count]


def probe(
    config: settings_mod.Settings,
    params: Path,
    prompts_dir: Path,
    app: App,
    examples: Sequence[golden.Example],
    main: Sequence[Result],
) -> Probed:
    """Ask the chosen examples once each, uncached, and pair the answers with main's."""
    from ...app.prompts import load_all
    from ...app.runtime import client_chat, connect, endpoint_identity, sampling
    from ...evaluation import runner
    from ...evaluation.cache import ResponseCache

    chosen = choose(examples, main, config.drift.probe_examples)
    if not chosen:
        return Probed([], 0)
    prompts = load_all(prompts_dir)
    golden.check_targets(chosen, prompts, app.flows, "the probe's examples")
    data = app.load(params.parent) if any(e.flow for e in chosen) else None
    model = config.model
    if model.api_key_env:
        model.api_key()  # a missing key is one clear error, not a probe of errors
    evaluation = runner.Evaluation(
        solver=runner.app_solver(prompts, app, data),
        cache=ResponseCache(config.eval.cache_dir, enabled=False),
        keying=runner.Keying(endpoint_identity(model), model.name, sampling(model)),
        versions=runner.target_versions(prompts, app),
    )
    tasks = runner.plan(chosen, 1)
    with connect(model, config.eval) as client:
        # Every error is kept (not an abort): the probe reports how many answered.
        outcome = runner.run(
            tasks, evaluation, client_chat(client, model), concurrency=config.eval.concurrency, max_error_rate=1.0
        )
    if outcome.aborted:
        raise UserError(f"the probe stopped: {outcome.aborted}")
    before = {r.id: r for r in main if r.repeat == 0}
    answered = [r for r in outcome.results if r.output is not None]
    errors = [r.error for r in outcome.results if r.error]
    return Probed(
        asked=[e.id for e in chosen],
        answered=len(answered),
        changed=[r.id for r in answered if r.output != before[r.id].output],
        providers={
            r.id: (before[r.id].provider, r.provider)
            for r in answered
            if before[r.id].provider and r.provider != before[r.id].provider
        },
        first_error=str(errors[0]) if errors else "",
    )
