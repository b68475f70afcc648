"""`drift`: captured answers against the eval set. The verdict on synthetic references (a made-up app,
so the tests hold whatever app the project has), and the command's files, exit codes and bad input
on the framework's toy app. The false-alarm and detection rates over many seeds are measured by the
template's own tests (tests/test_drift_rates.py there)."""

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest

from {{ cookiecutter.package }}.app.contract import App, Flow
from {{ cookiecutter.package }}.cli import main as cli
from {{ cookiecutter.package }}.evaluation import golden
from {{ cookiecutter.package }}.evaluation.results import Result, dumps
from {{ cookiecutter.package }}.production import records
from {{ cookiecutter.package }}.production.drift.report import render
from {{ cookiecutter.package }}.production.drift.samples import reference_samples
from {{ cookiecutter.package }}.production.drift.verdict import Signal, Verdict, judge
from {{ cookiecutter.package }}.settings import DriftSettings
from {{ cookiecutter.package }}.testing import toy
from {{ cookiecutter.package }}.testing.fake_model import FakeModel


async def _never(ctx, request):  # the flows here are only looked at, never run
    raise AssertionError


QUEUES = ["billing"] * 6 + ["shipping"] * 6 + ["account"] * 5 + ["other"] * 3
APP = App(
    "made-up",
    flows={
        "route": Flow(
            _never,
            request={"type": "object", "required": ["text"], "additionalProperties": False,
                     "properties": {"text": {"type": "string"}}},
            category=lambda reply: reply["queue"],
            fallback="other",
        )
    },
)  # fmt: skip
CONFIG = DriftSettings(min_records=60, permutations=1000)
FP = "m fingerprint=a"


def reference_lines() -> list[dict]:
    """Flow examples and, in equal number, examples of a prompt that routes the same requests."""
    rng = np.random.default_rng(0)
    words = ["my", "order", "card", "parcel", "login", "help"]
    lines = []
    for i, queue in enumerate(QUEUES):
        text = " ".join(words[k] for k in rng.integers(len(words), size=rng.integers(3, 10)))
        if i % 2:
            lines.append({"id": f"f{i}", "flow": "route", "input": {"text": text}, "expected": {"queue": queue}})
        else:
            lines.append({"id": f"p{i}", "prompt": "classify", "input": {"text": text}, "expected": {"queue": queue}})
    # Neither a request the flow accepts nor a category: in the prompt's sample only.
    lines.append({"id": "x1", "prompt": "extract", "input": {"body": "a b c"}, "expected": {"order": "1"}})
    return lines


def examples(lines: list[dict] | None = None) -> list[golden.Example]:
    return golden.parse_lines([json.dumps(line) for line in lines or reference_lines()], "ref.jsonl")


def answer(i: int, text: str, queue: str, reply: str = "done", provider: str = FP, target: str = "flow:route") -> dict:
    return {
        "schema": records.SCHEMA, "kind": "answer", "at": f"2026-11-30T10:00:{i % 60:02d}Z", "request_id": f"r{i}",
        "target": target, "route": "/v1/route", "status": 200, "request": {"text": text},
        "reply": {"queue": queue, "text": reply}, "category": queue, "fallback": queue == "other",
        "provider": provider,
    }  # fmt: skip


def captured(lines: list[dict], ratings: list[str] = ()) -> records.Captures:
    answers = [records.Answer(line, f"c.jsonl:{i + 1}") for i, line in enumerate(lines)]
    for a, rating in zip(answers, ratings, strict=False):
        a.feedback.append({"kind": "feedback", "request_id": a.request_id, "rating": rating})
    return records.Captures(answers=answers, files=1)


def like_reference(n: int, seed: int = 1, **change) -> list[dict]:
    """`n` answers drawn from the reference's requests and queues (`change`: text -> text, queue -> queue)."""
    rng = np.random.default_rng(seed)
    pool = [(line["input"]["text"], line["expected"]["queue"]) for line in reference_lines() if "text" in line["input"]]
    out = []
    for i in range(n):
        text, queue = pool[rng.integers(len(pool))]
        out.append(answer(i, change.get("text", lambda t: t)(text), change.get("queue", lambda q: q)(queue)))
    return out


