"""Building and checking request bodies before anything is sent."""

from __future__ import annotations

import base64

import pytest
from openai._utils._json import openapi_dumps

from visionkit import RequestError, get_provider
from visionkit.query.body import (
    BodyMaker,
    body_bytes,
    build_body,
    check_body,
    prepare_request,
    serialize_body,
)
from visionkit.query.template import check_template, fill_template, template_fields

PNG_1PX = (
    "data:image/png;base64,"
    + base64.b64encode(
        bytes.fromhex(
            "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
            "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
        )
    ).decode()
)
NET = get_provider("inference.net")


def test_template_fields_finds_roots_and_nested_specs():
    assert template_fields("Is this a {label}? Score {score:.2f}, {meta[a]} {obj.x}") == [
        "label",
        "score",
        "meta",
        "obj",
    ]
    assert template_fields("no fields, {{literal}} braces") == []
    assert template_fields("{x:{width}}") == ["x", "width"]
    with pytest.raises(ValueError, match="positional"):
        template_fields("Is this a {}?")
    with pytest.raises(ValueError, match="not valid"):
        template_fields("Is this a {label?")


def test_check_template_names_the_missing_column():
    assert check_template("Is this a {label}?", ["path", "label"]) == ["label"]
    with pytest.raises(RequestError, match=r"'labl'.*not a column.*\['path', 'label'\]"):
        check_template("Is this a {labl}?", ["path", "label"])


def test_fill_template_uses_format_map_and_rejects_na():
    assert fill_template("Is this a {label}? ({n:03d})", {"label": "cat", "n": 7}) == (
        "Is this a cat? (007)"
    )
    with pytest.raises(RequestError, match=r"row 'r3'.*'label' is missing"):
        fill_template("Is this a {label}?", {"label": float("nan")}, row="r3")
    with pytest.raises(RequestError, match="row 4"):
        fill_template("{n:d}", {"n": "text"}, row=4)


def test_build_body_puts_images_first_and_text_last():
    body = build_body(
        model="m",
        prompt="Compare",
        images=[PNG_1PX, PNG_1PX],
        system="Be brief.",
        response_format={"type": "json_object"},
        params={"temperature": 0},
    )
    assert body["model"] == "m" and body["temperature"] == 0
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    parts = body["messages"][1]["content"]
    assert [p["type"] for p in parts] == ["image_url", "image_url", "text"]
    assert body["response_format"] == {"type": "json_object"}


def test_body_bytes_matches_what_the_sdk_sends():
    body = build_body(model="m", prompt="Qu'est-ce que c'est ? é ☃", images=[PNG_1PX])
    assert body_bytes(body) == len(openapi_dumps(body))


def test_check_body_enforces_the_profile_rules():
    ok = build_body(model="m", prompt="p", images=[PNG_1PX, PNG_1PX])
    assert check_body(ok, NET) == body_bytes(ok)
    three = build_body(model="m", prompt="p", images=[PNG_1PX] * 3)
    with pytest.raises(RequestError, match=r"row 7: 3 images .* at most 2"):
        check_body(three, NET, row=7)
    url = build_body(model="m", prompt="p", images=["https://example.org/a.png"])
    with pytest.raises(RequestError, match="only as base64 data URIs"):
        check_body(url, NET)
    assert check_body(url, get_provider("openai")) > 0  # openai takes URLs
    bmp = build_body(model="m", prompt="p", images=["data:image/bmp;base64,Qk0="])
    with pytest.raises(RequestError, match="'bmp' is not accepted"):
        check_body(bmp, NET)
    big = build_body(model="m", prompt="x" * 1_000_000, images=[PNG_1PX])
    with pytest.raises(RequestError, match=r"not under inference\.net's limit of 1,000,000"):
        check_body(big, NET)


def test_body_limit_is_exclusive():
    body = build_body(model="m", prompt="", images=[PNG_1PX])
    pad = NET.max_body_bytes - body_bytes(body)
    at_limit = build_body(model="m", prompt="x" * pad, images=[PNG_1PX])
    assert body_bytes(at_limit) == NET.max_body_bytes
    with pytest.raises(RequestError):
        check_body(at_limit, NET)
    just_under = build_body(model="m", prompt="x" * (pad - 1), images=[PNG_1PX])
    assert check_body(just_under, NET) == NET.max_body_bytes - 1


