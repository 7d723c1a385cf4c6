"""Annotator: keys, buttons and methods write df[column] and the save file at once; resume."""

from __future__ import annotations

import io
import os

import pandas as pd
import pytest
from PIL import Image
from widget_images import image_frame

import visionkit as vk
from visionkit.widgets.annotator import Annotator

OPTIONS = ["cat", "dog", "bird"]


@pytest.fixture
def df(tmp_path):
    return image_frame(tmp_path / "imgs", n=12)


def key(ann: Annotator, k: str) -> None:
    """Deliver a key press the way the front end does: a custom message to the view."""
    ann.view._handle_custom_msg({"type": "key", "key": k}, [])


def read(path) -> pd.DataFrame:
    if str(path).endswith(".csv"):
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    return pd.read_parquet(path).fillna("")


def saved_labels(path, column="label", annotator="") -> list[str]:
    """The file's labels of rows r0..r11 for one annotator, "" where it has none."""
    frame = read(path)
    mine = frame[frame["annotator"] == annotator].set_index("index")[column]
    return [mine.get(f"r{i}", "") for i in range(12)]


def test_importable_from_visionkit():
    assert vk.Annotator is Annotator


def test_keys_buttons_and_methods_label_in_place(df):
    ann = vk.Annotator(df, label_column="label", labels=OPTIONS)
    assert "label" in df.columns and df["label"].isna().all()
    assert ann.position == 0 and ann.current == "r0"
    key(ann, "1")
    ann.label_buttons["dog"].click()
    ann.label("bird")
    assert df["label"].tolist()[:3] == ["cat", "dog", "bird"]
    assert ann.position == 3
    assert ann.view.progress.startswith("3 / 12 labelled")
    # The large image of the current row is on the view, as bytes.
    im = Image.open(io.BytesIO(ann.view.image))
    assert im.size[0] > 100 and ann.view.mime.startswith("image/")
    assert ann.view.title.startswith("r3 · ") and ann.view.title.endswith("img003.png")


def test_navigation_keys_and_buttons(df):
    ann = vk.Annotator(df, label_column="label", labels=OPTIONS)
    key(ann, "ArrowRight")
    ann.nav_buttons["next"].click()
    assert ann.position == 2
    key(ann, "ArrowLeft")
    assert ann.position == 1
    ann.nav_buttons["previous"].click()
    ann.previous()  # at the start: stays
    assert ann.position == 0
    ann.position = 10
    ann.next()
    ann.next()  # at the end: stays, says so
    assert ann.position == 11 and "end of the rows" in ann.view.message
    with pytest.raises(IndexError):
        ann.position = 99


def test_skip_goes_to_the_next_unlabelled_row(df):
    df["label"] = [None, "cat", "dog", None, None, *[None] * 7]
    ann = vk.Annotator(df, label_column="label", labels=OPTIONS)
    assert ann.position == 0  # the first unlabelled row
    key(ann, "s")
    assert ann.position == 3
    ann.nav_buttons["skip"].click()
    assert ann.position == 4
    assert df["label"].tolist()[1:3] == ["cat", "dog"] and df["label"].iloc[[0, 3, 4]].isna().all()


def test_undo_restores_the_value_and_the_row(df, tmp_path):
    save = tmp_path / "labels.csv"
    ann = vk.Annotator(df, label_column="label", labels=OPTIONS, save=save)
    key(ann, "1")
    key(ann, "2")
    key(ann, "Backspace")
    assert ann.position == 1 and pd.isna(df["label"].iloc[1]) and df["label"].iloc[0] == "cat"
    assert saved_labels(save)[:2] == ["cat", ""]
    ann.nav_buttons["undo"].click()
    assert ann.position == 0 and pd.isna(df["label"].iloc[0])
    ann.undo()  # nothing left: says so, no error
    assert "nothing to undo" in ann.view.message
    # Relabelling a row and undoing brings the old label back.
    ann.label("cat")
    ann.previous()
    ann.label("bird")
    ann.undo()
    assert df["label"].iloc[0] == "cat"


