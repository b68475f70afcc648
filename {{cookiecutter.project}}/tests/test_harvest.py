"""`harvest`: captured answers become golden-set candidates that `preprocess` keeps out of the eval set
until a person has labelled them."""

import json
import os
import stat
from pathlib import Path

import pytest

from {{ cookiecutter.package }}.errors import UserError
from {{ cookiecutter.package }}.evaluation.golden import GoldenSetError
from {{ cookiecutter.package }}.production import records
from {{ cookiecutter.package }}.production.harvest import main as harvest_main
from {{ cookiecutter.package }}.stages.preprocess import main as preprocess_main

DATE = "2026-11-30"
CANDIDATES = f"data/raw/candidates-{DATE}.jsonl"
GOLDEN = {"id": "known", "flow": "ask", "input": {"message": "Where is my parcel?"}, "contains": ["parcel"]}
PREPROCESS = ["--golden", "eval/golden.jsonl", "--raw", "data/raw", "--out", "p/eval.jsonl", "--manifest", "p/m.json"]


def answer(request_id: str, message: str, status: int = 200, alias: str = "champion", **fields) -> dict:
    """An `answer` capture line as production/records.py documents it."""
    return {
        "schema": records.SCHEMA, "kind": "answer", "at": f"{DATE}T10:00:{len(request_id):02d}Z",
        "request_id": request_id, "target": "flow:ask", "route": "/v1/ask", "status": status,
        "request": {"message": message}, "reply": None if status >= 500 else {"text": "ok"},
        "category": "other", "fallback": False, "fields": {}, "mirror_of": None,
        "version": {"id": "3", "alias": alias, "prompt_version": "p1", "prompts": {}, "model": "m"},
        "provider": "m fingerprint=fp", "latency_ms": 12.0, "model_ms": 10.0,
        "tokens_in": 5, "tokens_out": 3, "error": "bad_gateway" if status >= 500 else None, **fields,
    }  # fmt: skip


def feedback(request_id: str, rating: str, correction: str | None = None, comment: str | None = None) -> dict:
    return {
        "schema": records.SCHEMA, "kind": "feedback", "at": f"{DATE}T11:00:00Z", "request_id": request_id,
        "rating": rating, "correction": correction, "comment": comment,
    }  # fmt: skip


def shadow(request_id: str, outcome: str) -> dict:
    return {
        "schema": records.SCHEMA, "kind": "shadow", "at": f"{DATE}T10:00:30Z", "request_id": request_id,
        "outcome": outcome, "shadow_version": "4",
    }  # fmt: skip


@pytest.fixture
def workdir(project: Path) -> Path:
    """The project's params, a one-line golden set of a made-up flow (harvest and preprocess read any
    target), an empty data/raw and a capture directory."""
    (project / "eval" / "golden.jsonl").write_text(json.dumps(GOLDEN) + "\n")
    (project / "data" / "raw").mkdir(parents=True)
    (project / "captures").mkdir()
    return project


def capture(project: Path, *lines: dict | str, name: str = "a.jsonl") -> None:
    text = "".join(line if isinstance(line, str) else records.dumps(line) for line in lines)
    (project / "captures" / name).write_text(text)


def harvest(*extra: str) -> int:
    return harvest_main(["--captures", "captures", "--raw", "data/raw", "--date", DATE, *extra])


