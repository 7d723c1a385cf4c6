"""``visionkit ask PATH PROMPT --out FILE``: a batch from the shell, resumable via the cache."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tests.test_ask import make_images
from visionkit import offline
from visionkit.cli import app as cli


@pytest.fixture
def folder(tmp_path):
    make_images(tmp_path / "photos", 5)
    return tmp_path / "photos"


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
def test_ask_writes_results_and_resumes(folder, tmp_path, suffix, capsys):
    out = tmp_path / f"answers{suffix}"
    cache = tmp_path / "c.sqlite"
    with offline.serve() as url:
        argv = [
            "ask",
            str(folder),
            "Describe this image.",
            "--out",
            str(out),
            "--provider",
            "offline",
            "--base-url",
            url,
            "--cache",
            str(cache),
            "--concurrency",
            "3",
            "--no-progress",
        ]
        assert cli.main(argv) == 0
        assert url.server.stats.chat_requests == 5
        assert cli.main(argv) == 0  # the same command again: all from the cache
        assert url.server.stats.chat_requests == 5
    if suffix == ".csv":
        table = pd.read_csv(out)
    elif suffix == ".parquet":
        table = pd.read_parquet(out)
    else:
        table = pd.read_json(out, lines=True)
    assert len(table) == 5 and table["answer"].str.startswith(offline.PREFIX).all()
    assert table["cached"].all()
    assert {"path", "answer", "error", "prompt_tokens", "attempts"} <= set(table.columns)
    err = capsys.readouterr().err
    assert "5 answered" in err and "5 from the cache" in err


def test_ask_dry_run_needs_no_server(folder, tmp_path, capsys):
    out = tmp_path / "plan.jsonl"
    code = cli.main(
        [
            "ask",
            str(folder),
            "Describe.",
            "--out",
            str(out),
            "--dry-run",
            "--no-cache",
            "--no-progress",
        ]
    )
    assert code == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 5 and all(r["estimated_tokens"] == 1601 + 3 for r in rows)
    assert all(r["request_bytes"] > 0 for r in rows)
    assert "dry run: 5 requests" in capsys.readouterr().err


def test_ask_bad_out_extension_is_one_line_error(folder, tmp_path, capsys):
    code = cli.main(
        [
            "ask",
            str(folder),
            "Describe.",
            "--out",
            str(tmp_path / "x.xlsx"),
            "--dry-run",
            "--no-cache",
            "--no-progress",
        ]
    )
    assert code == 1
    assert "use a .csv, .parquet or .jsonl" in capsys.readouterr().err
