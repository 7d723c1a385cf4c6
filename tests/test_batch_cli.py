"""``visionkit batch submit|status|results`` against the offline stand-in's Batch API."""

from __future__ import annotations

import pandas as pd
from image_factory import photo, save

from visionkit import offline
from visionkit.cli import main


def test_submit_status_and_results_from_the_command_line(tmp_path, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(5):
        save(photo(300 + 20 * i, 200, seed=i), folder / f"{i}.jpg")
    (folder / "broken.jpg").write_text("not an image")
    cache = str(tmp_path / "cache" / "answers.sqlite")
    with offline.serve(upload_interval=0) as url:
        common = ["--provider", "offline", "--base-url", url, "--cache", cache, "--no-progress"]
        assert main(["batch", "submit", str(folder), "Describe.", "--dry-run", *common]) == 0
        err = capsys.readouterr().err
        assert "dry run: 5 requests in 1 file(s)" in err and "1 would fail" in err
        argv = ["batch", "submit", str(folder), "Describe.", "--max-requests-per-file", "2"]
        assert main([*argv, "--upload-interval", "0", *common]) == 0
        job_id = capsys.readouterr().out.strip()
        assert job_id.startswith("job-")
        assert main(["batch", "status", *common]) == 0
        assert job_id in capsys.readouterr().out
        out = tmp_path / "answers.csv"
        assert main(["batch", "results", job_id, "--out", str(out), "--wait", *common]) == 1
        status_out = capsys.readouterr()
        assert "5 answered by the job" in status_out.err and "1 without an answer" in status_out.err
        table = pd.read_csv(out)
        assert len(table) == 6 and table.path.str.endswith(".jpg").sum() == 6
        assert table.answer.notna().sum() == 5
        assert main(["batch", "status", job_id, *common]) == 0
        shown = capsys.readouterr().out
        assert f"{job_id}: completed" in shown and shown.count("collected") == 3
        assert url.server.stats.batch_lines_answered == 5
    assert main(["batch", "results", "job-nope", "--out", str(out), *common]) == 1
    assert "no batch job 'job-nope'" in capsys.readouterr().err
