"""`<project> judge calibrate`: run the judge over the human labels and write the calibration file;
and the judge as `evaluate` (`setup`) and the gate's pairwise mode (`gate_pairwise`) reach it: one
endpoint, one set of cache keys, one reading of the calibration file."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from .. import settings as settings_mod
from ..app.prompts import Prompt, load_all
from ..app.runtime import client_chat, connect, endpoint_identity, sampling
from ..errors import UserError, read_text
from ..evaluation.cache import ResponseCache
from ..evaluation.runner import CachedChat, Keying
from . import calibration, pairwise
from .rubric import Judge, is_verdict

if TYPE_CHECKING:
    from ..gate.inputs import GateInputs
    from ..gate.verdict import GateResult


def keying(settings: settings_mod.JudgeSettings) -> Keying:
    """The judge's cache keys: the same in `evaluate` and `judge calibrate`, so each reuses the other's verdicts."""
    model = settings.as_model()
    return Keying(endpoint_identity(model), model.name, sampling(model))


def usable(text: str) -> bool:
    """A judge reply worth caching: a verdict or a preference (anything else is an error)."""
    return is_verdict(text) or pairwise.is_preference(text)


def judge_of(config: settings_mod.Settings, prompts: Mapping[str, Prompt], calibrated: frozenset[str]) -> Judge:
    return Judge(config.judge.name, {p.id: p.judge for p in prompts.values() if p.judge}, calibrated)


def setup(config: settings_mod.Settings, prompts: Mapping[str, Prompt], root: Path = Path(".")) -> Judge | None:
    """The evaluation's judge (None when params.yaml configures none), with the calibrated rubric versions."""
    if not config.judge.enabled:
        return None
    config.judge.api_key()  # a missing key is a clear error before any call
    found = calibration.calibrated(root / config.judge.calibration, config.judge.min_kappa)
    return judge_of(config, prompts, found)


def pairwise_pairs(inputs: GateInputs, prompts: Mapping[str, Prompt]) -> list[pairwise.Pair]:
    """The examples whose first repeat the base and the head both answered, differently, that have
    a rubric (the golden line's, or its prompt's)."""
    if inputs.base_results is None:
        return []
    base = {r.id: r for r in inputs.base_results if r.repeat == 0 and r.output is not None and r.error is None}
    pairs = []
    for head in inputs.head_results:
        old = base.get(head.id)
        if head.repeat or head.output is None or head.error is not None or old is None or old.output == head.output:
            continue
        example = inputs.golden.get(head.id, {})
        prompt = prompts.get(head.target)
        rubric = example.get("judge") or (prompt.judge if prompt is not None else "")
        if isinstance(rubric, str) and rubric.strip():
            pairs.append(pairwise.Pair(head.id, rubric, example.get("input", {}), str(old.output), str(head.output)))
    return pairs


def pairwise_comparison(config: settings_mod.Settings, inputs: GateInputs) -> pairwise.Comparison | None:
    """The gate's pairwise judgement of base vs head (None unless `judge.pairwise` is on)."""
    settings = config.judge
    if not (settings.enabled and settings.pairwise):
        return None
    settings.api_key()
    pairs = pairwise_pairs(inputs, load_all(Path("prompts")))
    calibrated = (inputs.head_policy or inputs.policy).calibrated  # read once, by the gate's inputs
    model = settings.as_model()
    with ResponseCache(config.eval.cache_dir) as cache, connect(model, config.eval) as client:
        chat = CachedChat(cache, keying(settings), 0, client_chat(client, model), usable=usable)
        return pairwise.compare(pairs, settings.name, chat, calibrated)


def gate_pairwise(config: settings_mod.Settings, inputs: GateInputs, result: GateResult) -> str:
    """The gate's pairwise judgement: its verdict added to `result`, its report section returned."""
    from ..gate.verdict import Verdict

    judged = pairwise_comparison(config, inputs)
    if judged is None:
        return ""
    status, why = pairwise.decide(judged, inputs.policy.gate.alpha)
    result.verdicts.append(Verdict("judge_pairwise", None, None, status, why))
    return "\n" + "\n".join(pairwise.lines(judged, inputs.policy.gate.alpha))


def main(argv: list[str] | None = None, prog: str = "judge") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="action", required=True)
    run = sub.add_parser("calibrate", help="the judge vs the human labels: kappa per rubric version")
    run.add_argument("--params", type=Path, default=Path("params.yaml"))
    run.add_argument("--prompts", type=Path, default=Path("prompts"))
    run.add_argument("--labels", type=Path, help="default: params.yaml judge.labels")
    run.add_argument("--out", type=Path, help="default: params.yaml judge.calibration")
    run.add_argument("--no-cache", action="store_true", help="ask the judge again for every label")
    args = parser.parse_args(argv)

    config = settings_mod.load(args.params)
    settings = config.judge
    if not settings.enabled:
        raise UserError("judge.base_url is empty: set the judge's endpoint and name in params.yaml first")
    settings.api_key()
    prompts = load_all(args.prompts)
    labels_path = args.labels or Path(settings.labels)
    out = args.out or Path(settings.calibration)
    labels = calibration.parse_labels(
        read_text(labels_path, calibration.CalibrationError),
        str(labels_path),
        {p.id: p.judge for p in prompts.values() if p.judge},
    )
    model = settings.as_model()
    cache = ResponseCache(config.eval.cache_dir, enabled=not args.no_cache)
    with cache, connect(model, config.eval) as client:
        chat = CachedChat(cache, keying(settings), 0, client_chat(client, model), usable=usable)
        found = calibration.calibrate(labels, judge_of(config, prompts, frozenset()), chat)
    unanswered = [c for c in found if c.agreement is None]
    if unanswered:
        # The last calibration stays: a judge that could not be reached has not disagreed with anyone.
        raise UserError(
            f"the judge gave no usable verdict for rubric {unanswered[0].version} ({unanswered[0].judge_errors} "
            f"labels; first: {unanswered[0].first_error}); {out} left as it was"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(calibration.dumps(found, settings.name, settings.min_kappa))
    for line in calibration.describe(found, settings.min_kappa):
        print(line)
    print(f"{len(labels)} labels ({chat.made} judge calls) -> {out}")
    return 0
