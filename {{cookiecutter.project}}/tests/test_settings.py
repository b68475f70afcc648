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


BASE = "model: {base_url: embedded, name: m}\n"


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        (
            "model: {base_url: not-a-url, name: m}\n",
            "params.yaml:1: model.base_url: must be `embedded` or an http(s) URL",
        ),
        ("model: {base_url: 'ftp://host/v1', name: m}\n", "model.base_url: must be `embedded` or an http(s) URL"),
        ("model: {base_url: 'http:///v1', name: m}\n", "model.base_url: must be `embedded` or an http(s) URL"),
        ("model: {base_url: 'http://h:port/v1', name: m}\n", "model.base_url: must be `embedded` or an http(s) URL"),
        ("model: {base_url: embedded, name: m, read_timeout_s: 0}\n", "model.read_timeout_s: must be greater than 0"),
        ("model: {base_url: embedded, name: m, connect_timeout_s: -1}\n", "model.connect_timeout_s: must be greater"),
        ("model: {base_url: embedded, name: m, max_tokens: 0}\n", "model.max_tokens: must be at least 1"),
        ("model: {base_url: embedded, name: m, embedded_slots: 0}\n", "model.embedded_slots: must be at least 1"),
        ("model: {base_url: embedded, name: m, embedded_threads: -2}\n", "model.embedded_threads: must be at least 1"),
        ("model: {base_url: embedded, name: ''}\n", "model.name: must not be empty"),
        ("model: {base_url: embedded, name: m, temperature: .nan}\n", "model.temperature: expected a finite number"),
        (BASE + "eval:\n  concurrency: 0\n", "params.yaml:3: eval.concurrency: must be at least 1, got 0"),
        (BASE + "eval:\n  concurrency: -3\n", "params.yaml:3: eval.concurrency: must be at least 1, got -3"),
        (BASE + "eval:\n  repeats: 0\n", "params.yaml:3: eval.repeats: must be at least 1"),
        (BASE + "eval:\n  max_error_rate: 1.5\n", "params.yaml:3: eval.max_error_rate: must be between 0 and 1"),
        (BASE + "eval:\n  max_attempts: 0\n", "params.yaml:3: eval.max_attempts: must be at least 1"),
        (BASE + "gate:\n  alpha: 0.0\n", "params.yaml:3: gate.alpha: must be between 0 and 1, both excluded"),
        (BASE + "gate:\n  alpha: 1\n", "gate.alpha: must be between 0 and 1, both excluded"),
        (BASE + "gate:\n  tolerance: {pass_rate: -0.1}\n", "gate.tolerance.pass_rate: must be 0 or more"),
        (BASE + "serve:\n  max_inflight: 0\n", "serve.max_inflight: must be at least 1"),
        (BASE + "serve:\n  request_timeout_s: 0\n", "serve.request_timeout_s: must be greater than 0"),
        (BASE + "serve:\n  api_keys_env: sk-live-abc\n", "serve.api_keys_env: must be the NAME of an environment"),
        (BASE + "canary:\n  min_agreement: 2\n", "canary.min_agreement: must be between 0 and 1"),
        (BASE + "canary:\n  min_schema_valid_rate: 1.5\n", "canary.min_schema_valid_rate: must be between 0 and 1"),
        (BASE + "canary:\n  cost_ratio: 0\n", "params.yaml:3: canary.cost_ratio: must be greater than 0"),
        (BASE + "thresholds:\n  min:\n    pass_rate: 1.2\n", "thresholds.min.pass_rate: pass_rate is a rate"),
        (
            BASE + "thresholds:\n  min: {latency_p95_ms: 900}\n  max: {latency_p95_ms: 500}\n",
            "thresholds.max.latency_p95_ms: below thresholds.min.latency_p95_ms",
        ),
    ],
)
def test_values_out_of_range_name_line_and_key(yaml_text, expected):
    with pytest.raises(settings.SettingsError) as err:
        settings.parse(yaml_text, "params.yaml")
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


def test_urls_that_work_are_accepted():
    for url in ("embedded", "http://127.0.0.1:8000/v1", "https://api.openai.com/v1", "http://[::1]:9/v1"):
        assert settings.parse("model: {base_url: '" + url + "', name: m}\n").model.base_url == url


