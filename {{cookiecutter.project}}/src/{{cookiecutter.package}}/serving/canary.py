"""`<project> canary analyze`: is the canary worse than the stable track?

From a Prometheus server (`--prometheus URL`, a time window), `analyze` asks the analysis' own checks
(serving/analysis.py: error rate, p95 latency, cost per answer, schema-valid rate, agreement on
mirrored traffic): the very queries the controller evaluates, each track selected by label matchers
(`--canary-match`, `--stable-match`). A check without a sample (too little traffic) is inconclusive.

From each track's own `/metrics` (`--stable URL --canary URL`: one pod each, counts since it started,
no Prometheus needed) it compares three signals:
- error rate: share of answers with a 5xx status (`llm_requests_total{status=~"5.."}`);
- p95 latency: from the `llm_request_latency_seconds` histogram (as PromQL's histogram_quantile);
- shadow agreement: each flow's decision, mirrored vs served (`llm_shadow_requests_total`),
  counted when at least `canary.min_shadow_samples` comparisons exist.

Thresholds are params.yaml `canary.*`. Exit 0 = promote, 1 = rollback (the failing signals are
named), 3 = inconclusive (too little traffic), 2 = cannot analyze (an unreachable URL, bad params).

In the cluster, the rollout controller runs the same checks at every step (`rollout render` writes
them into k8s/analysis.yaml; serving/rollout.py): `analyze` is for a look by hand.
"""

from __future__ import annotations

import argparse
import json
import math
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError, clip
from ..settings import CanarySettings
from ..settings import load as load_settings
from . import analysis, rollout

PROMOTE, ROLLBACK, INCONCLUSIVE = "promote", "rollback", "inconclusive"
EXIT = {PROMOTE: 0, ROLLBACK: 1, INCONCLUSIVE: 3}


# ------------------------------------------------------------------------------------------- signals


@dataclass(frozen=True)
class TrackStats:
    requests: float
    errors: float
    buckets: tuple[tuple[float, float], ...]  # cumulative (le, count) of the latency histogram
    shadow: Mapping[str, float]  # outcome -> count

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def p95_s(self) -> float | None:
        return quantile(0.95, self.buckets)


@dataclass(frozen=True)
class Signal:
    name: str
    ok: bool | None  # None: not enough data, skipped
    detail: str


@dataclass(frozen=True)
class Decision:
    verdict: str
    signals: tuple[Signal, ...]
    reason: str

    @property
    def failing(self) -> list[str]:
        return [s.name for s in self.signals if s.ok is False]


def quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """PromQL's histogram_quantile over cumulative buckets (linear inside a bucket)."""
    buckets = sorted(buckets)
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower_le, lower_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return lower_le  # above the largest finite bucket: its bound, as Prometheus does
            span = count - lower_count
            return lower_le + (le - lower_le) * ((rank - lower_count) / span if span else 1.0)
        lower_le, lower_count = le, count
    return lower_le


def decide(stable: TrackStats, canary: TrackStats, cfg: CanarySettings) -> Decision:
    """Promote unless a signal fails; no decision below `min_requests` on either track."""
    low = [name for name, t in (("stable", stable), ("canary", canary)) if t.requests < cfg.min_requests]
    signals = [
        _error_signal(stable, canary, cfg),
        _latency_signal(stable, canary, cfg),
        _agreement(stable, canary, cfg),
    ]
    if low:
        counts = f"stable {stable.requests:.0f}, canary {canary.requests:.0f}"
        return Decision(
            INCONCLUSIVE, tuple(signals), f"too few requests on {' and '.join(low)} ({counts}; need {cfg.min_requests})"
        )
    failing = [s for s in signals if s.ok is False]
    if failing:
        return Decision(ROLLBACK, tuple(signals), "; ".join(f"{s.name}: {s.detail}" for s in failing))
    return Decision(PROMOTE, tuple(signals), "every signal within its threshold")