def results(reply: str = "done", provider: str = FP) -> list[Result]:
    return [
        Result(line["id"], 0, "flow:route", "v", json.dumps({"queue": line["expected"]["queue"], "text": reply}), True,
               provider=provider)
        for line in reference_lines() if "flow" in line
    ]  # fmt: skip


def by_name(verdict: Verdict) -> dict[str, Signal]:
    return {s.name: s for s in verdict.signals}


def test_a_flows_reference_takes_the_prompt_examples_whose_input_it_accepts():
    repeated = [dataclasses.replace(r, repeat=1) for r in results()]
    sample = reference_samples(examples(), results() + repeated, APP, re.compile("x"), str)["flow:route"]
    assert sorted(sample.categories) == sorted(QUEUES), "every routed example, flow or prompt, gives its queue"
    assert len(sample.requests) == len(QUEUES), "the extract example's input is not a request of the flow"
    assert len(sample.replies) == len(QUEUES) // 2, "one reply per example: a repeat is no independent draw"


def test_production_like_the_reference_is_not_drift():
    verdict = judge(examples(), results(), captured(like_reference(200)), APP, CONFIG)
    assert set(by_name(verdict)) == {"request_length", "reply_length", "refusal_rate", "category_mix",
                                     "fallback_share", "provider"}  # fmt: skip
    assert not verdict.drifted, [s.says for s in verdict.drifted]
    assert verdict.tests == 5 and verdict.level == pytest.approx(CONFIG.alpha / 5)


def test_a_shifted_category_mix_is_drift_and_the_report_says_which_way():
    shifted = like_reference(200, queue=lambda q: "other" if q in ("billing", "shipping") else q)
    verdict = judge(examples(), results(), captured(shifted), APP, CONFIG)
    signals = by_name(verdict)
    assert {"category_mix", "fallback_share"} <= {s.name for s in verdict.drifted}
    assert "'other' (the fallback category): 15% -> " in signals["fallback_share"].says
    assert not signals["request_length"].drifted
    report = render(verdict, "sources")
    assert report.startswith("# Drift report\n\n**Drift**: ") and "## What moved" in report


def test_a_category_with_a_bar_in_its_name_keeps_the_report_table_whole():
    renamed = like_reference(200, queue=lambda q: "bill|ing" if q == "billing" else q)
    report = render(judge(examples(), results(), captured(renamed), APP, CONFIG), "sources")
    row = next(line for line in report.splitlines() if line.startswith("| flow:route | category_mix |"))
    assert "bill\\|ing" in row and len(re.findall(r"(?<!\\)\|", row)) == 6, row


def test_longer_messages_are_drift():
    verdict = judge(examples(), results(), captured(like_reference(200, text=lambda t: t + " " + t)), APP, CONFIG)
    assert [s.name for s in verdict.drifted] == ["request_length"]
    assert "requests are longer: median" in verdict.drifted[0].says


