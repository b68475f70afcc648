"""`<project> loadgen URL...`: golden-set requests at a steady rate, to each URL, for a while.

The rollout's load Job (k8s/analysis.yaml) runs it at every step against the canary and the stable
Services, so the analysis always has at least `canary.min_requests` answers per track, whatever the
real traffic. Flow examples go to `POST /v1/<flow>`, prompt examples to `POST /v1/run/<prompt>` (only
when the version serves prompt routes), with one of the service's API keys when `serve.api_keys_env`
names them (the Job reads them from the same Secret). Exit 0 once the time is up and every URL answered (any
status: judging answers is the analysis's job), 1 when a URL never answered at all.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError, clip
from ..evaluation.golden import Example
from ..evaluation.golden import load as load_golden
from ..settings import load as load_settings
from ..settings import seconds

HEADERS = {"Content-Type": "application/json", "User-Agent": "loadgen"}


@dataclass(frozen=True)
class Request:
    path: str
    body: bytes


def to_requests(examples: Sequence[Example], prompt_routes: bool) -> list[Request]:
    """The HTTP request each servable example makes (prompt examples need the prompt routes)."""
    out = []
    for ex in examples:
        if ex.flow:
            out.append(Request(f"/v1/{ex.flow}", json.dumps(dict(ex.input)).encode()))
        elif prompt_routes:
            out.append(Request(f"/v1/run/{ex.prompt}", json.dumps({"variables": dict(ex.input)}).encode()))
    if not out:
        raise UserError(
            "the golden set has no example the service answers (flows, or prompts with serve.prompt_routes)"
        )
    return out


def post(url: str, request: Request, timeout_s: float, key: str | None = None) -> int:
    """The answer's status, or 0 when no answer came (refused, timed out)."""
    headers = {**HEADERS, **({"Authorization": f"Bearer {key}"} if key else {})}
    # main() accepts only http(s) URLs.
    req = urllib.request.Request(url.rstrip("/") + request.path, request.body, headers, method="POST")  # noqa: S310
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as response:  # noqa: S310
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as exc:
        exc.read()
        return int(exc.code)
    except (OSError, ValueError):
        return 0


def run(
    urls: Sequence[str],
    batch: Sequence[Request],
    rate_per_s: float,
    duration_s: float,
    send: Callable[[str, Request], int],
    workers: int = 32,
) -> dict[str, Counter[int]]:
    """Start `rate_per_s` requests a second to each URL for `duration_s`; url -> status counts."""
    counts: dict[str, Counter[int]] = {url: Counter() for url in urls}
    lock = threading.Lock()

    def one(url: str, request: Request) -> None:
        status = send(url, request)
        with lock:
            counts[url][status] += 1

    total = max(1, round(rate_per_s * duration_s))
    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for i, request in zip(range(total), itertools.cycle(batch), strict=False):
            delay = start + i / rate_per_s - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            for url in urls:
                pool.submit(one, url, request)
    return counts


def main(argv: Sequence[str] | None = None, prog: str = "loadgen") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("urls", nargs="+", help="base URLs, e.g. http://llm-app-canary.llm-app")
    parser.add_argument("--golden", type=Path, default=Path("eval/golden.jsonl"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="the served version's params")
    parser.add_argument("--rate", type=float, default=1.0, help="requests a second to EACH URL")
    parser.add_argument("--duration", default="1m", help="e.g. 5m")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds one request may take")
    args = parser.parse_args(argv)
    for url in args.urls:
        if not url.startswith(("http://", "https://")):
            raise UserError(f"{clip(url, 60)!r}: expected an http(s) URL")
    if not args.rate > 0:
        raise UserError(f"--rate: must be greater than 0, got {args.rate:g}")
    try:
        duration_s = seconds(args.duration)
    except ValueError:
        raise UserError(f"--duration: expected e.g. 5m, got {clip(args.duration, 20)!r}") from None
    settings = load_settings(args.params)
    batch = to_requests(load_golden(args.golden), settings.serve.prompt_routes)
    key = None
    if settings.serve.api_keys_env:  # the service wants a key: send one of its own
        name = settings.serve.api_keys_env
        key = next((k.strip() for k in os.environ.get(name, "").split(",") if k.strip()), None)
        if key is None:
            raise UserError(f"serve.api_keys_env: environment variable {name} holds no key (the service's keys)")
    counts = run(args.urls, batch, args.rate, duration_s, lambda url, r: post(url, r, args.timeout, key))
    silent = []
    for url, statuses in counts.items():
        print(f"{url}: " + ", ".join(f"{s or 'no answer'} x{n}" for s, n in sorted(statuses.items())))
        if not sum(n for s, n in statuses.items() if s):
            silent.append(url)
    if silent:
        print(f"no answer at all from {', '.join(silent)}")
        return 1
    return 0