def _error_signal(stable: TrackStats, canary: TrackStats, cfg: CanarySettings) -> Signal:
    limit = cfg.error_rate_ratio * stable.error_rate + cfg.error_rate_margin
    ok = canary.error_rate <= limit
    detail = (
        f"canary {canary.error_rate:.3f} {'<=' if ok else '>'} {cfg.error_rate_ratio:g} x stable "
        f"{stable.error_rate:.3f} + {cfg.error_rate_margin:g}"
    )
    return Signal("error_rate", ok, detail)


def _latency_signal(stable: TrackStats, canary: TrackStats, cfg: CanarySettings) -> Signal:
    s, c = stable.p95_s, canary.p95_s
    if s is None or c is None:
        return Signal("latency_p95", None, "no latency samples")
    limit = cfg.latency_p95_ratio * s + cfg.latency_p95_margin_s
    ok = c <= limit
    detail = (
        f"canary {c:.3f}s {'<=' if ok else '>'} {cfg.latency_p95_ratio:g} x stable {s:.3f}s "
        f"+ {cfg.latency_p95_margin_s:g}s"
    )
    return Signal("latency_p95", ok, detail)


def _agreement(stable: TrackStats, canary: TrackStats, cfg: CanarySettings) -> Signal:
    # Stable mirrors to the candidate and the canary to the champion: either way it compares the two.
    agree = stable.shadow.get("agree", 0.0) + canary.shadow.get("agree", 0.0)
    total = agree + stable.shadow.get("disagree", 0.0) + canary.shadow.get("disagree", 0.0)
    if total < cfg.min_shadow_samples:
        return Signal("shadow_agreement", None, f"{total:.0f} shadow comparisons (need {cfg.min_shadow_samples})")
    rate = agree / total
    ok = rate >= cfg.min_agreement
    return Signal("shadow_agreement", ok, f"{rate:.3f} {'>=' if ok else '<'} {cfg.min_agreement:g} over {total:.0f}")


# ---------------------------------------------------------------------------------------- data sources


def stats_from_metrics(text: str) -> TrackStats:
    """A track's stats from its /metrics text (Prometheus exposition format)."""
    from prometheus_client.parser import text_string_to_metric_families

    requests = errors = 0.0
    buckets: dict[float, float] = {}
    shadow: dict[str, float] = {}
    try:
        families = list(text_string_to_metric_families(text))
    except ValueError as exc:
        raise UserError(f"not Prometheus metrics ({exc})") from None
    for family in families:
        for sample in family.samples:
            if sample.name == "llm_requests_total":
                requests += sample.value
                if sample.labels.get("status", "").startswith("5"):
                    errors += sample.value
            elif sample.name == "llm_request_latency_seconds_bucket":
                le = float(sample.labels["le"])
                buckets[le] = buckets.get(le, 0.0) + sample.value
            elif sample.name == "llm_shadow_requests_total":
                outcome = sample.labels.get("outcome", "")
                shadow[outcome] = shadow.get(outcome, 0.0) + sample.value
    return TrackStats(requests, errors, tuple(sorted(buckets.items())), shadow)


def _get(url: str, timeout: float = 10.0) -> str:
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise UserError(f"{url}: expected an http(s) URL")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (scheme checked above)
            return response.read().decode()
    except (urllib.error.URLError, OSError) as exc:
        raise UserError(f"{url}: cannot read ({getattr(exc, 'reason', exc)})") from None


def from_endpoints(stable_url: str, canary_url: str) -> tuple[TrackStats, TrackStats]:
    return tuple(  # type: ignore[return-value]
        stats_from_metrics(_get(url.rstrip("/") + "/metrics")) for url in (stable_url, canary_url)
    )