def test_more_refusals_are_drift():
    lines = like_reference(200)
    for line in lines[: 3 * len(lines) // 4]:  # ten reference replies: a p-value below 0.01 / 5 needs a big rise
        line["reply"]["text"] = "I'm not sure, sorry."
    verdict = judge(examples(), results(), captured(lines), APP, CONFIG)
    assert "refusal_rate" in [s.name for s in verdict.drifted]
    assert "more refusals: 0% -> 75% of replies" in by_name(verdict)["refusal_rate"].says


def test_a_new_provider_is_drift_however_few_answers_carry_it():
    lines = like_reference(3)
    lines[0]["provider"] = "m fingerprint=b"
    verdict = judge(examples(), results(), captured(lines), APP, CONFIG)
    assert [s.name for s in verdict.drifted] == ["provider"]
    assert "'m fingerprint=b' (1 answers)" in verdict.drifted[0].says
    assert any("3 captured answers, fewer than drift.min_records=60" in s.why for s in verdict.skipped)


def test_negative_feedback_is_judged_once_there_are_enough_ratings():
    config = dataclasses.replace(CONFIG, min_feedback=10, max_negative_feedback_rate=0.2)
    few = judge(examples(), None, captured(like_reference(9), ["down"] * 9), APP, config)
    assert "negative_feedback" not in by_name(few) and not few.drifted
    many = judge(examples(), None, captured(like_reference(10), ["down"] * 3 + ["up"] * 7), APP, config)
    assert by_name(many)["negative_feedback"].drifted and "30% of 10 ratings" in by_name(many)["negative_feedback"].says


def test_a_users_last_rating_of_an_answer_is_the_one_that_counts():
    config = dataclasses.replace(CONFIG, min_feedback=2, max_negative_feedback_rate=0.4)
    captures = captured(like_reference(2), ["up"])
    captures.answers[0].feedback[0]["at"] = "2026-11-30T10:00:03Z"
    captures.orphan_feedback += [
        {"kind": "feedback", "request_id": "r1", "rating": rating, "at": f"2026-11-30T10:00:0{i}Z"}
        for i, rating in enumerate(["down", "down", "up"])
    ]
    numbers = by_name(judge(examples(), None, captures, APP, config))["negative_feedback"].numbers
    assert numbers["ratings"] == 2 and numbers["rate"] == 0


# ------------------------------------------------------------------------------------- the command


def write(path: Path, lines: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def toy_reference(project: Path, n: int = 8) -> tuple[Path, Path]:
    """An eval set of the toy app's flow and main's results of it, from the fake model `fp`."""
    lines = [{"id": f"t{i}", "flow": "reply", "input": {"text": "good " * (i % 3 + 1)}, "contains": ["good"]}
             for i in range(n)]  # fmt: skip
    reference = write(project / "ref.jsonl", lines)
    main = [Result(line["id"], 0, "flow:reply", "v", json.dumps({"label": "good", "echo": "Hello good"}), True,
                   provider="fake-model fingerprint=fake-1") for line in lines]  # fmt: skip
    (project / "results.jsonl").write_text(dumps(main))
    return reference, project / "results.jsonl"


def toy_answers(n: int, fingerprint: str = "fake-1") -> list[dict]:
    return [
        {**answer(i, "good " * (i % 3 + 1), "good", target="flow:reply"),
         "reply": {"label": "good", "echo": "Hello good"}, "provider": f"fake-model fingerprint={fingerprint}"}
        for i in range(n)
    ]  # fmt: skip


def drift_cli(*args: str) -> int:
    return cli(["drift", "--reference", "ref.jsonl", "--current", "captures", "--out-dir", "out", *args])


def test_no_drift_exits_0_and_writes_flat_metrics_and_the_report(toy_project, capsys):
    toy_reference(toy_project)
    write(toy_project / "captures" / "a.jsonl", toy_answers(120))
    assert drift_cli("--reference-results", "results.jsonl") == 0
    assert capsys.readouterr().out.startswith("no drift: ")
    metrics = json.loads((toy_project / "out" / "metrics.json").read_text())
    assert all(isinstance(v, int | float) for v in metrics.values()), "DVC metrics are numbers"
    assert metrics["drifted"] == 0 and metrics["answers"] == 120 and metrics["provider.drifted"] == 0
    assert 0 < metrics["flow:reply.request_length.p_value"] <= 1
    report = (toy_project / "out" / "report.md").read_text()
    assert "**No drift**" in report and "negative_feedback: 0 ratings, fewer than drift.min_feedback" in report


def test_a_new_fingerprint_exits_1_and_the_report_names_it(toy_project, capsys):
    toy_reference(toy_project)
    write(toy_project / "captures" / "a.jsonl", toy_answers(4, fingerprint="fake-2"))
    assert drift_cli("--reference-results", "results.jsonl") == 1
    assert capsys.readouterr().out.startswith("drift: provider ")
    report = (toy_project / "out" / "report.md").read_text()
    assert "'fake-model fingerprint=fake-2' (4 answers)" in report
    assert "4 captured answers, fewer than drift.min_records" in report, "the report says what it did not judge"


def test_nothing_judged_exits_2_and_says_why(toy_project, capsys):
    toy_reference(toy_project)
    write(toy_project / "captures" / "a.jsonl", toy_answers(4))
    assert drift_cli() == 2
    assert capsys.readouterr().out.startswith("cannot judge: ")
    assert "no --reference-results to compare providers with" in (toy_project / "out" / "report.md").read_text()


@pytest.mark.parametrize(
    ("broken", "says"),
    [
        ("reference", "ref.jsonl:2: input: "),
        ("results", "results.jsonl:3: not valid JSON"),
        ("captures", "captures: nothing to judge: 0 answers, 0 ratings from 1 file(s); 1 unreadable line(s) skipped "
                     "(first: captures/a.jsonl:1: not JSON (a torn write?))"),
        ("missing", "nowhere: no such file or directory"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_naming_file_line_and_field_and_writes_nothing(toy_project, capsys, broken, says):
    reference, main = toy_reference(toy_project)
    write(toy_project / "captures" / "a.jsonl", toy_answers(120))
    current = "captures"
    if broken == "reference":
        lines = reference.read_text().splitlines()
        reference.write_text("\n".join([lines[0], '{"id": "b", "flow": "reply", "input": 3}', *lines[1:]]) + "\n")
    elif broken == "results":
        main.write_text("\n".join([*main.read_text().splitlines()[:2], '{"id": "t9",', ""]))
    elif broken == "captures":
        write(toy_project / "captures" / "a.jsonl", ['{"kind": "answer", "request_'])
    else:
        current = "nowhere"
    code = cli(["drift", "--reference", "ref.jsonl", "--reference-results", "results.jsonl", "--current", current,
                "--out-dir", "out"])  # fmt: skip
    err = capsys.readouterr().err
    # One line, except the golden set's own report, which lists every bad line at once.
    assert code == 2 and says in err and "Traceback" not in err, err
    assert err.startswith(f"{PROG} drift: error: ") and err.count("\n") == (2 if broken == "reference" else 1)
    assert not (toy_project / "out").exists()


PROG = "{{ cookiecutter.project }}"


def test_the_metrics_file_is_a_dvc_metric_so_dvc_metrics_diff_shows_it():
    import yaml

    declared = yaml.safe_load((Path(__file__).resolve().parents[1] / "dvc.yaml").read_text())["metrics"]
    assert "drift/metrics.json" in declared, "`drift --out-dir drift` writes it; dvc.yaml must declare it"


def test_the_probe_reasks_uncached_and_pairs_with_mains_answers(toy_project, capsys):
    reference, main = toy_reference(toy_project, n=3)
    write(toy_project / "captures" / "a.jsonl", toy_answers(2))
    config_dir = toy_project
    with FakeModel(toy.answers, fingerprint="fake-1") as model:
        toy.write_version(Path(__file__).resolve().parents[1], config_dir, model.base_url)
        assert drift_cli("--reference-results", "results.jsonl", "--probe") == 1
        report = (toy_project / "out" / "report.md").read_text()
        assert "3 of 3 answers re-asked without the cache differ from main's" in report, report
        # main's answers as the endpoint gives them today: the probe sees no change
        probed = json.loads((toy_project / "out" / "metrics.json").read_text())
        assert probed["probe.changed"] == 3 and probed["probe.provider_changed"] == 0
        calls = model.calls()
        rows = [Result.from_json(json.loads(line)) for line in main.read_text().splitlines()]
        for row in rows:
            row.output = json.dumps(
                {"echo": f"Hello {_text(reference, row.id)}".strip(), "label": "good"}, sort_keys=True
            )
        main.write_text(dumps(rows))
        assert drift_cli("--reference-results", "results.jsonl", "--probe") == 0, capsys.readouterr().out
        assert model.calls() > calls, "the probe must reach the model, not the cache"
    assert json.loads((toy_project / "out" / "metrics.json").read_text())["probe.changed"] == 0


def _text(reference: Path, example_id: str) -> str:
    return next(json.loads(line)["input"]["text"] for line in reference.read_text().splitlines()
                if json.loads(line)["id"] == example_id)  # fmt: skip
