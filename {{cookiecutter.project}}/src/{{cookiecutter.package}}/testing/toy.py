"""A small app of the framework's own tests: two prompts, one data file, one flow.

The framework's tests (service, shadow, canary, registry, logs) run against this app rather than the
project's, so they pass whatever app the project has, and a team that replaces the example keeps
them. `write_version` lays out a version directory of it:

    prompts/echo.yaml     free text: repeats `text`
    prompts/label.yaml    JSON: {"label": "good" | "bad"}
    data/greeting.txt     the app's data file (part of the version id)
    params.yaml           the project's params, the model pointed at `base_url`, app.entry -> APP

`answers` is the matching fake model: `label` says good when the text holds "good", echo echoes.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from .. import PACKAGE
from ..app.contract import App, Context, Flow
from ..errors import UserError
from .fake_model import Request, echo

ENTRY = f"{PACKAGE}.testing.toy:APP"
DATA_FILE = "data/greeting.txt"
PROMPTS = {
    "echo": {
        "id": "echo",
        "description": "Repeat the text.",
        "variables": ["text"],
        "messages": [{"role": "system", "content": "Repeat the text."}, {"role": "user", "content": "{text}"}],
    },
    "label": {
        "id": "label",
        "description": "Say whether the text is good or bad.",
        "variables": ["text"],
        "messages": [
            {"role": "system", "content": "Label the text. good: it praises. bad: anything else."},
            {"role": "user", "content": "{text}"},
        ],
        "output_schema": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"label": {"type": "string", "enum": ["good", "bad"]}},
            "required": ["label"],
        },
    },
}


def load(root: Path) -> str:
    path = Path(root) / DATA_FILE
    try:
        text = path.read_text().strip()
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror})") from None
    if not text:
        raise UserError(f"{path}: expected a greeting")
    return text


async def reply(ctx: Context, request: Mapping[str, Any]) -> dict[str, Any]:
    label = (await ctx.call("label", {"text": request["text"]})).data
    echoed = (await ctx.call("echo", {"text": f"{ctx.data} {request['text']}"})).text
    return {"label": (label or {}).get("label"), "echo": echoed}


APP = App(
    name="toy",
    prompts=("echo", "label"),
    files=(DATA_FILE,),
    load=load,
    flows={
        "reply": Flow(
            reply,
            request={
                "type": "object",
                "additionalProperties": False,
                "required": ["text"],
                "properties": {"text": {"type": "string", "minLength": 1}},
            },
            agreement=lambda r: r["label"],
            log_fields=lambda r: {"label": r["label"]},
        )
    },
)


def answers(request: Request) -> str:
    """The fake model's answers for this app."""
    if "label" in request.fields:
        return json.dumps({"label": "good" if "good" in request.content else "bad"})
    return echo(request)


def always(label: str):
    """A worse model: `label` whatever the text says (a shadow or canary that disagrees)."""

    def answer(request: Request) -> str:
        return json.dumps({"label": label}) if "label" in request.fields else echo(request)

    return answer


def write_version(project: Path, dest: Path, base_url: str, greeting: str = "Hello", **sections: dict) -> Path:
    """A version directory of the toy app from the project's params.yaml and prompt schema, its
    model pointed at `base_url`; `sections` override params keys, e.g. serve={"max_attempts": 1}."""
    (dest / "prompts").mkdir(parents=True, exist_ok=True)
    shutil.copy(project / "prompts" / "schema.json", dest / "prompts" / "schema.json")
    for name, prompt in PROMPTS.items():
        (dest / "prompts" / f"{name}.yaml").write_text(yaml.safe_dump(prompt, sort_keys=False))
    (dest / DATA_FILE).parent.mkdir(parents=True, exist_ok=True)
    (dest / DATA_FILE).write_text(greeting + "\n")
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["model"].update(base_url=base_url, name="fake-model", api_key_env="")
    params["app"] = {"entry": ENTRY}
    params["thresholds"] = {"min": {"pass_rate": 0.5}, "max": {"error_rate": 0.1}}
    params.setdefault("serve", {})["prompt_routes"] = True
    for section, values in sections.items():
        params.setdefault(section, {}).update(values)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return dest
