"""Reject answers that would bake a broken project: one line naming the field, exit 1."""

from __future__ import annotations

import keyword
import re
import sys

# jsonify renders each answer as a JSON string literal, which is also a valid Python literal.
ANSWERS = {
    "project": {{ cookiecutter.project | jsonify }},
    "package": {{ cookiecutter.package | jsonify }},
    "python_version": {{ cookiecutter.python_version | jsonify }},
    "example_app": {{ cookiecutter.example_app | jsonify }},
    "model_backend": {{ cookiecutter.model_backend | jsonify }},
    "dvc_remote": {{ cookiecutter.dvc_remote | jsonify }},
    "mlflow_tracking": {{ cookiecutter.mlflow_tracking | jsonify }},
    "eval_runner": {{ cookiecutter.eval_runner | jsonify }},
}

CHOICES = {
    "example_app": ("support-bot", "none"),
    "model_backend": ("embedded", "openai-compatible"),
    "dvc_remote": ("local", "s3"),
    "mlflow_tracking": ("sqlite", "server"),
    "eval_runner": ("ubuntu-latest", "self-hosted-gpu"),
}
SUPPORTED_PYTHONS = ("3.11", "3.12", "3.13")
# A directory name that is also a valid distribution and CLI name: lower case, digits, '-'.
PROJECT_RE = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
PACKAGE_RE = re.compile(r"^[a-z_][a-z0-9_]*$")


def problems(answers: dict[str, str]) -> list[str]:
    """Every reason the answers cannot be baked, each naming its field."""
    found = []
    if not PROJECT_RE.match(answers["project"]):
        found.append(
            f"project: {answers['project']!r} must be lower-case letters and digits separated "
            "by single '-' (e.g. support-bot)"
        )
    package = answers["package"]
    if not PACKAGE_RE.match(package) or keyword.iskeyword(package):
        found.append(f"package: {package!r} is not a valid lower-case Python identifier")
    if answers["python_version"] not in SUPPORTED_PYTHONS:
        found.append(
            f"python_version: {answers['python_version']!r} is not one of {', '.join(SUPPORTED_PYTHONS)}"
        )
    for field, allowed in CHOICES.items():
        if answers[field] not in allowed:
            found.append(f"{field}: {answers[field]!r} is not one of {', '.join(allowed)}")
    # The embedded model is a CPU build: a GPU runner buys nothing and would sit idle.
    if answers["model_backend"] == "embedded" and answers["eval_runner"] == "self-hosted-gpu":
        found.append(
            "eval_runner: self-hosted-gpu needs model_backend=openai-compatible "
            "(the embedded model runs on CPU; point model.base_url at your GPU server)"
        )
    return found


if __name__ == "__main__":
    errors = problems(ANSWERS)
    if errors:
        # One line: the first problem is the root one (a bad project name also makes the derived
        # package name bad).
        print(f"cookiecutter-llmops: {errors[0]}", file=sys.stderr)
        sys.exit(1)
