"""BoxAnnotator: boxes from the mouse's messages, keys, undo, the save file, annotators,
suggestions; propose_boxes against the offline stand-in, mapping coordinates to full size."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from PIL import Image
from widget_images import image_frame

import visionkit as vk
from visionkit import offline
from visionkit.annotation.proposals import box_schema, boxes_from_answer
from visionkit.widgets.box_annotator import BoxAnnotator

LABELS = ["cat", "dog"]


@pytest.fixture
def df(tmp_path):
    return image_frame(tmp_path / "imgs", n=5)  # r0 is 120x80


def msg(ann: BoxAnnotator, **content) -> None:
    """A message from the front end, as the mouse or a key sends it."""
    ann.view._handle_custom_msg(content, [])


def draw(ann, x, y, w, h):
    msg(ann, type="draw", box={"x": x, "y": y, "w": w, "h": h})


def test_importable():
    assert vk.BoxAnnotator is BoxAnnotator


def test_draw_label_move_resize_delete_undo(df, tmp_path):
    save = tmp_path / "boxes.csv"
    ann = vk.BoxAnnotator(df, box_column="boxes", labels=LABELS, save=save)
    assert (ann.view.natural_width, ann.view.natural_height) == (120, 80)
    draw(ann, 10, 10, 30, 20)
    assert df["boxes"].iloc[0] == [{"label": "cat", "x": 10.0, "y": 10.0, "w": 30.0, "h": 20.0}]
    assert ann.view.selected == 0 and "added 'cat' box 1" in ann.view.message
    msg(ann, type="key", key="2")  # the selected box becomes a dog, and so will the next
    assert df["boxes"].iloc[0][0]["label"] == "dog" and ann.view.current_label == "dog"
    msg(ann, type="edit", index=0, box={"x": 50.26, "y": 10, "w": 30, "h": 20})  # moved
    assert df["boxes"].iloc[0][0]["x"] == 50.3
    draw(ann, 100, 70, 50, 50)  # runs off the image: clipped to it
    assert df["boxes"].iloc[0][1] == {"label": "dog", "x": 100.0, "y": 70.0, "w": 20.0, "h": 10.0}
    ann.view.selected = 0
    msg(ann, type="key", key="Delete")
    assert [b["x"] for b in df["boxes"].iloc[0]] == [100.0]
    msg(ann, type="key", key="Backspace")  # undo the delete
    assert [b["x"] for b in df["boxes"].iloc[0]] == [50.3, 100.0]
    saved = pd.read_csv(save, dtype=str)
    assert json.loads(saved["boxes"].iloc[0]) == df["boxes"].iloc[0]
    # errors are shown, never raised into the kernel log
    msg(ann, type="edit", index=7, box={"x": 1, "y": 1, "w": 1, "h": 1})
    assert ann.view.message_kind == "error" and "no box 8" in ann.view.message
    draw(ann, 500, 500, 5, 5)
    assert "outside the 120x80 image" in ann.view.message
    with pytest.raises(ValueError, match="not one of the labels"):
        ann.add_box(1, 1, 5, 5, label="horse")


def test_empty_next_skip_and_resume(df, tmp_path):
    save = tmp_path / "boxes.parquet"
    ann = vk.BoxAnnotator(df, box_column="boxes", labels=LABELS, save=save, annotator="ana")
    msg(ann, type="key", key="e")  # r0: nothing to box, go on
    assert df["boxes"].iloc[0] == [] and ann.current == "r1"
    draw(ann, 1, 1, 10, 10)
    msg(ann, type="key", key="ArrowRight")
    assert ann.current == "r2"
    msg(ann, type="key", key="s")  # r2 is not done: skip goes to r3
    assert ann.current == "r3"
    fresh = image_frame(tmp_path / "imgs", n=5)
    again = vk.BoxAnnotator(fresh, box_column="boxes", labels=LABELS, save=save, annotator="ana")
    assert fresh["boxes"].iloc[0] == [] and len(fresh["boxes"].iloc[1]) == 1
    assert again.current == "r2" and again.restored == 2
    assert pd.isna(fresh["boxes"].iloc[2])


def test_json_text_cells_are_read_and_bad_cells_name_the_row(df):
    df["boxes"] = [json.dumps([{"label": "cat", "x": 1, "y": 2, "w": 3, "h": 4}])] + [None] * 4
    vk.BoxAnnotator(df, box_column="boxes", labels=LABELS)
    assert df["boxes"].iloc[0] == [{"label": "cat", "x": 1.0, "y": 2.0, "w": 3.0, "h": 4.0}]
    df["boxes"] = [None, [{"label": "cat", "x": 1}], None, None, None]
    with pytest.raises(ValueError, match="row 'r1'"):
        vk.BoxAnnotator(df, box_column="boxes", labels=LABELS)


def test_suggestions_take_one_take_all_hide(df):
    df["proposed"] = [
        [
            {"label": "cat", "x": 5, "y": 5, "w": 20, "h": 20},
            {"label": "dog", "x": 50, "y": 5, "w": 20, "h": 20},
        ],
        [{"label": "dog", "x": 0, "y": 0, "w": 10, "h": 10}],
        None,
        [],
        None,
    ]
    ann = vk.BoxAnnotator(df, box_column="boxes", labels=LABELS, suggestions="proposed")
    assert len(ann.view.suggestions) == 2
    msg(ann, type="take", index=1)  # click on the dog
    assert [b["label"] for b in df["boxes"].iloc[0]] == ["dog"]
    assert [b["label"] for b in ann.view.suggestions] == ["cat"]  # no longer offered
    msg(ann, type="key", key="a")  # take the rest
    assert [b["label"] for b in df["boxes"].iloc[0]] == ["dog", "cat"] and not ann.view.suggestions
    msg(ann, type="key", key="Backspace")  # undo the accept: the cat is offered again
    assert [b["label"] for b in df["boxes"].iloc[0]] == ["dog"]
    assert [b["label"] for b in ann.view.suggestions] == ["cat"]
    msg(ann, type="key", key="a")
    ann.next()
    msg(ann, type="key", key="x")  # hide them: nothing taken
    assert ann.view.suggestions == [] and pd.isna(df["boxes"].iloc[1])
    ann.position = 2
    with pytest.raises(ValueError, match="no proposed boxes"):
        ann.accept()


def test_keys_can_be_rebound(df):
    ann = vk.BoxAnnotator(
        df, box_column="boxes", labels=LABELS, keys={"delete": ["Delete", "d"], "empty": "n"}
    )
    draw(ann, 1, 1, 10, 10)
    msg(ann, type="key", key="d")
    assert df["boxes"].iloc[0] == []
    msg(ann, type="key", key="e")  # no longer bound
    assert ann.current == "r0"
    msg(ann, type="key", key="ArrowRight")
    msg(ann, type="key", key="n")
    assert df["boxes"].iloc[1] == [] and ann.current == "r2"
    assert ann.view.bindings["d"] == "delete" and "e" not in ann.view.bindings
    assert "d / Del" in ann.view.key_help or "Del / d" in ann.view.key_help
    with pytest.raises(ValueError, match="pick labels"):
        vk.BoxAnnotator(df, box_column="boxes", labels=LABELS, keys={"next": "1"})
    # Two labels: "3" is free for an action.
    ann = vk.BoxAnnotator(df, box_column="boxes", labels=LABELS, keys={"next": ["3", "ArrowRight"]})
    before = ann.position
    msg(ann, type="key", key="3")
    assert ann.position == before + 1


def test_two_annotators_blind_order_and_box_agreement(df, tmp_path):
    save = tmp_path / "team.csv"
    ana = vk.BoxAnnotator(df.copy(), box_column="boxes", labels=LABELS, save=save, annotator="ana")
    ben = vk.BoxAnnotator(df.copy(), box_column="boxes", labels=LABELS, save=save, annotator="ben")
    for ann, dx in ((ana, 0), (ben, 2)):
        ann.add_box(10 + dx, 10, 40, 40)  # r0: nearly the same
        ann.next()
        ann.add_box(0, 0, 20, 20) if ann is ana else ann.add_box(60, 40, 30, 30)  # r1: apart
    review = vk.BoxAnnotator(
        df.copy(), labels=LABELS, save=save, annotator="lead", order="disagreement"
    )
    assert list(review.rows.index)[:2] == ["r1", "r0"]
    review.position = 0
    assert {b["annotator"] for b in review.view.others} == {"ana", "ben"}
    blind = vk.BoxAnnotator(
        df.copy(), box_column="boxes", labels=LABELS, save=save, annotator="cem", blind=True
    )
    blind.position = 0
    assert blind.view.others == []
    wide = review.by_annotator()
    r = vk.box_agreement(wide, truth="ana", answer="ben", iou=0.5)
    assert (r.images, r.matched, r.precision) == (2, 1, 0.5)
    long = vk.read_annotations(save)
    assert set(long["annotator"]) == {"ana", "ben"}


def test_boxes_from_answer_units():
    answer = {
        "units": "pixels",
        "boxes": [
            {"label": "Cat", "x_min": 10, "y_min": 20, "x_max": 110, "y_max": 70},
            {"label": "horse", "x_min": 0, "y_min": 0, "x_max": 5, "y_max": 5},  # not a label
            {"label": "dog", "x_min": 90, "y_min": 100, "x_max": 95, "y_max": 120},  # below it
        ],
    }
    out = boxes_from_answer(answer, sent_size=(200, 100), full_size=(800, 400), labels=LABELS)
    assert out == [{"label": "cat", "x": 40.0, "y": 80.0, "w": 400.0, "h": 200.0}]
    thousandths = {
        "units": "0-1000",
        "boxes": [{"label": "dog", "x_min": 500, "y_min": 250, "x_max": 1100, "y_max": 750}],
    }
    assert boxes_from_answer(thousandths, sent_size=(1, 1), full_size=(800, 400)) == [
        {"label": "dog", "x": 400.0, "y": 100.0, "w": 400.0, "h": 200.0}
    ]  # clipped at 800
    fractions = {
        "units": "0-1",
        "boxes": [{"label": "dog", "x_min": 0.75, "y_min": 0.5, "x_max": 0.25, "y_max": 1.0}],
    }  # inverted
    assert boxes_from_answer(fractions, sent_size=(1, 1), full_size=(800, 400)) == [
        {"label": "dog", "x": 200.0, "y": 200.0, "w": 400.0, "h": 200.0}
    ]
    with pytest.raises(ValueError, match="units 'inches'"):
        boxes_from_answer({"units": "inches", "boxes": []}, sent_size=(1, 1), full_size=(1, 1))
    assert (
        box_schema(LABELS)["properties"]["boxes"]["items"]["properties"]["label"]["enum"] == LABELS
    )


def test_propose_boxes_maps_the_models_pixels_to_the_full_size_upright_image(tmp_path):
    # A 3000x2000 photo stored sideways: shown upright as 2000x3000, sent at 747x1120.
    stored = Image.new("RGB", (3000, 2000), (90, 120, 60))
    exif = stored.getexif()
    exif[0x0112] = 6
    big = tmp_path / "big.jpg"
    stored.save(big, "JPEG", exif=exif, quality=80)
    small = tmp_path / "small.png"
    Image.new("RGB", (200, 100), "white").save(small)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    df = pd.DataFrame({"path": [str(big), str(small), str(broken)]}, index=["a", "b", "c"])
    with offline.serve() as url:
        client = vk.connect("offline", base_url=url, api_key="offline")
        proposed = vk.propose_boxes(df, LABELS, client=client, cache=False, progress=False)
    # The stand-in boxes the central half of the image it received, in its pixels.
    assert proposed["a"] == [{"label": "cat", "x": 500.0, "y": 750.0, "w": 1000.0, "h": 1500.0}]
    assert proposed["b"] == [{"label": "cat", "x": 50.0, "y": 25.0, "w": 100.0, "h": 50.0}]
    assert pd.isna(proposed["c"]) and "c" in proposed.attrs["errors"]
    ann = vk.BoxAnnotator(
        df.iloc[:2].assign(proposed=proposed.iloc[:2]), labels=LABELS, suggestions="proposed"
    )
    assert (ann.view.natural_width, ann.view.natural_height) == (2000, 3000)
    ann.accept()
    assert ann.data["boxes"].iloc[0] == proposed["a"]


def test_propose_boxes_scales_from_the_size_ask_sent_however_ask_shrank_it(tmp_path):
    # The stand-in boxes the central half of the image it received, in that image's pixels:
    # the right answer in full-size pixels is the central half of the full image, whatever
    # size ask sent (max_side=, or a prompt that leaves the image less of the 1 MB body).
    photo = tmp_path / "photo.png"
    Image.new("RGB", (2000, 1000), (90, 120, 60)).save(photo)
    noise = tmp_path / "noise.png"  # does not compress: a long prompt forces a smaller image
    Image.effect_noise((600, 400), 100).convert("RGB").save(noise)
    df = pd.DataFrame({"path": [str(photo), str(noise)]}, index=["photo", "noise"])
    centre = {
        "photo": [{"label": "cat", "x": 500.0, "y": 250.0, "w": 1000.0, "h": 500.0}],
        "noise": [{"label": "cat", "x": 150.0, "y": 100.0, "w": 300.0, "h": 200.0}],
    }
    long_prompt = "Find every 'cat'. " + "Look closely. " * 64_000  # ~900 KB of the body
    cache = tmp_path / "answers.sqlite"
    with offline.serve() as url:
        client = vk.connect("offline", base_url=url, api_key="offline")
        small = vk.propose_boxes(df, LABELS, client=client, max_side=300, cache=cache)
        crowded = vk.propose_boxes(df.loc[["noise"]], LABELS, client=client, prompt=long_prompt)
        again = vk.propose_boxes(df, LABELS, client=client, max_side=300, cache=cache)
        with pytest.raises(ValueError, match="dry_run"):
            vk.propose_boxes(df, LABELS, client=client, dry_run=True)
    assert small.attrs["errors"] == {} and crowded.attrs["errors"] == {}
    for boxes in (small, crowded, again):
        for label, cell in boxes.items():
            [box] = cell
            assert box["label"] == "cat"
            for k in ("x", "y", "w", "h"):  # within the rounding of a smaller image
                assert box[k] == pytest.approx(centre[label][0][k], abs=3), (label, box)
    assert again.tolist() == small.tolist()  # from the cache, placed the same way
