"""ask's options: schema (pydantic and JSON schema), dry_run, budget_tokens, progress."""

from __future__ import annotations

import pandas as pd
import pydantic
import pytest

import visionkit as vk
from tests.test_ask import make_images
from visionkit import offline
from visionkit.query.cache import Cache


class Facts(pydantic.BaseModel):
    width: int
    height: int
    format: str
    description: str


@pytest.fixture
def frame(tmp_path):
    paths = make_images(tmp_path / "imgs", 4, size=(64, 40))
    return pd.DataFrame({"path": paths}, index=list("abcd"))


def test_pydantic_schema_fields_become_columns(frame, client, tmp_path):
    result = frame.vision.ask("Describe.", client=client, schema=Facts, cache=False, progress=False)
    assert result["error"].isna().all(), result["error"].tolist()
    assert list(result.columns[-4:]) == ["width", "height", "format", "description"]
    assert (result["width"] == 64).all() and (result["height"] == 40).all()
    assert (result["format"].str.lower() == "png").all()
    assert result["answer"].str.startswith("{").all()  # the raw JSON is kept


def test_json_schema_dict_and_validation_failure_keeps_the_raw_text(frame, client):
    schema = {
        "type": "object",
        "properties": {"width": {"type": "integer"}, "colour": {"type": "string"}},
        "required": ["width", "colour"],
    }
    result = frame.vision.ask(
        "Describe.", client=client, schema=schema, cache=False, progress=False
    )
    assert result["error"].isna().all() and (result["width"] == 64).all()

    class Impossible(pydantic.BaseModel):
        width: int = pydantic.Field(gt=10_000)

    bad = frame.vision.ask(
        "Describe.", client=client, schema=Impossible, cache=False, progress=False
    )
    assert bad["error"].str.startswith("SchemaError: reply does not match schema Impossible").all()
    assert bad["answer"].notna().all()  # paid for: the raw reply stays
    assert bad["width"].isna().all()


def test_schema_fields_may_not_shadow_result_columns(frame, client):
    class Clash(pydantic.BaseModel):
        answer: str

    with pytest.raises(ValueError, match="collide"):
        frame.vision.ask("Describe.", client=client, schema=Clash, cache=False, progress=False)


def test_dry_run_sends_nothing_and_needs_no_key(frame, tmp_path, monkeypatch):
    monkeypatch.delenv("INFERENCE_API_KEY", raising=False)
    frame.loc["e"] = [str(tmp_path / "missing.png")]
    with offline.serve() as url:
        client = vk.connect("offline", base_url=url, api_key="offline")
        plan = frame.vision.ask(
            "Describe.", client=client, dry_run=True, cache=False, progress=False
        )
        assert url.server.stats.requests == 0
    assert list(plan.columns) == ["estimated_tokens", "request_bytes", "cached", "error"]
    assert (plan.loc[list("abcd"), "estimated_tokens"] == 1601 + 3).all()
    assert (plan.loc[list("abcd"), "request_bytes"] > 200).all()
    assert "ImageError" in plan.loc["e", "error"] and pd.isna(plan.loc["e", "estimated_tokens"])
    usage = plan.attrs["usage"]
    assert usage["requests"] == 4 and usage["failed"] == 1
    assert usage["estimated_tokens"] == 4 * 1604
    # the measured size is exactly what the SDK then sends
    with offline.serve() as url:
        client = vk.connect("offline", base_url=url, api_key="offline")
        frame.iloc[:4].vision.ask("Describe.", client=client, cache=False, progress=False)
        sent = sorted(r.body_bytes for r in url.server.stats.records)
    assert sent == sorted(plan["request_bytes"].iloc[:4].tolist())
    # no client at all: the profile is chosen without connecting or starting anything
    nothing = frame.iloc[:2].vision.ask("Describe.", dry_run=True, cache=False, progress=False)
    assert nothing.attrs["usage"]["provider"] == "offline"


def test_dry_run_counts_cached_rows_as_free(frame, client, tmp_path):
    with Cache(tmp_path / "c.sqlite") as cache:
        frame.iloc[:2].vision.ask("Describe.", client=client, cache=cache, progress=False)
        plan = frame.vision.ask(
            "Describe.", client=client, cache=cache, dry_run=True, progress=False
        )
    assert plan["cached"].tolist() == [True, True, False, False]
    assert plan.attrs["usage"]["estimated_tokens"] == 2 * 1604


