"""The "Notebooks in CI" recipe end to end (issue 11): a notebook recorded against a live
provider -- the offline stand-in under another name -- then replayed under nbval with the
provider gone and no key, its outputs compared with the recorded ones."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from visionkit import offline
from visionkit.query.replay_lines import record_checksum

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "tests" / "replay" / "sample.ipynb"
SECRET = "sk-acme-live-key-0123456789"


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.endswith("_API_KEY") and not k.startswith(("VISIONKIT_RE", "ACME_"))
    }
    env.update(
        PYTHONPATH=str(ROOT),
        SAMPLE_IMAGES=str(ROOT / "datasets" / "images"),
        VISIONKIT_CACHE_DIR=str(tmp_path / "cache"),
        **extra,
    )
    return env


def _replay(tmp_path: Path, notebook: Path, answers: Path) -> subprocess.CompletedProcess[str]:
    """The CI command: ``VISIONKIT_REPLAY=answers/ pytest --nbval notebook.ipynb``."""
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "--nbval",
            "--nbval-current-env",
            "-q",
            str(notebook),
        ],
        cwd=tmp_path,
        env=_env(tmp_path, VISIONKIT_REPLAY=str(answers), CI="1"),
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_record_then_replay_under_nbval_with_the_provider_gone(tmp_path):
    notebook = tmp_path / "analysis.ipynb"
    shutil.copy(SAMPLE, notebook)
    answers = tmp_path / "answers"
    with offline.serve(api_key=SECRET) as url:
        # Recording: the provider is reachable and the key is set.
        record = subprocess.run(
            [
                sys.executable,
                "-m",
                "jupyter",
                "nbconvert",
                "--to",
                "notebook",
                "--execute",
                "--inplace",
                str(notebook),
            ],
            cwd=tmp_path,
            env=_env(
                tmp_path, VISIONKIT_RECORD=str(answers), ACME_BASE_URL=url, ACME_API_KEY=SECRET
            ),
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert record.returncode == 0, record.stderr[-3000:]
        stats = url.server.stats
    assert stats.chat_requests == 4  # the second ask in the notebook was answered from cache
    assert (stats.uploads, stats.batch_lines_answered) == (1, 4)  # the batch job's

    # The store: small, sorted, answers and usage; never the key, never the images.
    store = (answers / "answers.jsonl").read_text()
    records = [json.loads(line) for line in store.splitlines()]
    assert len(records) == 8 and [r["key"] for r in records] == sorted(r["key"] for r in records)
    assert {r["provider"] for r in records} == {"acme-vision"}
    assert all(r["answer"] and r["prompt_tokens"] > 1600 for r in records)
    assert sum("batch_id" in r for r in records) == 4  # the job's answers, with their batch
    assert SECRET not in store and "base64" not in store and len(store) < 16_000
    assert sorted(p.name for p in answers.iterdir()) == ["answers.jsonl"]
    assert SECRET not in notebook.read_text()

    # Replaying: the server is gone, no key, CI=1 (strict): nbval compares every output.
    replay = _replay(tmp_path, notebook, answers)
    assert replay.returncode == 0, replay.stdout[-3000:] + replay.stderr[-2000:]
    assert "passed" in replay.stdout

    # The comparison is real: a changed answer in the store (with its checksum made again, so
    # the line is used) fails the replay...
    records[0]["answer"] = "A different answer than the one the notebook shows."
    records[0]["checksum"] = record_checksum(records[0])
    (answers / "answers.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    changed = _replay(tmp_path, notebook, answers)
    assert changed.returncode != 0 and "different answer" in changed.stdout
    # ...and a request never recorded stops a strict (CI) replay with how to record it.
    (answers / "answers.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records[1:]))
    missing = _replay(tmp_path, notebook, answers)
    assert missing.returncode != 0
    assert "ReplayError" in missing.stdout and "VISIONKIT_RECORD" in missing.stdout
