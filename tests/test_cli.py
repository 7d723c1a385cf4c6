"""The ``visionkit`` command line, run in-process through ``main`` and once as ``python -m``."""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from visionkit import costs
from visionkit.cli import app as cli
from visionkit.tokens import inference_net_tokens, openai_tokens

ROOT = Path(__file__).resolve().parents[1]

SIZES = {"small.png": (300, 200), "mid.jpg": (840, 560), "sub/big.webp": (2000, 1500)}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    formats = {".png": "PNG", ".jpg": "JPEG", ".webp": "WEBP"}
    for name, size in SIZES.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size, (40, 120, 200)).save(path, formats[path.suffix])
    (root / "notes.png").write_bytes(b"this is not a png")
    return root


def _rows(out: str) -> dict[str, str]:
    """Table lines keyed by their first column (the path)."""
    return {line.split()[0]: line for line in out.splitlines() if line and " " in line}


def test_estimate_prints_each_image_relative_with_tokens_and_totals(folder, capsys):
    assert cli.main(["estimate", str(folder)]) == 0
    out = capsys.readouterr().out
    rows = _rows(out)
    assert set(SIZES) <= set(rows)  # paths relative to the folder, subfolders included
    assert str(folder) not in out
    for name, (w, h) in SIZES.items():
        line = rows[name]
        assert f" {w} " in line and f" {h} " in line
        assert f"{inference_net_tokens(w, h):,}" in line
    assert "png" in rows["small.png"] and "webp" in rows["sub/big.webp"]
    assert "notes.png" in rows and rows["notes.png"].split()[1:] != []  # error row, not a crash
    total = sum(inference_net_tokens(w, h) for w, h in SIZES.values())
    assert f"3 images, {total:,} tokens (1 without a known size)" in out
    saved = total - 3 * 1601
    assert f"would save {saved:,} (" in out


def test_estimate_with_another_provider_and_quiet(folder, capsys):
    assert cli.main(["estimate", str(folder), "--provider", "openai", "-q"]) == 0
    out = capsys.readouterr().out
    total = sum(openai_tokens(w, h) for w, h in SIZES.values())
    assert out.startswith(f"openai: 3 images, {total:,} tokens")
    assert "small.png" not in out


def test_estimate_writes_plot_and_csv_creating_folders(folder, tmp_path, capsys):
    plot = tmp_path / "out" / "deep" / "tokens.png"
    table = tmp_path / "out" / "tokens.csv"
    code = cli.main(["estimate", str(folder), "--plot", str(plot), "--csv", str(table)])
    assert code == 0
    with Image.open(plot) as im:
        assert im.format == "PNG" and im.width > 600
    with table.open() as f:  # paths as read_images gives them (joinable with ask --out)
        rows = {Path(r["path"]).relative_to(folder).as_posix(): r for r in csv.DictReader(f)}
    assert rows["mid.jpg"]["tokens"] == str(inference_net_tokens(840, 560))
    assert rows["notes.png"]["tokens"] == "" and rows["notes.png"]["error"]
    assert list(next(iter(rows.values()))) == [
        "path",
        "format",
        "width",
        "height",
        "tokens",
        "error",
    ]
    out = capsys.readouterr().out
    assert f"wrote {plot}" in out and f"wrote {table}" in out


def test_estimate_resize_to_prices_a_chosen_side(folder, capsys):
    cli.main(["estimate", str(folder), "-q", "--resize-to", "840"])
    out = capsys.readouterr().out
    sizes = pd.DataFrame(list(SIZES.values()), columns=["width", "height"])
    summary = costs.token_summary(sizes, resize_to=840)
    assert f"downscaling to 840 px would save {summary.saved:,}" in out


def test_estimate_with_nothing_usable_exits_1(tmp_path, capsys):
    (tmp_path / "x.png").write_bytes(b"")
    assert cli.main(["estimate", str(tmp_path)]) == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["estimate", str(empty)]) == 1
    assert "no images found" in capsys.readouterr().out