@pytest.mark.parametrize("name", ["labels.csv", "labels.parquet"])
def test_every_change_is_saved_and_a_new_annotator_resumes(df, tmp_path, name):
    save = tmp_path / "out" / name
    ann = vk.Annotator(df, label_column="label", labels=OPTIONS, save=save)
    for k in ["1", "2", "3", "1"]:
        key(ann, k)
        # written after every change
        assert saved_labels(save) == [v or "" for v in df["label"].tolist()]
    saved = read(save)
    assert list(saved.columns) == ["index", "path", "annotator", "label", "label_at"]
    assert saved["index"].tolist() == list(df.index[:4])
    assert saved["path"].tolist() == df["path"].tolist()[:4]
    assert saved["label_at"].str.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ").all()
    assert not [f for f in os.listdir(save.parent) if f != name]  # no temp files left
    # A fresh DataFrame of the same images: labels come back, position is the first unlabelled.
    fresh = image_frame(tmp_path / "imgs", n=12)
    again = vk.Annotator(fresh, label_column="label", labels=OPTIONS, save=save)
    assert fresh["label"].tolist()[:5] == ["cat", "dog", "bird", "cat", None]
    assert again.position == 4 and again.restored == 4
    assert "4 labels restored" in again.view.message
    key(again, "2")
    assert saved_labels(save)[:5] == ["cat", "dog", "bird", "cat", "dog"]


def test_resume_skips_a_gap_and_keeps_rows_it_does_not_have(df, tmp_path):
    save = tmp_path / "labels.csv"
    ann = vk.Annotator(df, label_column="label", labels=OPTIONS, save=save)
    ann.label("cat")
    ann.next()
    ann.label("dog")  # row 0 and 2 labelled, row 1 not
    # Reloading only some of the images: the others' labels stay in the file.
    part = image_frame(tmp_path / "imgs", n=12).iloc[1:6].copy()
    again = vk.Annotator(part, label_column="label", labels=OPTIONS, save=save)
    assert again.current == "r1"  # first unlabelled
    again.label("bird")
    assert saved_labels(save)[:3] == ["cat", "bird", "dog"]
    assert len(read(save)) == 3


def test_resume_matches_index_and_path(df, tmp_path):
    save = tmp_path / "labels.csv"
    vk.Annotator(df, label_column="label", labels=OPTIONS, save=save).label("cat")
    # Same index labels, different files: not the same rows.
    other = image_frame(tmp_path / "other", n=12)
    vk.Annotator(other, label_column="label", labels=OPTIONS, save=save)
    assert other["label"].isna().all()


def test_save_file_errors(df, tmp_path):
    with pytest.raises(ValueError, match=r"\.csv or \.parquet"):
        vk.Annotator(df, label_column="label", labels=OPTIONS, save=tmp_path / "labels.txt")
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not a visionkit save file"):
        vk.Annotator(df, label_column="label", labels=OPTIONS, save=wrong)


