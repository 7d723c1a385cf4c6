"""The save file: long form, several annotators, merged sessions, the user's columns kept,
~ expanded, symlinks written through, the file's mode kept (issue 8 items 15-16, issue 13)."""

from __future__ import annotations

import os
import stat

import pandas as pd
import pytest
from widget_images import image_frame

import visionkit as vk

OPTIONS = ["cat", "dog", "bird"]


@pytest.fixture
def df(tmp_path):
    return image_frame(tmp_path / "imgs", n=6)


def test_extra_columns_and_rows_of_a_users_file_are_kept(df, tmp_path):
    # issue 8 item 15: a CSV of one's own with more columns (notes, reviewer)
    save = tmp_path / "own.csv"
    own = pd.DataFrame(
        {
            "index": ["r0", "r1", "zz"],
            "path": [df["path"].iloc[0], df["path"].iloc[1], "elsewhere.png"],
            "label": ["cat", "", "dog"],
            "notes": ["blurry", "check again", "not in this frame"],
            "reviewer": ["kim", "", "lee"],
        }
    )
    own.to_csv(save, index=False)
    ann = vk.Annotator(df, label_column="label", labels=OPTIONS, save=save)
    assert df["label"].iloc[0] == "cat" and ann.restored == 1
    ann.label("bird")  # r1
    back = pd.read_csv(save, dtype=str, keep_default_na=False).set_index("index")
    assert {"notes", "reviewer"} <= set(back.columns)
    assert back.loc["r0", "notes"] == "blurry" and back.loc["r0", "reviewer"] == "kim"
    assert back.loc["r1", "label"] == "bird" and back.loc["r1", "notes"] == "check again"
    assert back.loc["zz", "label"] == "dog" and back.loc["zz", "notes"] == "not in this frame"
    assert len(back) == 3


