import subprocess
import sys

import pytest

from {{ cookiecutter.package }} import settings
from {{ cookiecutter.package }}.cli import main


def test_the_shipped_params_are_valid():
    config = settings.load(settings.PARAMS_FILE)
    assert config.eval.concurrency >= 1
    assert config.thresholds.min, "the project ships absolute thresholds"


def test_unknown_key_names_file_line_and_key():
    text = "model:\n  base_url: embedded\n  name: m\n  temprature: 0.2\n"
    with pytest.raises(settings.SettingsError) as err:
        settings.parse(text, "params.yaml")
    assert str(err.value).startswith("params.yaml:4: model.temprature: unknown key")


def test_wrong_type_is_an_error_not_a_default():
    text = "model:\n  base_url: embedded\n  name: m\neval:\n  concurrency: four\n"
    with pytest.raises(settings.SettingsError, match=r"params.yaml:5: eval.concurrency: expected int, got str 'four'"):
        settings.parse(text)


def test_bool_is_not_an_int():
    with pytest.raises(settings.SettingsError, match=r"eval\.repeats: expected int, got bool"):
        settings.parse("model: {base_url: embedded, name: m}\neval: {repeats: true}\n")


def test_missing_required_key():
    with pytest.raises(settings.SettingsError, match=r"model.name: required key is missing"):
        settings.parse("model:\n  base_url: embedded\n")


def test_ints_are_accepted_for_floats_and_settings_are_frozen():
    config = settings.parse("model: {base_url: embedded, name: m, temperature: 1}\n")
    assert config.model.temperature == 1.0 and isinstance(config.model.temperature, float)
    with pytest.raises(AttributeError):
        config.model.name = "other"


def test_api_key_only_from_the_named_env_var(monkeypatch):
    config = settings.parse("model: {base_url: 'http://127.0.0.1:1/v1', name: m, api_key_env: TEST_MODEL_KEY}\n")
    monkeypatch.delenv("TEST_MODEL_KEY", raising=False)
    with pytest.raises(settings.SettingsError, match="TEST_MODEL_KEY is not set"):
        config.model.api_key()
    monkeypatch.setenv("TEST_MODEL_KEY", "sk-test")
    assert config.model.api_key() == "sk-test"


def test_cli_reports_a_broken_params_file_in_one_line_exit_2(project, capsys):
    (project / "params.yaml").write_text("model:\n  base_url: embedded\n  name: m\n  colour: blue\n")
    assert main(["params"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "params.yaml:4: model.colour: unknown key" in err


def test_console_script_has_no_traceback_on_bad_params(project):
    (project / "params.yaml").write_text("eval: {concurrency: 2.5}\nmodel: {base_url: embedded, name: m}\n")
    proc = subprocess.run([sys.executable, "-m", "{{ cookiecutter.package }}", "params"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "eval.concurrency: expected int, got float 2.5" in proc.stderr