def test_a_failed_save_is_shown_and_keeps_the_label(df, tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("")
    ann = vk.Annotator(
        df, label_column="label", labels=OPTIONS, save=blocked / "labels.csv"
    )  # parent is a file
    key(ann, "1")
    assert df["label"].iloc[0] == "cat"
    assert ann.view.message_kind == "error" and "saving failed" in ann.view.message
    with pytest.raises(OSError, match="saving failed"):
        ann.label("dog")


def test_invalid_labels_are_refused(df):
    ann = vk.Annotator(df, label_column="label", labels=OPTIONS)
    with pytest.raises(ValueError, match="not one of the labels"):
        ann.label("horse")
    with pytest.raises(ValueError, match="blank"):
        vk.Annotator(df, label_column="other", text=True).label("  ")
    key(ann, "9")  # no ninth option: ignored
    key(ann, "q")  # not a shortcut: ignored
    assert df["label"].isna().all() and ann.position == 0
    with pytest.raises(ValueError, match="labels"):
        vk.Annotator(df, label_column="label")
    with pytest.raises(ValueError, match="overwrite"):
        vk.Annotator(df, label_column="path", labels=OPTIONS)


def test_free_text(df, tmp_path):
    save = tmp_path / "notes.parquet"
    ann = vk.Annotator(df, label_column="note", text=True, save=save)
    ann.view._handle_custom_msg({"type": "text", "value": "  a red square, slightly blurred "}, [])
    ann.label('with "quotes", commas\nand a newline')
    assert df["note"].tolist()[:2] == [
        "a red square, slightly blurred",
        'with "quotes", commas\nand a newline',
    ]
    assert ann.view.text_mode and ann.position == 2
    assert saved_labels(save, "note")[:2] == df["note"].tolist()[:2]
    # CSV keeps the same text too; labels already in the column go into a new file with it.
    csv = tmp_path / "notes.csv"
    vk.Annotator(df, label_column="note", text=True, save=csv).label("third")
    assert saved_labels(csv, "note")[:3] == df["note"].tolist()[:3]


@pytest.mark.parametrize("name", ["multi.csv", "multi.parquet"])
def test_multi_labels_round_trip(df, tmp_path, name):
    save = tmp_path / name
    ann = vk.Annotator(df, label_column="tags", labels=OPTIONS, multi=True, save=save)
    key(ann, "3")
    key(ann, "1")  # toggles: stays on the row
    assert ann.position == 0 and df["tags"].iloc[0] == "cat;bird"  # in the order of labels
    assert ann.label_buttons["cat"].button_style == "info"
    assert ann.label_buttons["dog"].button_style == ""
    ann.label_buttons["bird"].click()  # toggle off
    assert df["tags"].iloc[0] == "cat"
    key(ann, "ArrowRight")
    ann.label(["dog", "cat"])  # scripts set the whole list and move on
    ann.label("bird;dog")
    assert df["tags"].tolist()[:3] == ["cat", "cat;dog", "dog;bird"]
    fresh = image_frame(tmp_path / "imgs", n=12)
    vk.Annotator(fresh, label_column="tags", labels=OPTIONS, multi=True, save=save)
    assert fresh["tags"].tolist()[:3] == ["cat", "cat;dog", "dog;bird"]
    assert fresh["tags"].iloc[1].split(";") == ["cat", "dog"]
    with pytest.raises(ValueError, match="toggle"):
        vk.Annotator(df, label_column="one", labels=OPTIONS).toggle("cat")


def test_suggestions_shown_and_accepted(df):
    ann = vk.Annotator(df, label_column="label", labels=OPTIONS, suggestions="answer")
    assert ann.view.suggestion == "Cat.  →  cat"
    assert "a" in ann.view.shortcuts and "Enter" in ann.view.shortcuts
    key(ann, "a")  # "Cat." -> cat
    key(ann, "Enter")  # "a dog" -> dog
    ann.nav_buttons["accept"].click()  # "bird"
    assert df["label"].tolist()[:3] == ["cat", "dog", "bird"]
    df.loc["r3", "answer"] = "a cat or a dog"  # names two labels: not accepted
    key(ann, "a")
    assert ann.position == 3 and pd.isna(df["label"].iloc[3])
    assert ann.view.message_kind == "error" and "not one of" in ann.view.message
    df.loc["r4", "answer"] = None
    ann.position = 4
    assert ann.view.suggestion == ""
    with pytest.raises(ValueError, match="no model answer"):
        ann.accept()


def test_suggestions_with_free_text_take_the_answer_as_is(df):
    ann = vk.Annotator(df, label_column="caption", text=True, suggestions="answer")
    ann.accept()
    assert df["caption"].iloc[0] == "Cat."


def test_filters_unlabelled_and_disagree(df):
    df["label"] = ["cat", None, "bird", "cat", None, *[None] * 7]
    # answers: Cat., a dog, bird, Cat., a dog, bird, ...
    ann = vk.Annotator(
        df, label_column="label", labels=OPTIONS, suggestions="answer", filter="unlabelled"
    )
    assert ann.current == "r1"
    ann.label("dog")
    assert ann.current == "r4"  # walks only the rows that were unlabelled
    assert "(unlabelled)" in ann.view.progress and "row 2 of 9" in ann.view.progress
    df.loc["r0", "label"] = "dog"  # the model said Cat.
    ann.filter = "disagree"
    assert list(ann.rows.index) == ["r0"]  # r1 "a dog" = dog, r2, r3 agree
    assert ann.current == "r0"
    assert "disagree" in ann.view.progress
    ann.filter = df["width"] > 200  # any mask works too
    assert ann.current == "r9"
    ann.filter = "all"
    assert ann.current == "r4"  # first unlabelled
    with pytest.raises(ValueError, match="needs suggestions"):
        vk.Annotator(df, label_column="label", labels=OPTIONS, filter="disagree")


def test_disagree_counts_model_answers_naming_another_option(df):
    df["label"] = ["cat", "cat", "bird", *[None] * 9]
    ann = vk.Annotator(
        df, label_column="label", labels=OPTIONS, suggestions="answer", filter="disagree"
    )
    # r0: Cat. vs cat agree; r1: "a dog" vs cat disagree; r2: bird vs bird agree.
    assert [str(df.index[p]) for p in ann._order] == ["r1"]


def test_empty_filter(df):
    ann = vk.Annotator(df, label_column="label", labels=OPTIONS, filter="width < 0")
    assert ann.position is None and ann.view.title == "no rows match the filter"
    key(ann, "1")
    assert ann.view.message_kind == "error"


def test_existing_columns_of_other_dtypes(df, tmp_path):
    df["label"] = float("nan")  # e.g. an empty column read back from CSV
    vk.Annotator(df, label_column="label", labels=OPTIONS).label("dog")
    assert df["label"].iloc[0] == "dog"
    df["s"] = pd.Series(["cat", None] * 6, index=df.index, dtype="string")
    ann = vk.Annotator(df, label_column="s", labels=OPTIONS)
    assert ann.current == "r1"
    ann.label("bird")
    assert df["s"].iloc[1] == "bird"


def test_broken_image_can_still_be_labelled(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    df = pd.DataFrame({"path": [str(bad)]})
    ann = vk.Annotator(df, label_column="label", labels=["broken", "fine"])
    assert ann.view.image == b"" and ann.view.image_error
    ann.label("broken")
    assert df["label"].iloc[0] == "broken" and ann.done


def test_repr_is_cheap(df):
    assert "0 / 12 labelled" in repr(vk.Annotator(df, label_column="label", labels=OPTIONS))


def test_df_vision_annotate(df):
    ann = df.vision.annotate(labels=OPTIONS)
    ann.label("dog")
    assert isinstance(ann, Annotator) and df["label"].iloc[0] == "dog"


def test_keys_can_be_rebound(df):
    ann = vk.Annotator(
        df,
        label_column="label",
        labels=OPTIONS,
        suggestions="answer",
        keys={"next": ["j", "ArrowRight"], "previous": "k", "accept": []},
    )
    key(ann, "j")
    key(ann, "ArrowRight")
    assert ann.position == 2
    key(ann, "k")
    assert ann.position == 1
    key(ann, "a")  # accept has no key any more
    key(ann, "ArrowLeft")  # nor previous its old one
    assert ann.position == 1 and df["label"].isna().all()
    assert "j / → next" in ann.view.key_help and "accept" not in ann.view.key_help
    assert "j" in ann.view.shortcuts and "a" not in ann.view.shortcuts
    assert ann.nav_buttons["next"].description == "next → [j]"
    with pytest.raises(ValueError, match="unknown action 'jump'"):
        vk.Annotator(df, label_column="label", labels=OPTIONS, keys={"jump": "x"})
    with pytest.raises(ValueError, match="bound to both"):
        vk.Annotator(df, label_column="label", labels=OPTIONS, keys={"next": "x", "skip": "x"})
    with pytest.raises(ValueError, match="pick labels"):
        vk.Annotator(df, label_column="label", labels=OPTIONS, keys={"next": "2"})


def test_a_digit_past_the_labels_can_do_an_action(df):
    # Three labels: "1"-"3" label, and "5" is free for an action (it was taken and ignored).
    ann = vk.Annotator(df, label_column="label", labels=OPTIONS, keys={"next": ["5", "ArrowRight"]})
    assert "5" in ann.view.shortcuts
    key(ann, "5")
    assert ann.position == 1 and df["label"].isna().all()
    key(ann, "4")  # bound to nothing: nothing happens
    assert ann.position == 1 and ann.view.message_kind == "info"


def test_messages_confirm_and_number_rows_like_the_progress_line(df):
    ann = vk.Annotator(
        df, label_column="label", labels=OPTIONS, filter="width > 150"
    )  # starts at r4
    assert ann.view.progress.startswith("0 / 12 labelled · row 1 of 8")
    key(ann, "2")
    assert ann.view.message == "row 1 (r4) labelled 'dog'"
    assert "row 2 of 8" in ann.view.progress
    key(ann, "Backspace")
    assert ann.view.message == "undone: row 1 (r4) is back to no label"
    assert "row 1 of 8" in ann.view.progress
    named = vk.Annotator(df, label_column="label", labels=OPTIONS, annotator="ana")
    assert named.view.progress.startswith("ana: ")
