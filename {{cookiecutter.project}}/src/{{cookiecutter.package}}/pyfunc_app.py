"""The app as an MLflow pyfunc model: the logged prompts + the logged model config + `App.run`.

`mlflow.pyfunc.load_model("models:/<name>@champion").predict(request)` answers like the app:

    requests = [{"prompt": "classify_intent", "variables": {"message": "Where is my order?"}}]
    model.predict(requests) -> [{"prompt": ..., "prompt_version": ..., "text": ..., "data": ...}]

A list of requests in, a list of answers out (MLflow's `list[Any]` signature: no schema to keep
in step with the prompts, and no input example to call the model at logging time).

The prompts come from the model's artifacts (what was evaluated), not from the working tree. The
endpoint comes from the logged `model` settings; `load_model(uri, model_config={"base_url": ...})`
points it elsewhere (a serving cluster's endpoint). For `embedded`, the local llama.cpp server
starts on the first request and stops when the process exits. Imports mlflow: load it only where
a model is logged or loaded.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import threading
import warnings
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow.pyfunc

from .settings import ModelSettings

# MLflow asks for a narrower type hint than `list[Any]`; `predict` checks each request itself.
warnings.filterwarnings("ignore", message=".*Any type hint is inferred as AnyType", category=UserWarning)


def requirements(packages: Iterable[str]) -> list[str]:
    """`name==installed version` for each package (the pip requirements logged with the model)."""
    pinned = []
    for name in packages:
        try:
            pinned.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pinned.append(name)
    return pinned


def check_request(request: Any, prompts: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]]:
    """(prompt id, variables) of one request; a clear error for a malformed one."""
    if not isinstance(request, Mapping) or not isinstance(request.get("prompt"), str):
        raise ValueError(f'a request is {{"prompt": <id>, "variables": {{...}}}}, got {request!r:.200}')
    if request["prompt"] not in prompts:
        raise ValueError(f"unknown prompt {request['prompt']!r} (this version has: {', '.join(sorted(prompts))})")
    variables = request.get("variables") or {}
    if not isinstance(variables, Mapping):
        raise ValueError(f"variables of a {request['prompt']!r} request must be a mapping, got {variables!r:.200}")
    return request["prompt"], variables


class AppModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context: Any) -> None:
        from .prompts import load_all

        config = dict(context.model_config or {})
        known = {f.name for f in dataclasses.fields(ModelSettings)}
        self.model = ModelSettings(**{k: v for k, v in config.items() if k in known})
        self.prompts = load_all(Path(context.artifacts["prompts"]))
        self._app = None
        self._lock = threading.Lock()
        self._stack = contextlib.ExitStack()

    def _started(self) -> Any:
        # Lazily: loading a model (to inspect it, or in a build step) must not start a model server.
        with self._lock:
            if self._app is None:
                from .app import App, connect

                client = self._stack.enter_context(connect(self.model))
                atexit.register(self._stack.close)
                self._app = App(self.prompts, client, self.model)
            return self._app

    # `list[Any]`: MLflow validates that a list came in and infers the signature from this hint.
    def predict(self, context: Any, model_input: list[Any], params: dict[str, Any] | None = None) -> list[Any]:
        checked = [check_request(request, self.prompts) for request in model_input]
        app = self._started()
        answers = []
        for prompt_id, variables in checked:
            answer = app.run(prompt_id, variables)
            answers.append(
                {
                    "prompt": answer.prompt,
                    "prompt_version": answer.prompt_version,
                    "text": answer.text,
                    "data": answer.data,
                }
            )
        return answers
