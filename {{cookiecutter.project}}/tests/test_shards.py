"""Sharded evaluation: `evaluate --shard I/N` + `merge` write what one run writes, byte for byte;
bad shards are refused with one line; the shared response cache travels between runs."""

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from {{ cookiecutter.package }}.cli import main as cli
from {{ cookiecutter.package }}.evaluation.shards import shard_of
from {{ cookiecutter.package }}.testing.fake_model import FakeModel, golden_answers

# Each output file and the option that names it.
OUTPUTS = {
    "metrics.json": "metrics",
    "catalogue.json": "catalogue",
    "results.jsonl": "results",
    "report.md": "report",
    "report.html": "html",
}


def configure(root: Path, url: str, **eval_keys: object) -> None:
    """params.yaml pointing at the fake model, one attempt a call, 2 repeats, and `eval_keys` set."""
    params = root / "params.yaml"
    text = re.sub(r"(?m)^(  base_url:) .*$", rf"\1 {url}", params.read_text(), count=1)
    text = re.sub(r"(?m)^(  api_key_env:) .*$", r'\1 ""', text, count=1)
    for key, value in {"max_attempts": 1, "repeats": 2, **eval_keys}.items():
        text = re.sub(rf"(?m)^(  {key}:) .*$", rf"\1 {json.dumps(value)}", text, count=1)
    params.write_text(text)


def failing_and_erroring(root: Path) -> None:
    """The golden set (once the fake model has read it) made to get a failure, and an example the
    fake model always answers with HTTP 500: failed and errored results are merged too."""
    golden = root / "eval" / "golden.jsonl"
    examples = [json.loads(line) for line in golden.read_text().splitlines() if line.strip()]
    example = next((e for e in examples if "prompt" in e and "expected" in e), None)
    if example is None:
        return
    broken = {**example, "id": "always-500", "input": {k: "!500 down" for k in example["input"]}}
    expected = example["expected"]
    example["expected"] = {k: "not-this" for k in expected} if isinstance(expected, dict) else "not-this"
    golden.write_text("".join(json.dumps(e) + "\n" for e in [*examples, broken]))


def evaluate(out: Path, *args: str) -> int:
    paths = [f"--{option}={out / name}" for name, option in OUTPUTS.items()]
    return cli(["evaluate", "--eval-set", "eval/golden.jsonl", *paths, *args])


def merge(out: Path, shard_dir: Path) -> int:
    paths = [f"--{option}={out / name}" for name, option in OUTPUTS.items()]
    return cli(["merge", "--shard-dir", str(shard_dir), "--eval-set", "eval/golden.jsonl", *paths])


def sharded(root: Path, shards: int) -> Path:
    shard_dir = root / f"shards-{shards}"
    for index in range(shards):
        assert evaluate(root / "unused", f"--shard={index}/{shards}", f"--shard-dir={shard_dir}") == 0
    return shard_dir


def read(out: Path) -> dict[str, bytes]:
    return {name: (out / name).read_bytes() for name in OUTPUTS}


def test_adding_an_example_moves_only_that_example():
    ids = [f"example-{i}" for i in range(500)]
    for shards in (2, 4, 7):
        before = {i: shard_of(i, shards) for i in ids}
        after = {i: shard_of(i, shards) for i in [*ids, "a-new-one"]}
        assert {i: after[i] for i in ids} == before
        sizes = [list(before.values()).count(s) for s in range(shards)]
        assert min(sizes) > 0.6 * len(ids) / shards, sizes  # a hash, not one shard holding everything


@pytest.fixture
def warm(project):
    """The project against the fake model (its golden answers, one always failing): one run made
    every call, so the cache holds every answer; returns (project, fake model)."""
    answers = golden_answers(project / "eval" / "golden.jsonl")
    failing_and_erroring(project)
    with FakeModel(answers) as model:
        configure(project, model.base_url)
        assert evaluate(project / "first") == 0
        yield project, model


def test_n_shards_merge_to_the_single_runs_bytes(warm):
    root, _ = warm
    assert evaluate(root / "single") == 0
    single = read(root / "single")
    results = [json.loads(line) for line in single["results.jsonl"].decode().splitlines()]
    assert len({r["repeat"] for r in results}) == 2 and any(r["passed"] is False for r in results)
    assert any(r["error"] for r in results)
    for shards in (1, 2, 4, 7):
        shard_dir = sharded(root, shards)
        assert sorted(p.name for p in shard_dir.iterdir()) == sorted(
            f"shard-{i}-of-{shards}.jsonl" for i in range(shards)
        )
        assert not (root / "unused").exists()  # a shard writes its shard file, nothing else
        assert merge(root / f"merged-{shards}", shard_dir) == 0
        assert read(root / f"merged-{shards}") == single, shards


def refusal(root: Path, shard_dir: Path, capsys) -> str:
    """merge's one line, after checking it exited 2 and wrote nothing."""
    capsys.readouterr()
    assert merge(root / "refused", shard_dir) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert not (root / "refused").exists()
    return err