def test_prepared_payload_is_the_sdks_json_and_nan_is_the_rows_error():
    import io

    from PIL import Image

    from visionkit.query.body import prepare_request

    buf = io.BytesIO()
    Image.new("RGB", (30, 20), "navy").save(buf, "PNG")
    png = buf.getvalue()
    prepared = prepare_request(
        [png],
        provider=NET,
        model="m",
        prompt="Qu'est-ce que c'est ? é ☃",
        params={"temperature": 0.5},
    )
    assert prepared.payload == openapi_dumps(prepared.body)
    assert prepared.nbytes == len(prepared.payload)
    with pytest.raises(RequestError, match=r"row 3.*cannot be sent as JSON"):
        prepare_request(
            [png],
            provider=NET,
            model="m",
            prompt="p",
            params={"temperature": float("nan")},
            row=3,
        )


def test_ask_serialises_each_body_once_off_the_event_loop(tmp_path, monkeypatch):
    """The checked bytes are sent as they are: the SDK does not serialise the body again."""
    import openai._base_client as base_client
    import pandas as pd
    from PIL import Image

    import visionkit as vk
    from visionkit import offline

    paths = []
    for i in range(3):
        Image.new("RGB", (20, 20), (i * 80, 0, 0)).save(tmp_path / f"{i}.png")
        paths.append(str(tmp_path / f"{i}.png"))
    calls = []
    real = base_client.openapi_dumps
    monkeypatch.setattr(base_client, "openapi_dumps", lambda obj: calls.append(1) or real(obj))
    with offline.serve(pixels=False) as url:
        client = vk.connect("offline", base_url=url, api_key="offline")
        plan = pd.DataFrame({"path": paths}).vision.ask(
            "Describe.", client=client, cache=False, dry_run=True
        )
        result = pd.DataFrame({"path": paths}).vision.ask(
            "Describe.", client=client, cache=False, progress=False
        )
        sent = sorted(r.body_bytes for r in url.server.stats.records)
    assert result["error"].isna().all() and calls == []
    assert sent == sorted(plan["request_bytes"].tolist())


# Prompts, systems and options whose JSON is not plain: quotes, escapes, line and paragraph
# separators, non-BMP characters, control characters, a lone surrogate's neighbours.
AWKWARD = [
    "",
    "plain",
    'quote " backslash \\ slash / tab \t newline \n',
    "Qu'est-ce que c'est ? é ☃ \u2028\u2029 😀 \x00\x1f\x7f",
    '{not a template} ]},{"type":"text"',
]


@pytest.mark.parametrize("prompt", AWKWARD)
@pytest.mark.parametrize("n", [0, 1, 2])
def test_body_maker_writes_the_same_bytes_as_serialising_the_body(prompt, n):
    settings = [
        {},
        {"system": prompt or None, "params": {"temperature": 0.5, "x": [prompt, {"y": None}]}},
        {"response_format": {"type": "json_schema", "json_schema": {"d": prompt}}},
    ]
    images = [PNG_1PX, 'https://example.org/a b"c.png'][:n]
    for options in settings:
        maker = BodyMaker(model="m\u00e9", **options)
        for _ in range(2):  # the second body reuses the fixed parts written for the first
            body = build_body(model="m\u00e9", prompt=prompt, images=images, **options)
            assert maker(prompt, images) == serialize_body(body)
            assert maker.spliced(n)
            assert len(maker(prompt, images)) == len(openapi_dumps(body))


def test_body_maker_serialises_whole_when_options_replace_the_messages():
    params = {"messages": [{"role": "user", "content": "from the options"}]}
    maker = BodyMaker(model="m", params=params)
    body = build_body(model="m", prompt="p", images=[PNG_1PX], params=params)
    assert maker("p", [PNG_1PX]) == serialize_body(body)
    assert not maker.spliced(1)


def _png() -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (24, 16), (200, 30, 30)).save(out, "PNG")
    return out.getvalue()


def test_prepare_request_with_a_maker_checks_what_it_sends():
    png = _png()
    maker = BodyMaker(model="m")
    request = prepare_request([png], provider=NET, model="m", prompt="p é", maker=maker)
    uri = request.body["messages"][0]["content"][0]["image_url"]["url"]
    assert uri.startswith("data:image/png;base64,")
    assert request.payload == serialize_body(build_body(model="m", prompt="p é", images=[uri]))
    assert request.nbytes == len(request.payload) and request.image_sizes == ((24, 16),)
    # options that smuggle a URL in as the messages are checked as they are sent
    sneaky = {
        "messages": [
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": "https://example.org/a"}}],
            }
        ]
    }
    with pytest.raises(RequestError, match="only as base64 data URIs"):
        prepare_request(
            [png],
            provider=NET,
            model="m",
            prompt="p",
            params=sneaky,
            maker=BodyMaker(model="m", params=sneaky),
        )
    nan = BodyMaker(model="m", params={"temperature": float("nan")})
    with pytest.raises(RequestError, match=r"row 3: the request cannot be sent as JSON"):
        prepare_request([png], provider=NET, model="m", prompt="p", row=3, maker=nan)