def test_user_errors_are_one_line_not_a_traceback(folder, capsys):
    assert cli.main(["estimate", str(folder), "--provider", "nope"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("visionkit estimate: error: unknown provider 'nope'")
    assert "Traceback" not in err


def test_parser_has_a_subcommand_per_add_function():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert next(iter(sub.choices)) == "estimate"
    assert len(sub.choices) == len(cli.COMMANDS)
    with pytest.raises(SystemExit) as exc:
        cli.main([])  # a subcommand is required
    assert exc.value.code == 2


def test_python_dash_m_visionkit_runs_the_same_cli(folder, tmp_path):
    plot = tmp_path / "o" / "t.png"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"}
    done = subprocess.run(
        [sys.executable, "-m", "visionkit", "estimate", str(folder), "--plot", str(plot)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "mid.jpg" in done.stdout and plot.exists()
    version = subprocess.run(
        [sys.executable, "-m", "visionkit", "--version"], capture_output=True, text=True, env=env
    )
    assert version.stdout.strip().startswith("visionkit ")


def test_estimate_csv_and_ask_out_join_on_path(folder, tmp_path):
    """Their paths differed (folder-relative vs as given), so the two files could not be joined."""
    tokens, answers = tmp_path / "tokens.csv", tmp_path / "plan.csv"
    assert cli.main(["estimate", str(folder), "-q", "--csv", str(tokens)]) == 0
    argv = ["ask", str(folder), "Describe.", "--out", str(answers), "--dry-run", "--no-progress"]
    cli.main([*argv, "--cache", str(tmp_path / "c.sqlite")])
    joined = pd.read_csv(tokens).merge(pd.read_csv(answers), on="path", how="outer")
    assert len(joined) == 4 and joined["tokens"].notna().sum() == 3
    assert joined["estimated_tokens"].notna().sum() == 3  # the same three images, one row each


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--out", "answers.txt"], "use a .csv, .parquet or .jsonl"),
        (["--out", "a.csv", "--concurrency", "0"], "--concurrency must be at least 1"),
        (["--out", "a.csv", "--schema", "missing.json"], "--schema 'missing.json'"),
        (["--out", "a.csv", "--cache", "c.sqlite", "--no-cache"], "either --cache"),
    ],
)
def test_ask_checks_every_argument_before_sending_anything(
    folder, tmp_path, extra, message, capsys, monkeypatch
):
    """A wrong --out suffix was found after every request had been sent and paid (issue 8)."""
    from visionkit import offline

    monkeypatch.chdir(tmp_path)
    with offline.serve() as url:
        argv = ["ask", str(folder), "Describe.", "--provider", "offline", "--base-url", url]
        assert cli.main([*argv, "--no-progress", *extra]) == 1
        assert url.server.stats.requests == 0
    assert message in capsys.readouterr().err


def test_ask_without_a_key_says_the_command_lines_way(folder, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("INFERENCE_API_KEY", raising=False)
    out = tmp_path / "a.csv"
    code = cli.main(
        ["ask", str(folder), "Describe.", "--out", str(out), "--provider", "inference.net"]
    )
    err = capsys.readouterr().err
    assert code == 1 and "export INFERENCE_API_KEY=" in err and "api_key=" not in err
    assert not out.exists()


def test_counts_are_singular_for_one(tmp_path, capsys):
    Image.new("RGB", (20, 20), "red").save(tmp_path / "one.png")
    out = tmp_path / "a.csv"
    argv = ["ask", str(tmp_path / "one.png"), "Describe.", "--out", str(out), "--dry-run"]
    cli.main([*argv, "--no-progress", "--cache", str(tmp_path / "c.sqlite")])
    err = capsys.readouterr().err
    assert "1 request to send" in err and "1 requests" not in err


def test_a_missing_folder_is_an_error_not_zero_images(tmp_path, capsys):
    """`visionkit estimate nosuch/` printed "0 images" (issue 8, item 10)."""
    assert cli.main(["estimate", str(tmp_path / "nosuch")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("visionkit estimate: error:") and "nosuch" in err
    assert "Traceback" not in err


def test_an_empty_glob_warns_in_one_plain_line(tmp_path, capsys):
    assert cli.main(["estimate", str(tmp_path / "*.jpg")]) == 1
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line]
    assert lines == [f"visionkit estimate: warning: read_images: no files match '{tmp_path}/*.jpg'"]
    assert "no images found" in captured.out