def test_tilde_is_expanded(df, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    ann = vk.Annotator(df, label_column="label", labels=OPTIONS, save="~/labels.csv")
    ann.label("cat")
    assert (tmp_path / "home" / "labels.csv").exists()
    assert ann.save_path == tmp_path / "home" / "labels.csv"
    assert not (tmp_path / "~").exists() and not os.path.exists("~")


def test_a_symlink_is_written_through_and_stays_a_link(df, tmp_path):
    real = tmp_path / "shared" / "labels.csv"
    real.parent.mkdir()
    link = tmp_path / "labels.csv"
    link.symlink_to(real)
    ann = vk.Annotator(df, label_column="label", labels=OPTIONS, save=link)
    ann.label("dog")
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert "dog" in real.read_text()
    assert [p.name for p in real.parent.iterdir()] == ["labels.csv"]  # no temp file left


def test_the_files_mode_is_kept_and_a_new_file_gets_the_umask(df, tmp_path):
    save = tmp_path / "labels.csv"
    old = os.umask(0o022)
    try:
        vk.Annotator(df, label_column="label", labels=OPTIONS, save=save).label("cat")
        assert stat.S_IMODE(save.stat().st_mode) == 0o644  # not mkstemp's 0600
        save.chmod(0o664)
        vk.Annotator(df, label_column="label", labels=OPTIONS, save=save).label("dog")
        assert stat.S_IMODE(save.stat().st_mode) == 0o664
        os.umask(0o077)
        other = tmp_path / "private.parquet"
        vk.Annotator(df, label_column="label", labels=OPTIONS, save=other).label("cat")
        assert stat.S_IMODE(other.stat().st_mode) == 0o600
    finally:
        os.umask(old)


@pytest.mark.parametrize("name", ["team.csv", "team.parquet"])
def test_two_annotators_share_one_file(df, tmp_path, name):
    save = tmp_path / name
    ana = vk.Annotator(df.copy(), label_column="label", labels=OPTIONS, save=save, annotator="ana")
    ben_df = df.copy()
    ben = vk.Annotator(ben_df, label_column="label", labels=OPTIONS, save=save, annotator="ben")
    ana.label("cat")  # r0
    ben.label("dog")  # r0: written while ana's session is open: both are kept
    ana.label("bird")  # r1
    long = vk.read_annotations(save)
    assert sorted(zip(long["index"], long["annotator"], long["label"], strict=True)) == [
        ("r0", "ana", "cat"),
        ("r0", "ben", "dog"),
        ("r1", "ana", "bird"),
    ]
    assert long["label_at"].notna().all()
    # A later session of ben sees only ben's labels in the column, the others beside them.
    again_df = df.copy()
    again = vk.Annotator(again_df, label_column="label", labels=OPTIONS, save=save, annotator="ben")
    assert again_df["label"].tolist()[:2] == ["dog", None]
    assert again.current == "r1" and again.view.others == "ana: bird"  # first unlabelled
    assert again.others(0) == {"ana": "cat"}
    wide = again.by_annotator()
    assert list(wide.columns) == ["ben", "ana"] and wide.loc["r1", "ana"] == "bird"
    assert pd.isna(wide.loc["r1", "ben"])
    r = vk.rater_agreement(wide)
    assert r.pairwise["n"].iloc[0] == 1  # only r0 has both
    # Blind: the others' labels are not shown.
    blind = vk.Annotator(
        df.copy(), label_column="label", labels=OPTIONS, save=save, annotator="cem", blind=True
    )
    blind.position = 0
    assert blind.view.others == ""
    with pytest.raises(ValueError, match="blind"):
        blind.order = "disagreement"


def test_sessions_of_the_same_file_merge_and_undo_is_saved(df, tmp_path):
    save = tmp_path / "team.csv"
    a = vk.Annotator(df.copy(), label_column="label", labels=OPTIONS, save=save, annotator="ana")
    b = vk.Annotator(df.copy(), label_column="label", labels=OPTIONS, save=save, annotator="ben")
    a.label("cat")
    b.label("dog")
    b.label("dog")
    a.undo()  # ana's r0 back to none; ben's two labels must survive ana's write
    long = vk.read_annotations(save)
    ben = long[long["annotator"] == "ben"]
    assert ben["label"].tolist() == ["dog", "dog"]
    assert long.loc[long["annotator"] == "ana", "label"].isna().all()


def test_read_annotations_merges_files_and_old_files(tmp_path):
    old = tmp_path / "old.csv"
    old.write_text("index,path,label\nr0,a.png,cat\nr1,b.png,\n")
    long = vk.read_annotations(old)
    assert list(long.columns) == ["index", "path", "annotator", "label"]
    assert long["annotator"].isna().all() and long["label"].tolist() == ["cat", None]
    newer = tmp_path / "new.csv"
    newer.write_text("index,path,annotator,label\nr0,a.png,,dog\nr2,c.png,ana,bird\n")
    merged = vk.read_annotations([old, newer])
    assert merged.set_index("index")["label"].to_dict() == {"r1": None, "r0": "dog", "r2": "bird"}


def test_order_by_disagreement(df, tmp_path):
    save = tmp_path / "team.csv"
    for name, labels in {
        "ana": ["cat", "cat", "dog", "bird", None, None],
        "ben": ["cat", "dog", "dog", "cat", None, None],
        "cem": ["cat", "bird", "dog", "cat", "dog", None],
    }.items():
        ann = vk.Annotator(
            df.copy(), label_column="label", labels=OPTIONS, save=save, annotator=name
        )
        for pos, label in enumerate(labels):
            if label:
                ann.position = pos
                ann.label(label)
    review = vk.Annotator(
        df.copy(), labels=OPTIONS, save=save, annotator="lead", order="disagreement"
    )
    # r1: cat/dog/bird (2/3 disagree), r3: bird/cat/cat (1/3), r0, r2 agree, r4 one label, r5 none
    assert list(review.rows.index) == ["r1", "r3", "r0", "r2", "r4", "r5"]
    assert review.current == "r1" and "by disagreement" in review.view.progress
    review.order = "index"
    assert list(review.rows.index)[:2] == ["r0", "r1"]
    with pytest.raises(ValueError, match="order must be one of"):
        review.order = "random"


def test_order_by_disagreement_with_the_model(df):
    df["label"] = ["cat", "dog", "bird", None, "cat", "cat"]
    # answers: Cat., a dog, bird, Cat., a dog, bird
    ann = vk.Annotator(
        df, label_column="label", labels=OPTIONS, suggestions="answer", order="disagreement"
    )
    assert list(ann.rows.index)[:2] == ["r4", "r5"]  # the model names another option
