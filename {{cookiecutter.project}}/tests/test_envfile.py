""".env is read the way python-dotenv reads the simple case, the real environment wins, and no value
is ever shown."""

import pytest

from {{ cookiecutter.package }} import envfile
from {{ cookiecutter.package }}.errors import UserError

SAMPLE = """\
# the model
MODEL_API_KEY=sk-plain
export EXPORTED=yes
SPACED = padded value
COMMENTED=value # a comment
HASH=value#not-a-comment
SINGLE='literal \\n # kept \\' \\\\'
DOUBLE="line\\nbreak \\"quoted\\" # kept"
QUOTED_COMMENT="v" # after the quotes
EMPTY=
EMPTY_QUOTES=""
EQUALS=a=b=c
BARE
  INDENTED=ok
CRLF=windows\r
"""


def test_the_simple_cases_read_as_python_dotenv_reads_them():
    values = envfile.parse(SAMPLE)
    assert values == {
        "MODEL_API_KEY": "sk-plain",
        "EXPORTED": "yes",
        "SPACED": "padded value",
        "COMMENTED": "value",
        "HASH": "value#not-a-comment",
        "SINGLE": "literal \\n # kept ' \\",
        "DOUBLE": 'line\nbreak "quoted" # kept',
        "QUOTED_COMMENT": "v",
        "EMPTY": "",
        "EMPTY_QUOTES": "",
        "EQUALS": "a=b=c",
        "INDENTED": "ok",
        "CRLF": "windows",
    }


def test_the_same_values_as_python_dotenv():
    dotenv = pytest.importorskip("dotenv")
    import io

    theirs = dotenv.dotenv_values(stream=io.StringIO(SAMPLE), interpolate=False)
    assert envfile.parse(SAMPLE) == {k: v for k, v in theirs.items() if v is not None}


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("sk-live-secret value", ".env:2: expected KEY=value (the line is not shown: it may hold a secret)"),
        ('KEY="sk-live-secret', ".env:2: KEY: the value's \" quote is not closed on its line"),
        ("KEY='sk-live-secret' trailing", ".env:2: KEY: text after the closing ' quote"),
    ],
)
def test_a_line_it_cannot_read_is_named_by_number_never_by_value(line, problem):
    with pytest.raises(UserError) as err:
        envfile.parse(f"# first\n{line}\n")
    assert str(err.value) == problem and "sk-live-secret" not in str(err.value)


def test_the_real_environment_wins(tmp_path):
    path = tmp_path / ".env"
    path.write_text("MODEL_API_KEY=from-file\nOTHER=also-from-file\n")
    environ = {"MODEL_API_KEY": "from-environment"}
    assert envfile.load(path, environ) == ["OTHER"]
    assert environ == {"MODEL_API_KEY": "from-environment", "OTHER": "also-from-file"}
    assert envfile.load(tmp_path / "missing.env", environ) == []


def test_a_dotenv_that_is_not_utf8_is_one_line(tmp_path):
    path = tmp_path / ".env"
    path.write_bytes(b"A=1\nB=caf\xe9\n")
    with pytest.raises(UserError, match=r"\.env:2: not valid UTF-8"):
        envfile.load(path, {})