def rows(path: str) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_negative_feedback_first_then_shadow_disagreements_then_canary_failures(workdir, capsys):
    capture(
        workdir,
        answer("fine", "Do you ship to Norway?"),  # nobody objected: not a candidate
        answer("stable-502", "Can I pay by invoice?", status=502),
        answer("canary-502", "Is the lamp in stock?", status=503, alias="candidate"),
        answer("mirrored-502", "Do you sell gift cards?", status=502, mirror_of="3"),
        answer("disagree", "I want my money back"),
        answer("down", "Where is order BH-1?"),
        shadow("disagree", "disagree"),
        shadow("fine", "agree"),
        feedback("down", "down", correction="It shipped on Monday"),
        feedback("fine", "up"),
        '{"kind": "answer", "request_id": "torn',  # a write cut short by a killed pod
    )
    assert harvest() == 0
    found = rows(CANDIDATES)
    reasons = [c["harvest"]["reason"] for c in found]
    assert reasons == ["negative_feedback", "shadow_disagreement", "canary_failure", "canary_failure", "failure"]
    assert [c["harvest"]["request_id"] for c in found][:3] == ["down", "disagree", "canary-502"]
    first = found[0]
    assert first["flow"] == "ask" and first["input"] == {"message": "Where is order BH-1?"}
    assert first["todo"] and first["id"].startswith("harvest-")
    # The correction is kept for the person labelling, never as an expectation.
    assert first["harvest"]["correction"] == "It shipped on Monday"
    assert not {"expected", "contains", "includes", "regex"} & set(first)
    out = capsys.readouterr().out.strip()
    assert "\n" not in out
    assert "5 candidate(s) (negative_feedback 1, shadow_disagreement 1, canary_failure 2, failure 1)" in out
    assert "1 unreadable line(s) skipped" in out and "a.jsonl:11" in out


def test_at_most_max_candidates_the_most_telling_kept(workdir, capsys):
    params = workdir / "params.yaml"
    params.write_text(params.read_text().replace("max_candidates: 50", "max_candidates: 1"))
    capture(workdir, answer("err", "Can I pay by invoice?", status=500), answer("down", "Wrong size"))
    capture(workdir, feedback("down", "down"), name="b.jsonl")  # feedback lands in another file
    assert harvest() == 0
    assert [c["harvest"]["reason"] for c in rows(CANDIDATES)] == ["negative_feedback"]
    assert "1 over harvest.max_candidates left for the next run" in capsys.readouterr().out


def test_duplicates_of_the_golden_set_data_raw_and_the_batch_are_skipped(workdir, capsys):
    (workdir / "data" / "raw" / "older.jsonl").write_text(
        json.dumps({"id": "old", "flow": "ask", "input": {"message": "Is it waterproof?"}, "contains": ["no"]}) + "\n"
    )
    capture(
        workdir,
        answer("a", "  Where is my parcel?\n"),  # the golden example, as preprocess normalises it
        answer("b", "Is it waterproof?"),  # in data/raw already
        answer("c", "Cafe\u0301 hours?"),
        answer("d", "Caf\u00e9 hours?"),  # the same text, another Unicode form
        *(feedback(r, "down") for r in "abcd"),
    )
    assert harvest() == 0
    (only,) = rows(CANDIDATES)
    assert only["harvest"]["request_id"] == "c"
    assert "1 candidate(s) (negative_feedback 1), 3 duplicate(s) skipped" in capsys.readouterr().out
    # Ids are stable: the same question harvested again is the same id (and skipped as known).
    before = Path(CANDIDATES).read_bytes()
    assert harvest() == 0
    assert Path(CANDIDATES).read_bytes() == before
    assert "0 candidate(s), 4 duplicate(s) skipped" in capsys.readouterr().out


def test_a_second_run_appends_and_keeps_what_a_person_is_labelling(workdir):
    capture(workdir, answer("a", "First question"), feedback("a", "down"))
    assert harvest() == 0
    being_labelled = Path(CANDIDATES).read_text().replace('"todo"', '"contains": ["x"], "todo"')
    Path(CANDIDATES).write_text(being_labelled.rstrip("\n"))  # an editor that drops the last newline
    capture(workdir, answer("b", "Second question"), feedback("b", "down"), name="later.jsonl")
    assert harvest() == 0
    text = Path(CANDIDATES).read_text()
    assert text.startswith(being_labelled)
    assert [c["harvest"]["request_id"] for c in rows(CANDIDATES)] == ["a", "b"]
    assert not [p.name for p in Path("data/raw").iterdir() if p.name.startswith(".")]  # no temp file left