def test_budget_tokens_refuses_to_start_with_the_estimate(frame, client):
    server = client.openai.base_url
    with pytest.raises(vk.BudgetExceeded, match=r"6,416 tokens for 4 requests.*1,000"):
        frame.vision.ask(
            "Describe.", client=client, budget_tokens=1000, cache=False, progress=False
        )
    assert server  # nothing was sent: the run below is the first the server sees
    ok = frame.vision.ask(
        "Describe.", client=client, budget_tokens=7000, cache=False, progress=False
    )
    assert ok.attrs["usage"]["requests"] == 4


def test_progress_bar_shows_cache_hits_failures_and_tokens(frame, client, tmp_path, capsys):
    frame.vision.ask("Describe.", client=client, cache=tmp_path / "c.sqlite", progress=True)
    err = capsys.readouterr().err
    assert "4/4" in err and "cached=0" in err and "failed=0" in err and "tokens=" in err
    frame.vision.ask("Describe.", client=client, cache=tmp_path / "c.sqlite", progress=False)
    assert capsys.readouterr().err == ""


def test_bad_arguments_fail_early_with_the_fix(frame, client):
    with pytest.raises(ValueError, match="concurrency must be an integer >= 1"):
        frame.vision.ask("x", client=client, concurrency=0)
    with pytest.raises(ValueError, match="0 disables retries"):
        frame.vision.ask("x", client=client, max_retries=None)
    with pytest.raises(KeyError, match="no column 'img'"):
        frame.vision.ask("x", client=client, image_column="img")
    with pytest.raises(TypeError, match=r"messages= .* built from the row"):
        frame.vision.ask("x", client=client, messages=[])


def test_df_vision_ask_shows_every_option_of_ask():
    import inspect

    df = pd.DataFrame({"path": ["a.png"]})
    params = inspect.signature(df.vision.ask).parameters
    assert next(iter(params)) == "prompt"
    for name in ("client", "schema", "concurrency", "cache", "dry_run", "budget_tokens"):
        assert name in params
    assert "budget_tokens" in df.vision.ask.__doc__
    assert "budget_tokens" in inspect.signature(df.vision.ask_async).parameters


class Counts(pydantic.BaseModel):
    people: int
    outdoor: bool
    score: float
    caption: str
    tags: list[str]
    maybe: int | None = None


def test_schema_columns_keep_their_type_when_a_row_fails(frame, client, tmp_path):
    frame.loc["e"] = [str(tmp_path / "missing.png")]  # this row fails: no answer at all
    result = frame.vision.ask(
        "Describe.", client=client, schema=Counts, cache=False, progress=False
    )
    assert result.loc["e", "error"].startswith("ImageError")
    dtypes = {c: str(result[c].dtype) for c in ["people", "outdoor", "score", "caption"]}
    assert dtypes == {
        "people": "Int64",
        "outdoor": "boolean",
        "score": "Float64",
        "caption": "string",
    }
    assert str(result["maybe"].dtype) == "Int64"  # Optional[int]
    assert result["tags"].dtype == object
    assert result["people"].isna().loc["e"] and (result["people"].drop("e") == 0).all()
    assert result["outdoor"].isna().loc["e"] and not result["outdoor"].drop("e").any()


def test_schema_types_from_a_json_schema_dict():
    from visionkit.query.schema import make_schema

    schema = make_schema(
        {
            "properties": {
                "n": {"type": "integer"},
                "ok": {"type": ["boolean", "null"]},
                "x": {"type": "number"},
                "kind": {"enum": ["cat", "dog"]},
                "any": {},
            }
        }
    )
    assert schema.dtypes == {
        "n": "Int64",
        "ok": "boolean",
        "x": "Float64",
        "kind": "string[python]",
        "any": "object",
    }


def test_schema_fields_named_like_frame_columns_are_prefixed_so_the_join_works(tmp_path, client):
    df = vk.read_images(make_images(tmp_path / "r", 3, size=(64, 40)))
    result = df.vision.ask("Describe.", client=client, schema=Facts, cache=False, progress=False)
    assert {"answer_width", "answer_height", "answer_format", "description"} <= set(result)
    assert "width" not in result and (result["answer_width"] == 64).all()
    table = df.drop(columns="error").join(result)  # the documented join
    assert (table["width"] == table["answer_width"]).all()


def test_a_literal_brace_error_says_how_to_write_one(frame, client):
    with pytest.raises(vk.RequestError, match=r"double it: \{\{ and \}\}"):
        frame.vision.ask('Reply as JSON like {"x": 1}', client=client, progress=False)
    ok = frame.iloc[:1].vision.ask(
        'Reply as JSON like {{"x": 1}}', client=client, cache=False, progress=False
    )
    assert 'Reply as JSON like {\\"x\\": 1}' in ok["answer"].iloc[0] or ok["error"].isna().all()
