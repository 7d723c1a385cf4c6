"""A tampered or damaged recording is never replayed silently (issue 18, item 17): each line of
``answers.jsonl`` carries a checksum; a line that fails it is not used, two different lines for
one request are neither used, and an older store without checksums replays, saying so. Recorded
against the offline stand-in over real HTTP through the real openai SDK."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from image_factory import photo, save

import visionkit as vk
from visionkit import offline
from visionkit.query.replay_lines import record_checksum

MODEL = offline.DEFAULT_MODEL
PROMPT = "Describe this image."


@pytest.fixture
def server(monkeypatch) -> Iterator[offline.OfflineServer]:
    for name in ("CI", "VISIONKIT_RECORD", "VISIONKIT_REPLAY"):
        monkeypatch.delenv(name, raising=False)
    with offline.OfflineServer(upload_interval=0) as srv:
        yield srv


@pytest.fixture
def frame(tmp_path) -> pd.DataFrame:
    paths = [save(photo(100 + 24 * i, 80, seed=i), tmp_path / f"p{i}.jpg") for i in range(3)]
    return pd.DataFrame({"path": [str(p) for p in paths]}, index=["a", "b", "c"])


def record(server, frame, answers: Path, cache: Path) -> pd.DataFrame:
    recorder = vk.connect(
        base_url=server.base_url, api_key=server.api_key, model=MODEL, record=answers
    )
    result = frame.vision.ask(PROMPT, client=recorder, cache=cache, progress=False)
    assert result.error.isna().all()
    return result


def lines_of(answers: Path) -> list[str]:
    return (answers / "answers.jsonl").read_text().splitlines()


def write_lines(answers: Path, lines: list[str]) -> None:
    (answers / "answers.jsonl").write_text("".join(line + "\n" for line in lines))


def row_of(frame: pd.DataFrame, record: dict) -> str:
    """The frame's row a record answers (by its image's sha256)."""
    import hashlib

    digests = {hashlib.sha256(Path(p).read_bytes()).hexdigest(): i for i, p in frame.path.items()}
    return digests[record["images"][0]]


def replay(answers: Path, frame: pd.DataFrame, *, batch: bool = False, strict: bool = False):
    """Connect (here: the line a ReplayWarning must name) and replay; returns the result and
    the ReplayWarnings said."""
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        player = vk.connect(replay=answers, strict=strict)
        if batch:
            result = frame.vision.submit(PROMPT, client=player, progress=False).result()
        else:
            result = frame.vision.ask(PROMPT, client=player, progress=False)
    return result, [w for w in said if issubclass(w.category, vk.ReplayWarning)]


@pytest.mark.parametrize("batch", [False, True], ids=["ask", "batch"])
@pytest.mark.parametrize("damage", ["a changed letter", "a byte that is not UTF-8"])
def test_a_flipped_byte_in_an_answer_is_not_replayed(server, frame, tmp_path, damage, batch):
    answers = tmp_path / "answers"
    recorded = record(server, frame, answers, tmp_path / "c.sqlite")
    lines = lines_of(answers)
    target = json.loads(lines[1])
    row = row_of(frame, target)
    at = lines[1].index('"answer": "') + len('"answer": "') + 5
    raw = bytearray((answers / "answers.jsonl").read_bytes())
    start = sum(len(line.encode()) + 1 for line in lines[:1]) + len(lines[1][:at].encode())
    raw[start] = ord("Q") if damage == "a changed letter" else 0xFF
    (answers / "answers.jsonl").write_bytes(bytes(raw))

    result, said = replay(answers, frame, batch=batch)
    # the other rows replay; the damaged one is not answered, and says why
    others = [r for r in frame.index if r != row]
    assert list(result.loc[others, "answer"]) == list(recorded.loc[others, "answer"])
    assert pd.isna(result.loc[row, "answer"])
    error = result.loc[row, "error"]
    assert error.startswith("ReplayError") and "see the ReplayWarning" in error
    if damage == "a changed letter":
        assert "line 2 failed its checksum" in result.loc[row, "error"]
    # one warning, at the user's line, naming the file, the line and what to do
    [warning] = said
    assert warning.filename == __file__
    text = str(warning.message)
    assert str(answers / "answers.jsonl") in text and "line 2 " in text
    assert "VISIONKIT_RECORD=" in text and "git diff" in text
    # strict (CI): the run stops, naming the row and pointing at the warning
    with pytest.raises(vk.ReplayError, match=rf"'{row}'.*ReplayWarning|ReplayWarning.*'{row}'"):
        replay(answers, frame, batch=batch, strict=True)
    assert server.stats.chat_requests == 3  # nothing was sent by any replay


@pytest.mark.parametrize("how", ["without a checksum", "with its checksum made again", "as copied"])
def test_an_appended_line_for_another_model_never_wins(server, frame, tmp_path, how):
    answers, cache = tmp_path / "answers", tmp_path / "c.sqlite"
    recorded = record(server, frame, answers, cache)
    lines = lines_of(answers)
    forged = json.loads(lines[0])
    row = row_of(frame, forged)
    forged.update(model="some-other-model", answer="An answer the notebook never showed.")
    if how == "without a checksum":
        del forged["checksum"]
    elif how == "with its checksum made again":
        forged["checksum"] = record_checksum(forged)
    write_lines(answers, [*lines, json.dumps(forged)])

    result, said = replay(answers, frame)
    assert "never showed" not in result.answer.fillna("").str.cat()
    [warning] = said
    assert warning.filename == __file__
    if how == "as copied":  # the copy's checksum no longer fits: that line alone is dropped
        assert result.loc[row, "answer"] == recorded.loc[row, "answer"]
        assert "line 4 failed" in str(warning.message)
    else:  # two lines that both check out: neither is used
        assert pd.isna(result.loc[row, "answer"])
        assert "lines 1, 4 hold different answers" in result.loc[row, "error"]
        assert "lines 1, 4 hold different answers for one request" in str(warning.message)

    # Recording again settles it: the answer comes from the cache (nothing is bought), and
    # the rewritten store holds the line that run used, once.
    with pytest.warns(vk.ReplayWarning, match="rewritten"):
        record(server, frame, answers, cache)
    assert server.stats.chat_requests == 3
    assert len(lines_of(answers)) == 3 and "never showed" not in "".join(lines_of(answers))
    again, said = replay(answers, frame)
    assert not said and list(again.answer) == list(recorded.answer)


def test_an_older_recording_without_checksums_replays_and_says_so(server, frame, tmp_path):
    answers = tmp_path / "answers"
    recorded = record(server, frame, answers, tmp_path / "c.sqlite")
    older = [json.loads(line) for line in lines_of(answers)]
    for record_ in older:
        del record_["checksum"]
    write_lines(answers, [json.dumps(r) for r in older])

    result, said = replay(answers, frame)
    assert list(result.answer) == list(recorded.answer) and result.error.isna().all()
    [warning] = said
    assert warning.filename == __file__
    assert "3 answers have no checksum" in str(warning.message)
    assert "older visionkit" in str(warning.message)

    # Recording over it once (no cache: the answers come from the store, nothing is bought)
    # adds the checksums; the next replay has nothing to say.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", vk.ReplayWarning)
        recorder = vk.connect(
            base_url=server.base_url, api_key=server.api_key, model=MODEL, record=answers
        )
        frame.vision.ask(PROMPT, client=recorder, cache=False, progress=False)
    assert server.stats.chat_requests == 3
    assert all("checksum" in json.loads(line) for line in lines_of(answers))
    again, said = replay(answers, frame)
    assert not said and list(again.answer) == list(recorded.answer)
