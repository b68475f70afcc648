"""Find the project's app: `app.entry` in params.yaml names it as `module:attribute`.

Imported only when named, so the framework never imports an app it was not told about, and a team
replaces the example by pointing `app.entry` at its own module (or at nothing: the app is then its
prompts, each callable on its own).
"""

from __future__ import annotations

import importlib

from ..errors import UserError, clip, quote
from .contract import App, is_async

PROMPTS_ONLY = App(name="prompts")
# Flow names the service keeps for routes of its own (POST /v1/feedback: users' ratings of answers).
RESERVED_FLOWS = ("feedback",)


def load_app(entry: str) -> App:
    """The `App` that `entry` names; `PROMPTS_ONLY` for an empty entry. A bad entry is a UserError."""
    if not entry:
        return PROMPTS_ONLY
    module_name, sep, attribute = entry.partition(":")
    if not sep or not module_name or not attribute:
        raise UserError(f"app.entry: {quote(entry)} must be 'module:attribute', e.g. 'my_package.review:APP'")
    try:
        module = importlib.import_module(module_name)
    except (ImportError, TypeError, ValueError) as exc:  # TypeError: a relative name such as `.x`
        raise UserError(f"app.entry: cannot import {quote(module_name)} ({clip(str(exc), 120)})") from None
    app = getattr(module, attribute, None)
    if not isinstance(app, App):
        found = "nothing" if app is None else type(app).__name__
        raise UserError(f"app.entry: {quote(entry)} must name an App (see app/contract.py), found {found}")
    for name, flow in app.flows.items():
        if name in RESERVED_FLOWS:
            raise UserError(
                f"app.entry: flow {name!r} of {entry!r}: the service answers POST /v1/{name} itself "
                "(users' ratings, serving/server.py): rename the flow"
            )
        if not is_async(flow.run):
            raise UserError(
                f"app.entry: flow {name!r} of {entry!r} must be an `async def` that awaits ctx.call(...) "
                "(see app/contract.py)"
            )
    return app
