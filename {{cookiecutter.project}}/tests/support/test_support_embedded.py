"""The support flow on the embedded model (pruned from projects without it)."""

import dataclasses
from pathlib import Path

import pytest

pytest.importorskip("xllamacpp", reason="the embedded model is installed by `make setup`")

from {{ cookiecutter.package }}.app.contract import run_flow
from {{ cookiecutter.package }}.app.prompts import load_all
from {{ cookiecutter.package }}.app.runtime import Caller, client_chat, connect
from {{ cookiecutter.package }}.settings import load
from {{ cookiecutter.package }}.support import APP
from {{ cookiecutter.package }}.support.policies import load as load_policies

pytestmark = pytest.mark.model
ROOT = Path(__file__).resolve().parents[2]


def test_the_flow_answers_deterministically_on_the_embedded_model():
    # The embedded model whatever params.yaml points at (a project's CI may point it at a fake).
    model = dataclasses.replace(load(ROOT / "params.yaml").model, base_url="embedded", api_key_env="")
    flow, policies = APP.flows["answer"], load_policies(ROOT)
    with connect(model) as client:
        call = Caller(load_all(ROOT / "prompts"), client_chat(client, model))
        first = run_flow(flow, call, policies, {"message": "My order BH-10422 has not arrived yet."})
        again = run_flow(flow, call, policies, {"message": "My order BH-10422 has not arrived yet."})
    assert first.body["intent"] in set(policies)
    assert [c.prompt for c in first.calls] == ["classify_intent", "extract_order", "answer_policy"]
    # Temperature 0 and a fixed seed make the embedded model deterministic (latencies aside).
    assert first.body == again.body