def test_a_key_pasted_where_its_name_belongs_is_refused_and_never_echoed():
    secret = "sk-proj-4f1c9a7d2b8e6f30"
    for text in (
        "model: {base_url: embedded, name: m, api_key_env: " + secret + "}\n",
        "model: {base_url: 'https://user:" + secret + "@api.example/v1', name: m}\n",
    ):
        with pytest.raises(settings.SettingsError) as err:
            settings.parse(text)
        assert secret not in str(err.value)


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ("thresholds:\n  min:\n    pass_rat: 0.8\n", "params.yaml:4: thresholds.min.pass_rat: no such metric"),
        ("thresholds:\n  max:\n    errors: 0.1\n", "params.yaml:4: thresholds.max.errors: no such metric"),
        ("gate:\n  required: [pass_rate, eror_rate]\n", "params.yaml:3: gate.required[1]: no such metric 'eror_rate'"),
        (
            "gate:\n  tolerance:\n    latency_p99_ms: 5\n",
            "params.yaml:4: gate.tolerance.latency_p99_ms: no such metric",
        ),
        ("thresholds:\n  min:\n    tag__pass_rate: 0.5\n", "params.yaml:4: thresholds.min.tag__pass_rate: no such"),
    ],
)
def test_metric_names_are_checked_against_the_catalogue(section, expected):
    with pytest.raises(settings.SettingsError) as err:
        settings.parse(BASE + section, "params.yaml")
    assert str(err.value).startswith(expected)
    if "pass_rat:" in section:
        assert "did you mean 'pass_rate'?" in str(err.value)


def test_every_metric_an_evaluation_can_produce_is_a_valid_name():
    from {{ cookiecutter.package }}.evaluation.catalogue import FIXED_NAMES, scorer_metrics
    from {{ cookiecutter.package }}.evaluation.scorers import SCORERS

    names = [*FIXED_NAMES, *(m.name for s in SCORERS for m in scorer_metrics(s, "")), "tag_any-tag_pass_rate"]
    tolerance = "".join(f"    {name}: 0.1\n" for name in names)
    config = settings.parse(BASE + f"gate:\n  required: [{', '.join(names)}]\n  tolerance:\n{tolerance}")
    assert set(config.gate.required) == set(names)


def test_duplicate_keys_are_an_error_naming_both_lines():
    text = BASE + "eval:\n  concurrency: 2\n  repeats: 1\n  concurrency: 8\n"
    with pytest.raises(
        settings.SettingsError, match=r"^params.yaml:5: eval.concurrency: duplicate key \(first on line 3\)$"
    ):
        settings.parse(text, "params.yaml")
    with pytest.raises(settings.SettingsError, match=r"^params.yaml:3: model: duplicate key \(first on line 1\)"):
        settings.parse(BASE + "eval: {}\nmodel: {base_url: embedded, name: other}\n", "params.yaml")


def test_a_huge_value_of_the_wrong_type_gives_a_short_line(project, capsys):
    (project / "params.yaml").write_text(BASE + "eval:\n  concurrency: '" + "x" * 2_000_000 + "'\n")
    assert main(["params"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and len(err) < 300, err[:400]
    assert "params.yaml:3: eval.concurrency: expected int, got str 'xxx" in err and "(2,000,000 characters)" in err


def test_params_that_are_not_utf8_are_one_line_with_the_line_number(project, capsys):
    (project / "params.yaml").write_bytes(BASE.encode() + b"eval:\n  cache_dir: caf\xe9\n")
    assert main(["params"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "{{ cookiecutter.project }} params: error: params.yaml:3: not valid UTF-8 (save it as UTF-8)"


def test_the_policy_of_an_older_base_parses_and_stays_strict():
    # A base written before some keys existed (no max_drop, no embedded_*), with a model section
    # this code would refuse (a key since removed): only `thresholds` and `gate` are read.
    older = (
        "model:\n  base_url: embedded\n  name: m\n  n_threads: 4\n  n_threads: 8\n"
        "thresholds:\n  min:\n    pass_rate: 0.5\n"
        "gate:\n  alpha: 0.05\n  required: [pass_rate]\n  tolerance: {pass_rate: 0.03}\n"
    )
    policy = settings.parse_policy(older, "params.yaml at main")
    assert policy.thresholds.min == {"pass_rate": 0.5} and policy.gate.max_drop == 0.10
    for broken, expected in [
        (older.replace("alpha: 0.05", "alpha: 0"), "params.yaml at main:10: gate.alpha: must be between 0 and 1"),
        (older.replace("pass_rate: 0.5", "pass_rat: 0.5"), "params.yaml at main:8: thresholds.min.pass_rat: no such"),
        (older + "gate: {}\n", "params.yaml at main:13: gate: duplicate key (first on line 9)"),
    ]:
        with pytest.raises(settings.SettingsError) as err:
            settings.parse_policy(broken, "params.yaml at main")
        assert str(err.value).startswith(expected), str(err.value)
