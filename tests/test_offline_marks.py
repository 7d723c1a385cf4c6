"""The stand-in's seeing task: counting small red marks in the pixels it receives, at its
model's internal resolution -- over real HTTP through the real openai SDK."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import offline_helpers
import pytest
from offline_helpers import data_uri, user
from PIL import Image
from scipy import ndimage

import visionkit as vk
from visionkit import offline
from visionkit.offline.marks import _components

server, client = offline_helpers.server, offline_helpers.client

COUNT = "How many red marks are in this image? Answer with a number."


def png(frame_path: str, max_side: int | None = None) -> bytes:
    """The image as ``ask`` would send it (encode_image, at ``max_side``)."""
    uri = vk.encode_image(frame_path, max_side=max_side)
    return base64.b64decode(uri.split(",", 1)[1])


@pytest.fixture(scope="module")
def marks(tmp_path_factory):
    folder = tmp_path_factory.mktemp("marks")
    return offline.make_marks(folder, 24, annotators=3, save=folder / "labels.csv", seed=3)


def test_components_match_scipys_labelling():
    rng = np.random.default_rng(0)
    for _ in range(200):
        mask = rng.random(tuple(rng.integers(1, 40, size=2))) < rng.random()
        assert _components(mask) == ndimage.label(mask)[1]  # 4-connected, as scipy's default


def test_the_set_is_reproducible_and_its_counts_are_what_the_pixels_hold(marks, tmp_path):
    again = offline.make_marks(tmp_path, 24, annotators=3, seed=3)
    assert (again["count"] == marks["count"]).all()
    assert (again["annotator_2"] == marks["annotator_2"]).all()
    for a, b in zip(marks["path"][:4], again["path"][:4], strict=True):
        with open(a, "rb") as fa, open(b, "rb") as fb:
            assert fa.read() == fb.read()
    for path, count in zip(marks["path"], marks["count"], strict=True):
        with open(path, "rb") as f:
            assert offline.count_marks(f.read()) == int(count)
    assert Image.open(marks["path"].iloc[0]).size == (1120, 840)
    assert set(marks["count"]) <= {"1", "2", "3", "4", "5"}
    # the simulated annotators miss some small marks, never invent one
    for col in ("annotator_1", "annotator_2", "annotator_3"):
        assert (marks[col].astype(int) <= marks["count"].astype(int)).all()
    assert (
        (marks[["annotator_1", "annotator_2", "annotator_3"]].ne(marks["count"], axis=0))
        .any()
        .any()
    )


def test_the_save_file_is_the_team_annotators_long_form(marks):
    folder = marks["path"].iloc[0].rsplit("/", 1)[0]
    long = vk.read_annotations(f"{folder}/labels.csv")
    assert list(long.columns) == ["index", "path", "annotator", "label", "label_at"]
    wide = long.pivot(index="index", columns="annotator", values="label")
    assert (wide.loc[marks.index, "annotator_1"] == marks["annotator_1"]).all()


def test_the_stand_in_counts_what_it_receives_and_small_images_lose_small_marks(client, marks):
    def ask(path: str, max_side: int | None, model: str = offline.DEFAULT_MODEL) -> str:
        uri = data_uri(png(path, max_side), "image/png")
        reply = client.chat.completions.create(model=model, messages=user(COUNT, uri))
        return reply.choices[0].message.content

    right = {}
    for max_side, model in [
        (None, offline.DEFAULT_MODEL),
        (560, offline.DEFAULT_MODEL),
        (None, offline.SMALL_MODEL),
    ]:
        answers = [ask(p, max_side, model) for p in marks["path"]]
        assert all("counts small red marks only" in a for a in answers)
        said = [a.split(" ", 1)[0] for a in answers]
        right[(max_side, model)] = np.mean(
            [s == c for s, c in zip(said, marks["count"], strict=True)]
        )
    assert right[(None, offline.DEFAULT_MODEL)] == 1.0  # it sees every mark as sent
    assert right[(560, offline.DEFAULT_MODEL)] < 0.9  # halved: 1-2 px marks are gone
    assert right[(None, offline.SMALL_MODEL)] < 0.9  # it looks at 448 px whatever it is sent


def test_a_count_fills_a_schemas_count_field_and_other_questions_are_declined(client, marks):
    uri = data_uri(png(marks["path"].iloc[0]), "image/png")
    schema = {
        "type": "object",
        "properties": {"count": {"type": "integer"}, "description": {"type": "string"}},
        "required": ["count", "description"],
    }
    reply = client.chat.completions.create(
        model=offline.DEFAULT_MODEL,
        messages=user("Count the red marks.", uri),
        response_format={"type": "json_schema", "json_schema": {"name": "n", "schema": schema}},
    )
    assert json.loads(reply.choices[0].message.content)["count"] == int(marks["count"].iloc[0])
    other = client.chat.completions.create(
        model=offline.DEFAULT_MODEL, messages=user("How many people are in this photo?", uri)
    )
    assert "cannot see what the image shows" in other.choices[0].message.content
    both = client.chat.completions.create(
        model=offline.DEFAULT_MODEL,
        messages=user("How many marks does each image have?", uri, uri),
    )
    text = both.choices[0].message.content
    n = int(marks["count"].iloc[0])
    assert text.startswith(f"image 1: {n} red mark") and f"image 2: {n} red mark" in text


def test_a_header_only_server_does_not_count(marks):
    with offline.serve(pixels=False) as url:
        client = vk.connect("offline", base_url=url)
        result = vk.ask(marks.iloc[:2], COUNT, client=client, cache=False, progress=False)
    assert result["answer"].str.contains("pixels not analysed").all()


def test_the_small_model_downscales_by_area_and_counts_at_448(marks):
    with open(marks["path"].iloc[0], "rb") as f:
        data = f.read()
    big = Image.new("RGB", (1120, 840), (218, 218, 214))
    # 3 px at 101..103: at 448 px (0.4x) it falls across two pixels each way, none over 36 % red
    big.paste((214, 28, 36), (101, 101, 104, 104))
    big.paste((214, 28, 36), (400, 400, 410, 410))  # 10 px: 4 px at 448, seen
    buf = io.BytesIO()
    big.save(buf, "PNG")
    assert offline.count_marks(buf.getvalue()) == 2
    assert offline.count_marks(buf.getvalue(), resolution=448) == 1
    assert offline.count_marks(data, resolution=5000) == offline.count_marks(data)
