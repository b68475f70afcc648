import subprocess
import sys

from {{ cookiecutter.package }}.cli import COMMANDS, main


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


def test_unknown_command_exits_2(capsys):
    assert main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_every_command_module_has_a_main():
    import importlib

    for name, (module, _) in COMMANDS.items():
        mod = importlib.import_module(f"{{ cookiecutter.package }}.{module}")
        assert callable(mod.main), name


def test_help_imports_nothing_heavy():
    code = (
        "import sys;"
        "from {{ cookiecutter.package }}.cli import main; main(['--help']);"
        "heavy = [m for m in ('mlflow', 'pandas', 'scipy', 'dvc', 'requests', 'jsonschema') if m in sys.modules];"
        "print(heavy)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip().endswith("[]"), proc.stdout