def test_the_candidates_file_is_created_as_any_file_is_and_keeps_its_mode(workdir):
    capture(workdir, answer("a", "First question"), feedback("a", "down"))
    umask = os.umask(0o022)
    try:
        assert harvest() == 0
    finally:
        os.umask(umask)
    assert stat.S_IMODE(Path(CANDIDATES).stat().st_mode) == 0o644  # readable by the team, not mkstemp's 0600
    Path(CANDIDATES).chmod(0o664)
    capture(workdir, answer("b", "Second question"), feedback("b", "down"), name="later.jsonl")
    assert harvest() == 0
    assert stat.S_IMODE(Path(CANDIDATES).stat().st_mode) == 0o664


def test_only_redacted_text_is_written(workdir):
    capture(
        workdir,
        answer("a", "Mail <email:1a2b3c4d5e> about order BH-7 or me at ana@example.com"),
        feedback("a", "down", correction="Call +44 20 7946 0958 instead", comment="bad; mail bo@example.org"),
    )
    assert harvest() == 0
    text = Path(CANDIDATES).read_text()
    (line,) = rows(CANDIDATES)
    assert "<email:1a2b3c4d5e>" in line["input"]["message"]  # what the service redacted, as it was
    assert "BH-7" in line["input"]["message"] and line["harvest"]["comment"].startswith("bad; mail <email:")
    assert "ana@example.com" not in text and "7946" not in text and "bo@example.org" not in text


def test_nothing_to_harvest_writes_nothing_and_exits_0(workdir, capsys):
    capture(workdir, answer("a", "Fine question"), feedback("a", "up"))
    assert harvest() == 0
    assert not Path(CANDIDATES).exists()
    assert capsys.readouterr().out.startswith("0 candidate(s), 0 duplicate(s) skipped; read 1 answers")


def test_a_bad_date_is_one_line(workdir):
    with pytest.raises(UserError, match=r"--date: expected a date as YYYY-MM-DD, got '2026-13-01'"):
        harvest_main(["--captures", "captures", "--date", "2026-13-01"])


def test_preprocess_keeps_unlabelled_candidates_aside_and_takes_labelled_ones(workdir, capsys):
    capture(workdir, *(answer(r, f"Question {r}") for r in "abc"), *(feedback(r, "down") for r in "abc"))
    assert harvest() == 0
    assert preprocess_main(PREPROCESS) == 0
    assert f"3 candidate(s) await labels in {CANDIDATES}" in capsys.readouterr().out
    assert [r["id"] for r in rows("p/eval.jsonl")] == ["known"]
    golden_line = Path("p/eval.jsonl").read_text()
    assert json.loads(Path("p/m.json").read_text())["unlabelled"] == 3

    # A person labels the first: it enters the eval set, without its provenance.
    lines = Path(CANDIDATES).read_text().splitlines()
    labelled = {k: v for k, v in json.loads(lines[0]).items() if k != "todo"} | {"contains": ["refund"]}
    Path(CANDIDATES).write_text("\n".join([json.dumps(labelled), *lines[1:]]) + "\n")
    assert preprocess_main(PREPROCESS) == 0
    evalset = rows("p/eval.jsonl")
    assert [r["id"] for r in evalset] == ["known", labelled["id"]]
    assert evalset[1]["contains"] == ["refund"] and "harvest" not in evalset[1]
    assert Path("p/eval.jsonl").read_text().startswith(golden_line)  # existing examples' bytes unchanged
    assert json.loads(Path("p/m.json").read_text())["unlabelled"] == 2

    # `todo` deleted but nothing labelled: an error with the file and line, nothing written.
    unlabelled = {k: v for k, v in json.loads(lines[1]).items() if k != "todo"}
    Path(CANDIDATES).write_text("\n".join([json.dumps(labelled), json.dumps(unlabelled), lines[2]]) + "\n")
    with pytest.raises(GoldenSetError, match=rf"{CANDIDATES}:2: checks nothing"):
        preprocess_main(PREPROCESS)


def test_todo_in_the_golden_set_itself_is_still_an_error(workdir):
    (workdir / "eval" / "golden.jsonl").write_text(json.dumps({**GOLDEN, "todo": "finish me"}) + "\n")
    with pytest.raises(GoldenSetError, match=r"golden.jsonl:1: todo: a stub to fill in"):
        preprocess_main(PREPROCESS)
