"""The app as an MLflow pyfunc model: the logged app version, answered through the one prompt path.

`mlflow.pyfunc.load_model("models:/<name>@champion").predict(requests)` answers like the service:

    [{"prompt": "<id>", "variables": {...}}]   -> [{"prompt", "prompt_version", "text", "data"}]
    [{"flow": "<name>", "request": {...}}]     -> [the flow's reply, as POST /v1/<name> sends it]

A list of requests in, a list of answers out (MLflow's `list[Any]` signature: no schema to keep
in step with the prompts, and no input example to call the model at logging time).

The version (params.yaml, prompts/, the app's files) comes from the model's artifacts, i.e. what was
evaluated, not from the working tree. The endpoint comes from the logged `model` settings;
`load_model(uri, model_config={"base_url": ...})` points it elsewhere (a serving cluster's
endpoint). For `embedded`, the local llama.cpp server starts on the first request and stops when the
process exits. Imports mlflow: load it only where a model is logged or loaded.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import threading
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

# Not `mlflow.pyfunc.PythonModel`: mlflow's __init__ binds `pyfunc` to a lazy loader, which hides the
# submodule's names from type checkers.
from mlflow.pyfunc import PythonModel

from ..app.contract import run_flow
from ..settings import ModelSettings
from .versions import AppVersion, from_directory

if TYPE_CHECKING:
    from ..app.runtime import Caller

# MLflow warns (in colour, even into a log file) that `list[Any]` leaves requests unvalidated, each
# time this class is defined or logged. No narrower hint fits (a flow's request is any JSON object)
# and `predict` checks each request itself (check_request), so that notice is left out. MLflow
# raises it inside its own `catch_warnings()` with a filter of its own, which a warnings filter of
# ours cannot outrank: the notice is dropped where warnings are shown. Every other warning shows.
ANY_TYPE_NOTICE = "Any type hint is inferred as AnyType"


def _without_any_type_notice(show: Callable[..., None]) -> Callable[..., None]:
    def showwarning(message: Any, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        if not (issubclass(category, UserWarning) and ANY_TYPE_NOTICE in str(message)):
            show(message, category, *args, **kwargs)

    showwarning.drops_any_type_notice = True  # type: ignore[attr-defined]
    return showwarning


if not getattr(warnings.showwarning, "drops_any_type_notice", False):
    warnings.showwarning = _without_any_type_notice(warnings.showwarning)


def check_request(request: Any, version: AppVersion) -> tuple[str, str, Mapping[str, Any]]:
    """("prompt" | "flow", its name, its variables or request) of one request; ValueError if malformed."""
    if isinstance(request, Mapping) and isinstance(request.get("flow"), str):
        name = request["flow"]
        if name not in version.app.flows:
            raise ValueError(
                f"unknown flow {name!r} (this version has: {', '.join(sorted(version.app.flows)) or 'none'})"
            )
        body = request.get("request")
        if not isinstance(body, Mapping):
            raise ValueError(f"a {name!r} flow request needs a mapping under 'request', got {body!r:.200}")
        return "flow", name, body
    if not isinstance(request, Mapping) or not isinstance(request.get("prompt"), str):
        raise ValueError(
            f'a request is {{"prompt": <id>, "variables": {{...}}}} or {{"flow": <name>, "request": {{...}}}}, '
            f"got {request!r:.200}"
        )
    if request["prompt"] not in version.prompts:
        raise ValueError(
            f"unknown prompt {request['prompt']!r} (this version has: {', '.join(sorted(version.prompts))})"
        )
    variables = request.get("variables") or {}
    if not isinstance(variables, Mapping):
        raise ValueError(f"variables of a {request['prompt']!r} request must be a mapping, got {variables!r:.200}")
    return "prompt", request["prompt"], variables


class AppModel(PythonModel):
    def load_context(self, context: Any) -> None:
        version = from_directory("champion", Path(context.artifacts["app_version"]))
        # model_config: the logged model settings, overridable at load time (load_model(model_config=...)).
        config = dict(context.model_config or {})
        known = {f.name for f in dataclasses.fields(ModelSettings)}
        model = dataclasses.replace(version.model, **{k: v for k, v in config.items() if k in known})
        self.version = dataclasses.replace(version, settings=dataclasses.replace(version.settings, model=model))
        self._caller: Caller | None = None
        self._lock = threading.Lock()
        self._stack = contextlib.ExitStack()

    def _started(self) -> Caller:
        # Lazily: loading a model (to inspect it, or in a build step) must not start a model server.
        with self._lock:
            if self._caller is None:
                from ..app.runtime import Caller, client_chat, connect

                model = self.version.model
                client = self._stack.enter_context(connect(model))
                atexit.register(self._stack.close)
                self._caller = Caller(self.version.prompts, client_chat(client, model))
            return self._caller

    # `list[Any]`: MLflow validates that a list came in and infers the signature from this hint.
    def predict(self, context: Any, model_input: list[Any], params: dict[str, Any] | None = None) -> list[Any]:
        checked = [check_request(request, self.version) for request in model_input]
        call = self._started()
        answers: list[Any] = []
        for kind, name, body in checked:
            if kind == "flow":
                answers.append(run_flow(self.version.app.flows[name], call, self.version.data, body).body)
                continue
            answer = call(name, body)
            answers.append(
                {
                    "prompt": answer.prompt,
                    "prompt_version": answer.prompt_version,
                    "text": answer.text,
                    "data": answer.data,
                }
            )
        return answers