def test_missing_duplicated_foreign_mismatched_and_torn_shards_are_refused(warm, capsys):
    root, _ = warm
    good = sharded(root, 4)

    def case(name: str) -> Path:
        shard_dir = root / name
        shutil.copytree(good, shard_dir)
        return shard_dir

    missing = case("missing")
    (missing / "shard-2-of-4.jsonl").unlink()
    assert "1 of 4 shards missing (shard-2-of-4.jsonl)" in refusal(root, missing, capsys)

    twice = case("twice")
    (twice / "again").mkdir()
    shutil.copy(twice / "shard-1-of-4.jsonl", twice / "again" / "shard-1-of-4.jsonl")
    assert "shard 1 of 4 twice" in refusal(root, twice, capsys)

    other_n = case("other-n")
    shutil.copy(sharded(root, 2) / "shard-0-of-2.jsonl", other_n)
    assert "a shard of" in refusal(root, other_n, capsys)

    beyond = case("beyond")
    shutil.copy(beyond / "shard-3-of-4.jsonl", beyond / "shard-4-of-4.jsonl")
    assert "shard-4-of-4.jsonl: not a shard's name" in refusal(root, beyond, capsys)

    torn = case("torn")
    shard = torn / "shard-3-of-4.jsonl"
    shard.write_bytes(shard.read_bytes()[:-40])
    assert "shard-3-of-4.jsonl: does not end with a newline" in refusal(root, torn, capsys)
    lines = shard.read_bytes().split(b"\n")
    shard.write_bytes(b"\n".join([*lines[:-2], lines[-2][:30], b""]))  # a line cut in its middle
    assert f"shard-3-of-4.jsonl:{len(lines) - 1}: not valid JSON" in refusal(root, torn, capsys)

    moved = case("moved")
    zero, one = moved / "shard-0-of-4.jsonl", moved / "shard-1-of-4.jsonl"
    head, first, *rest = zero.read_text().splitlines(keepends=True)
    zero.write_text(head + "".join(rest))
    one.write_text(one.read_text() + first)
    assert "belongs to shard 0" in refusal(root, moved, capsys)

    foreign = case("foreign")
    result = json.loads(zero.read_text().splitlines()[1]) | {"id": "not-in-the-set"}
    (foreign / "shard-0-of-4.jsonl").write_text(
        (foreign / "shard-0-of-4.jsonl").read_text() + json.dumps(result) + "\n"
    )
    lines = len((foreign / "shard-0-of-4.jsonl").read_text().splitlines())
    assert f"shard-0-of-4.jsonl:{lines}: 'not-in-the-set' repeat" in refusal(root, foreign, capsys)

    # Shards made before a prompt changed, merged after: refused, whatever the shard's results say.
    prompt = sorted((root / "prompts").glob("*.yaml"))[0]
    template = yaml.safe_load(prompt.read_text())
    template["messages"][0]["content"] += " Be brief."
    prompt.write_text(yaml.safe_dump(template, sort_keys=False))
    assert "made with other prompts" in refusal(root, good, capsys)


def test_other_params_or_eval_set_are_refused(warm, capsys):
    root, _ = warm
    good = sharded(root, 2)
    params = (root / "params.yaml").read_text()
    (root / "params.yaml").write_text(re.sub(r"(?m)^(  repeats:) .*$", r"\1 3", params, count=1))
    assert "made with other params" in refusal(root, good, capsys)
    (root / "params.yaml").write_text(params)
    golden = root / "eval" / "golden.jsonl"
    golden.write_text(
        golden.read_text() + golden.read_text().splitlines(keepends=True)[0].replace('"id": "', '"id": "x', 1)
    )
    assert "made from another eval set" in refusal(root, good, capsys)


@pytest.mark.parametrize("spec", ["4/4", "x", "1/0", "-1/2"])
def test_a_bad_shard_spec_is_one_line(project, capsys, spec):
    assert cli(["evaluate", "--eval-set", "eval/golden.jsonl", f"--shard={spec}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--shard:" in err, err


def test_the_shard_index_may_come_from_the_environment(warm, monkeypatch, capsys):
    """As in a Kubernetes Indexed Job: I from JOB_COMPLETION_INDEX, N from eval.shards."""
    root, model = warm
    configure(root, model.base_url, shards=3)
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "2")
    assert evaluate(root / "unused", "--shard-index-env=JOB_COMPLETION_INDEX", "--shard-dir=env") == 0
    assert [p.name for p in (root / "env").iterdir()] == ["shard-2-of-3.jsonl"]
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "3")
    capsys.readouterr()
    assert evaluate(root / "unused", "--shard-index-env=JOB_COMPLETION_INDEX") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "must be below 3" in err, err


def test_the_shared_cache_lets_a_fresh_machine_make_no_calls(project, capsys):
    shared = project / "shared-cache"
    with FakeModel(golden_answers(project / "eval" / "golden.jsonl")) as model:
        # Two shards on two "machines" (their own local caches) fill the shared cache.
        for index in (0, 1):
            configure(project, model.base_url, cache_dir=f".cache/machine-{index}", cache_url=str(shared))
            assert evaluate(project / "unused", f"--shard={index}/2", "--shard-dir=shards") == 0
        made = model.calls()
        objects = sorted(p.name for p in shared.glob("*.jsonl"))
        assert made > 0 and len(objects) == 2  # one object per writer
        # The second machine pulled the first's object, and keeps its own under its shared name.
        assert sorted(p.name for p in (project / ".cache/machine-1").glob("*.jsonl")) == objects
        # A third machine with an empty local cache: every answer from the shared one.
        configure(project, model.base_url, cache_dir=".cache/machine-2", cache_url=str(shared))
        assert evaluate(project / "third") == 0
        assert model.calls() == made
        assert all(json.loads(line)["cached"] for line in (project / "third/results.jsonl").read_text().splitlines())
        # A URL that cannot be opened: one line, before any model call.
        configure(project, model.base_url, cache_dir=".cache/machine-3", cache_url="nosuchproto://bucket/cache")
        capsys.readouterr()
        assert evaluate(project / "fourth") == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "cannot open" in err and model.calls() == made, err
