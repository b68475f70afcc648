"""`<project> judge calibrate`: run the judge over the human labels and write the calibration file."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path

from .. import settings as settings_mod
from ..app.prompts import Prompt, load_all
from ..app.runtime import client_chat, connect, endpoint_identity, sampling
from ..errors import UserError, read_text
from ..evaluation.cache import ResponseCache
from ..evaluation.runner import CachedChat, Keying
from . import calibration
from .rubric import Judge, is_verdict


def keying(settings: settings_mod.JudgeSettings) -> Keying:
    """The judge's cache keys: the same in `evaluate` and `judge calibrate`, so each reuses the other's verdicts."""
    model = settings.as_model()
    return Keying(endpoint_identity(model), model.name, sampling(model))


def judge_of(config: settings_mod.Settings, prompts: Mapping[str, Prompt], calibrated: frozenset[str]) -> Judge:
    return Judge(config.judge.name, {p.id: p.judge for p in prompts.values() if p.judge}, calibrated)


def setup(config: settings_mod.Settings, prompts: Mapping[str, Prompt], root: Path = Path(".")) -> Judge | None:
    """The evaluation's judge (None when params.yaml configures none), with the calibrated rubric versions."""
    if not config.judge.enabled:
        return None
    config.judge.api_key()  # a missing key is a clear error before any call
    found = calibration.calibrated(root / config.judge.calibration, config.judge.min_kappa)
    return judge_of(config, prompts, found)


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
        chat = CachedChat(cache, keying(settings), 0, client_chat(client, model), usable=is_verdict)
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