def instant_query(url: str, query: str) -> list[dict]:
    """The samples of a Prometheus instant query (`/api/v1/query`)."""
    full = url.rstrip("/") + "/api/v1/query?" + urllib.parse.urlencode({"query": query})
    try:
        payload = json.loads(_get(full))
        result = payload["data"]["result"]
        if not isinstance(result, list):
            raise TypeError
        return result
    except (ValueError, KeyError, TypeError):
        raise UserError(f"{url}: unexpected answer to {clip(query, 80)!r}") from None


def from_prometheus(url: str, window: str, canary: str, stable: str, cfg: CanarySettings) -> Decision:
    """The decision from the analysis' own checks (serving/analysis.py), asked of a Prometheus server:
    the queries the controller runs, with each track selected by its label matchers."""
    signals = []
    for check in analysis.checks(cfg):
        samples = instant_query(url, analysis.render(check.query, canary, stable, window))
        if not samples:
            signals.append(Signal(check.name, None, f"no sample: too little traffic over {window}"))
            continue
        try:
            value = float(samples[0]["value"][1])
        except (KeyError, IndexError, TypeError, ValueError):
            raise UserError(f"{url}: unexpected sample for {check.name}: {clip(str(samples[0]), 80)}") from None
        signals.append(Signal(check.name, value == 1, "within params.yaml canary.*" if value == 1 else "worse"))
    failing = [s for s in signals if s.ok is False]
    if failing:
        return Decision(ROLLBACK, tuple(signals), "; ".join(f"{s.name}: canary worse than stable" for s in failing))
    silent = [s.name for s in signals if s.ok is None]
    if silent:
        reason = f"no sample for {', '.join(silent)} (need {cfg.min_requests} requests a track in {window})"
        return Decision(INCONCLUSIVE, tuple(signals), reason)
    return Decision(PROMOTE, tuple(signals), "every check within its threshold")


# ---------------------------------------------------------------------------------------------- main


def _report(decision: Decision) -> None:
    for signal in decision.signals:
        state = {True: "ok", False: "FAIL", None: "skip"}[signal.ok]
        print(f"{signal.name:<17} {state:<5} {signal.detail}")
    print(f"decision: {decision.verdict} ({decision.reason})")


def main(argv: list[str] | None = None, prog: str = "canary") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="action", required=True)
    analyze = sub.add_parser("analyze", help="compare canary with stable; exit 0 promote, 1 rollback, 3 inconclusive")
    analyze.add_argument("--stable", help="base URL of a stable pod/Service (reads its /metrics)")
    analyze.add_argument("--canary", help="base URL of a canary pod/Service")
    analyze.add_argument("--prometheus", help="Prometheus base URL (instead of --stable/--canary)")
    analyze.add_argument("--window", default="10m", help="Prometheus range, e.g. 10m (default)")
    for track in ("canary", "stable"):
        analyze.add_argument(f"--{track}-match", default=f'app="{rollout.APP}", track="{track}"',
                             help=f"Prometheus label matchers of the {track} pods (default: %(default)s)")  # fmt: skip
    analyze.add_argument("--params", type=Path, default=Path("params.yaml"), help="thresholds: canary.*")
    analyze.add_argument("--json", action="store_true", help="print the decision as JSON")
    args = parser.parse_args(argv)

    if args.action == "analyze":
        cfg = load_settings(args.params).canary
        if args.prometheus:
            decision = from_prometheus(args.prometheus, args.window, args.canary_match, args.stable_match, cfg)
        elif args.stable and args.canary:
            decision = decide(*from_endpoints(args.stable, args.canary), cfg)
        else:
            raise UserError("give --stable URL and --canary URL, or --prometheus URL")
        if args.json:
            print(json.dumps({"verdict": decision.verdict, "reason": decision.reason, "failing": decision.failing,
                              "signals": [s.__dict__ for s in decision.signals]}))  # fmt: skip
        else:
            _report(decision)
        return EXIT[decision.verdict]
    return 2  # unreachable: argparse takes only `analyze`
