"""`capture ship|fetch`: closed capture files reach object storage (here a local fsspec path) and come
back; open ones never travel, and a file leaves the volume only once it has arrived whole."""

import datetime as dt
import os
import threading

import pytest

from {{ cookiecutter.package }}.cli import main
from {{ cookiecutter.package }}.production.shipping import every, fetch, ship


def captures(root, files):
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_ship_moves_closed_files_and_leaves_open_ones(tmp_path):
    source = captures(
        tmp_path / "volume",
        {
            "2026-11-29/capture-a.jsonl": '{"kind": "answer"}\n',
            "2026-11-30/capture-b.jsonl": '{"kind": "feedback"}\n' * 3,
            "2026-11-30/capture-c.jsonl.open": '{"kind": "answer"}\n',
        },
    )
    store = tmp_path / "store"
    done = ship(source, str(store))
    assert (done.files, done.failed) == (2, 0)
    assert (store / "2026-11-30" / "capture-b.jsonl").read_text() == '{"kind": "feedback"}\n' * 3
    assert (store / "2026-11-29" / "capture-a.jsonl").is_file()
    assert not (store / "2026-11-30" / "capture-c.jsonl.open").exists()
    left = sorted(p.relative_to(source).as_posix() for p in source.rglob("*") if p.is_file())
    assert left == ["2026-11-30/capture-c.jsonl.open"]
    assert not list(store.rglob("*.part"))
    assert ship(source, str(store)).files == 0  # nothing left to ship


def test_a_target_that_refuses_keeps_the_files(tmp_path, capsys):
    source = captures(tmp_path / "volume", {"2026-11-30/capture-a.jsonl": "{}\n"})
    store = tmp_path / "store"
    store.write_text("a file where the store's folder should be: every upload fails, even as root")
    assert main(["capture", "ship", "--from", str(source), "--to", str(store)]) == 1
    assert (source / "2026-11-30" / "capture-a.jsonl").is_file(), "a file that did not arrive must stay"
    assert "1 failed" in capsys.readouterr().out


def test_fetch_downloads_what_is_missing_within_the_days_asked(tmp_path):
    store = captures(
        tmp_path / "store",
        {
            "2026-11-20/capture-old.jsonl": "{}\n",
            "2026-11-29/capture-a.jsonl": "{}\n",
            "2026-11-30/capture-b.jsonl": "{}\n{}\n",
            "2026-11-30/capture-c.jsonl.open": "{}\n",
        },
    )
    dest = tmp_path / "captures"
    got = fetch(str(store), dest, days=2, today=dt.date(2026, 11, 30))
    assert got.files == 2
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()) == [
        "2026-11-29/capture-a.jsonl",
        "2026-11-30/capture-b.jsonl",
    ]
    assert fetch(str(store), dest, days=2, today=dt.date(2026, 11, 30)).files == 0  # same names and sizes: kept
    assert fetch(str(store), dest).files == 1  # no window: the old day too


def test_every_makes_a_last_pass_after_stop():
    passes = []
    stop = threading.Event()

    def work():
        passes.append(stop.is_set())
        stop.set()  # the SIGTERM arrives during the first pass

    every(0.01, work, stop)
    assert passes == [False, True], "the files closed at shutdown must be shipped by one more pass"


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["fetch", "--from", "nosuchproto://bucket/x", "--to", "out"], "cannot open"),
        (["fetch", "--from", "{tmp}/missing", "--to", "out"], "nothing there"),
        (["fetch", "--from", "{tmp}", "--to", "out", "--days", "0"], "--days"),
        (["ship", "--from", "{tmp}", "--to", "{tmp}/s", "--every", "-1"], "--every"),
        (["ship", "--from", "{tmp}", "--to", ""], "CAPTURE_URL is not set"),
    ],
)
def test_bad_arguments_are_one_line(tmp_path, capsys, argv, says):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(["capture", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert says in err and len(err.splitlines()) == 1, err


def test_the_sidecar_idles_without_a_url_until_sigterm(tmp_path):
    """A native sidecar that exits at start keeps its pod from starting: with CAPTURE_URL empty it
    must wait quietly for SIGTERM, then exit 0."""
    import signal
    import subprocess
    import sys
    import time

    env = {**os.environ, "CAPTURE_URL": ""}
    argv = [sys.executable, "-m", "{{ cookiecutter.package }}", "capture", "ship", "--from", str(tmp_path), "--every", "60"]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    line = proc.stdout.readline()
    assert "CAPTURE_URL is empty" in line, line
    time.sleep(0.1)
    assert proc.poll() is None, "the sidecar exited without a SIGTERM"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
