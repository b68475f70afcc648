"""Finish a bake: prune files of options not chosen, keep the answers, commit a first baseline.

DVC is initialised by the template itself (`.dvc/config` with analytics off and the remote of the
chosen `dvc_remote`), which is what `dvc init` + `dvc remote add` would write, without needing DVC
installed where cookiecutter runs and without its ~1-4 s start-up.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

# jsonify gives JSON (null, true), not Python: parse it.
ANSWERS = json.loads(r"""{{ cookiecutter | jsonify }}""")
PACKAGE = ANSWERS["package"]

# Files that only make sense for one answer of an option: deleted when another answer was chosen.
ONLY_FOR = {
    ("model_backend", "embedded"): [
        f"src/{PACKAGE}/app/embedded.py",
        "tests/test_embedded.py",
        "tests/support/test_support_embedded.py",
    ],
    # The example app: its code, prompts, data and tests. The framework never names them.
    ("example_app", "support-bot"): [
        f"src/{PACKAGE}/support",
        "tests/support",
        "prompts/classify_intent.yaml",
        "prompts/extract_order.yaml",
        "prompts/answer_policy.yaml",
        "data/policies.yaml",
        "eval/judge_labels.jsonl",
    ],
    ("example_app", "none"): [
        "prompts/sentiment.yaml",
        "tests/prompts",
        "eval/golden.none.jsonl",
    ],
}
# Files of an answer that take the place of the default's (moved before pruning).
MOVES = {
    ("example_app", "none"): [("eval/golden.none.jsonl", "eval/golden.jsonl")],
}
EVAL_RUNNER_MARKER = "runs-on: ubuntu-latest  # eval_runner"
EVAL_RUNNERS = {"ubuntu-latest": "ubuntu-latest", "self-hosted-gpu": "[self-hosted, gpu]"}


def prune(root: Path, answers: dict) -> None:
    for (option, value), moves in MOVES.items():
        if answers[option] == value:
            for source, target in moves:
                (root / source).replace(root / target)
    for (option, value), paths in ONLY_FOR.items():
        if answers[option] == value:
            continue
        for rel in paths:
            path = root / rel
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()


def set_eval_runner(root: Path, runner: str) -> None:
    # Workflows are copied without Jinja (they use GitHub's own expression braces), so the one line that
    # depends on an answer is swapped here.
    ci = root / ".github" / "workflows" / "ci.yml"
    if ci.exists():
        text = ci.read_text()
        label = EVAL_RUNNERS[runner]
        ci.write_text(text.replace(EVAL_RUNNER_MARKER, f"runs-on: {label}  # eval_runner"))


def template_location(answers: dict) -> str:
    """Where `cruft check`/`cruft update` will find the template again: a URL as given, a local
    checkout as an absolute path (cookiecutter passes a local path as typed, often relative to a
    working directory the hook never sees)."""
    template = answers.get("_template", "")
    if "://" in template or template.startswith(("git@", "gh:", "gl:", "bb:")) or Path(template).is_absolute():
        return template
    output_dir = Path(answers.get("_output_dir", "."))
    bases: list[str | Path] = [os.environ.get("PWD", ""), output_dir, *output_dir.parents]
    for base in bases:
        candidate = Path(base, template)
        if base and (candidate / "cookiecutter.json").is_file():
            return str(candidate.resolve())
    return template


def template_commit(template: str) -> str | None:
    """The template's commit when baked from a local git checkout, so `cruft check` can compare."""
    if not Path(template).is_dir():
        return None
    out = subprocess.run(
        ["git", "-C", template, "rev-parse", "HEAD"], capture_output=True, text=True, check=False
    )
    return out.stdout.strip() if out.returncode == 0 else None


def write_cruft_answers(root: Path, answers: dict) -> None:
    template = template_location(answers)
    context = {k: v for k, v in answers.items() if not k.startswith("_")}
    context["_template"] = template
    context["_copy_without_render"] = answers.get("_copy_without_render", [])
    cruft = {
        "template": template,
        "commit": template_commit(template),
        "checkout": None,
        "context": {"cookiecutter": context},
        "directory": None,
        # Repository state and local stores: cruft must never diff or patch them. `.dvc` too: teams
        # point its remote at their own storage (`dvc remote modify`), which an update must not undo.
        "skip": [".git", ".dvc", ".venv", "mlflow.db", "mlruns"],
    }
    (root / ".cruft.json").write_text(json.dumps(cruft, indent=2) + "\n")


def git(root: Path, *args: str) -> None:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    # A machine without a git identity (CI, containers) must still get its baseline commit.
    identity = []
    for key, default in (("user.name", "cookiecutter-llmops"), ("user.email", "llmops@localhost")):
        have = subprocess.run(["git", "config", key], cwd=root, capture_output=True, check=False)
        if have.returncode != 0:
            identity += ["-c", f"{key}={default}"]
    subprocess.run(["git", *identity, *args], cwd=root, env=env, check=True, capture_output=True)


def main() -> int:
    root = Path.cwd()
    prune(root, ANSWERS)
    set_eval_runner(root, ANSWERS["eval_runner"])
    write_cruft_answers(root, ANSWERS)
    if shutil.which("git") is None:
        print("cookiecutter-llmops: git not found; skipped `git init` and the baseline commit", file=sys.stderr)
        return 0
    try:
        git(root, "init", "-q", "-b", "main")
        git(root, "add", "-A")
        git(root, "commit", "-q", "--no-verify", "-m", "Bake from cookiecutter-llmops")
    except subprocess.CalledProcessError as exc:
        print(f"cookiecutter-llmops: `git {' '.join(exc.cmd[1:])}` failed: {exc.stderr.decode().strip()}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
