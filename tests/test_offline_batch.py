"""The offline stand-in's Batch API, spoken to over real HTTP through the real openai SDK."""

from __future__ import annotations

import asyncio
import json
import socket
import time
import tracemalloc
from pathlib import Path

import offline_helpers
import openai
import pytest
from offline_helpers import (
    MODEL,
    batch_line,
    chat_body,
    command_line,
    data_uri,
    image_bytes,
    jpeg_uri,
    read_jsonl,
    write_jsonl,
)

from visionkit import offline, providers

server, client = offline_helpers.server, offline_helpers.client  # the shared fixtures

WAIT = 60  # seconds a test waits for a batch before failing: a hang guard, never a timing claim


def wait_for(client, batch_id: str, statuses=("completed", "failed", "expired", "cancelled")):
    """Poll until the batch reaches one of ``statuses``; returns (batch, statuses seen)."""
    seen: list[str] = []
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        batch = client.batches.retrieve(batch_id)
        if not seen or seen[-1] != batch.status:
            seen.append(batch.status)
        if batch.status in statuses:
            return batch, seen
        time.sleep(0.02)
    raise AssertionError(f"batch {batch_id} still {seen[-1]!r} after {WAIT} s")


def submit(client, tmp_path: Path, lines: list[dict], name="in.jsonl", **create):
    path = write_jsonl(tmp_path / name, lines)
    uploaded = client.files.create(file=path, purpose="batch")
    return client.batches.create(
        input_file_id=uploaded.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        **create,
    )


def photo_lines(n: int, prefix="row") -> list[dict]:
    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (240, 240, 240), (10, 10, 10)]
    return [
        batch_line(
            f"{prefix}-{i}",
            chat_body(f"Describe image {i}.", jpeg_uri((300 + 40 * i, 200), colours[i % 5])),
        )
        for i in range(n)
    ]


# -- files -------------------------------------------------------------------------------------


def test_upload_retrieve_list_and_stream_the_content_back(client, tmp_path):
    lines = photo_lines(30)
    path = write_jsonl(tmp_path / "jobs.jsonl", lines)
    data = path.read_bytes()
    uploaded = client.files.create(file=path, purpose="batch")
    assert uploaded.id.startswith("file-") and uploaded.object == "file"
    assert (uploaded.bytes, uploaded.filename, uploaded.purpose) == (
        len(data),
        "jobs.jsonl",
        "batch",
    )
    assert client.files.retrieve(uploaded.id).bytes == len(data)
    assert [f.id for f in client.files.list(purpose="batch")] == [uploaded.id]
    assert client.files.content(uploaded.id).read() == data
    with client.files.with_streaming_response.content(uploaded.id) as response:
        pieces = list(response.iter_bytes(16_384))
    assert len(pieces) > 1 and b"".join(pieces) == data  # streamed in pieces, byte for byte
    client.files.delete(uploaded.id)
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(uploaded.id)


def test_a_large_upload_is_streamed_to_disk_and_back_never_held_in_memory(client, tmp_path):
    line = json.dumps(batch_line("x", chat_body("y" * 1000))).encode() + b"\n"
    path = tmp_path / "big.jsonl"
    path.write_bytes(line * (40_000_000 // len(line)))  # 40 MB
    size = path.stat().st_size
    tracemalloc.start()
    try:
        with open(path, "rb") as f:  # a file object: the SDK streams it too
            uploaded = client.files.create(file=f, purpose="batch")
        with client.files.with_streaming_response.content(uploaded.id) as response:
            received = sum(len(piece) for piece in response.iter_bytes(65_536))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert uploaded.bytes == received == size
    assert peak < size / 5  # client and server together held a small part of it at any time


def test_uploads_are_paced_one_per_interval_with_retry_after(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", photo_lines(1))
    assert providers["offline"].batch.upload_interval == 60  # inference.net: 1 upload a minute
    with (
        offline.serve() as url,
        openai.OpenAI(base_url=url, api_key="offline", max_retries=0) as c,
    ):
        c.files.create(file=path, purpose="batch")
        with pytest.raises(openai.RateLimitError, match="1 per 60 s") as err:
            c.files.create(file=path, purpose="batch")
        wait = int(err.value.response.headers["retry-after"])
        assert 50 <= wait <= 60
        assert url.server.stats.uploads == 1 and url.server.stats.uploads_refused == 1
    # A short interval: the SDK's own retry honours retry-after-ms and the upload goes through.
    with (
        offline.serve(upload_interval=0.3) as url,
        openai.OpenAI(base_url=url, api_key="offline", max_retries=3) as c,
    ):
        first = c.files.create(file=path, purpose="batch")
        second = c.files.create(file=path, purpose="batch")
        assert first.id != second.id
        assert url.server.stats.uploads == 2 and url.server.stats.uploads_refused >= 1


def test_an_upload_refused_by_pacing_is_refused_before_its_body_is_sent():
    with offline.serve(upload_interval=60) as url:
        host, port = url.split("//")[1].split("/")[0].split(":")
        head = (
            "POST /v1/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer offline\r\n"
            "Content-Type: multipart/form-data; boundary=b\r\nContent-Length: {n}\r\n"
            "Expect: 100-continue\r\n\r\n"
        )
        body = (
            b'--b\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
            b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.jsonl"\r\n\r\n'
            b"{}\n\r\n--b--\r\n"
        )
        answers = []
        for _ in range(2):
            with socket.create_connection((host, int(port)), timeout=5) as sock:
                sock.sendall(head.format(n=len(body)).encode())
                first = sock.recv(65536)
                answers.append(first.split(b"\r\n", 1)[0])
                if b" 100 " in first:
                    sock.sendall(body)
                    sock.recv(65536)
        assert answers[0] == b"HTTP/1.1 100 Continue"  # the first upload is welcome
        assert answers[1].startswith(b"HTTP/1.1 429")  # the second is refused, body unsent


def test_a_file_over_the_profiles_byte_limit_is_413(tmp_path):
    path = write_jsonl(tmp_path / "big.jsonl", photo_lines(3))
    with (
        offline.serve(upload_interval=0, max_file_bytes=1000) as url,
        openai.OpenAI(base_url=url, api_key="offline", max_retries=0) as c,
    ):
        with pytest.raises(openai.APIStatusError, match="at most 1,000 bytes") as err:
            c.files.create(file=path, purpose="batch")
        assert err.value.status_code == 413
        assert c.files.list().data == [] and url.server.stats.uploads == 0
        small = write_jsonl(tmp_path / "small.jsonl", [batch_line("a", chat_body("hi"))])
        assert c.files.create(file=small, purpose="batch").bytes < 1000


def test_files_need_the_key_and_purpose_batch(server, tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", photo_lines(1))
    with (
        openai.OpenAI(base_url=server.base_url, api_key="wrong", max_retries=0) as c,
        pytest.raises(openai.AuthenticationError),
    ):
        c.files.create(file=path, purpose="batch")
    with (
        openai.OpenAI(base_url=server.base_url, api_key="offline", max_retries=0) as c,
        pytest.raises(openai.BadRequestError, match="purpose='batch'"),
    ):
        c.files.create(file=path, purpose="fine-tune")


# -- batches -----------------------------------------------------------------------------------


def test_a_batch_runs_through_its_statuses_and_answers_as_the_sync_endpoint_does(tmp_path):
    lines = photo_lines(4)
    with (
        offline.serve(upload_interval=0, batch_time=1.5, batch_finalize_time=0.5) as url,
        openai.OpenAI(base_url=url, api_key="offline", max_retries=0) as c,
    ):
        url.server.pause_batches()
        batch = submit(
            c,
            tmp_path,
            lines,
            metadata={"job": "test"},
            extra_body={"webhook_url": "https://example.org/hook"},
        )
        assert batch.status == "validating" and batch.id.startswith("batch_")
        assert c.batches.retrieve(batch.id).status == "validating"  # held by pause_batches
        url.server.resume_batches()
        done, seen = wait_for(c, batch.id)
        after_validation = [status for status in seen if status != "validating"]
        assert after_validation == ["in_progress", "finalizing", "completed"]
        assert done.request_counts.model_dump() == {"total": 4, "completed": 4, "failed": 0}
        assert done.metadata == {"job": "test"} and done.model == MODEL
        assert done.error_file_id is None and done.completed_at and done.in_progress_at
        assert url.server.batch(batch.id).webhook_url == "https://example.org/hook"
        output = c.files.retrieve(done.output_file_id)
        assert output.purpose == "batch_output"
        results = read_jsonl(c.files.content(done.output_file_id).read())
        assert sorted(results) == [line["custom_id"] for line in lines]
        tokens = 0
        for line in lines:
            result = results[line["custom_id"]]
            assert result["error"] is None and result["response"]["status_code"] == 200
            answer = result["response"]["body"]
            raw = c.chat.completions.with_raw_response.create(**line["body"])
            sync = raw.http_response.json()  # the JSON itself, not the SDK's model of it
            for key in ("choices", "usage", "model", "object"):
                assert answer[key] == sync[key]
            tokens += answer["usage"]["prompt_tokens"]
        assert done.usage.input_tokens == tokens
        stats = url.server.stats
        assert (stats.batches_created, stats.batch_lines, stats.batch_lines_answered) == (1, 4, 4)
        # every body was answered twice on purpose above: once in the batch, once synchronously
        assert len(stats.paid_twice) == 4


def test_every_line_meets_the_synchronous_rules_with_the_same_errors(server, client, tmp_path):
    bmp = data_uri(image_bytes(fmt="BMP"), "image/bmp")
    liar = data_uri(image_bytes(fmt="JPEG"), "image/png")
    huge = "x" * 1_000_000
    bodies = {
        "ok": chat_body("Describe.", jpeg_uri()),
        "three-images": chat_body("x", *[jpeg_uri()] * 3),
        "url": chat_body("x", "https://example.org/a.png"),
        "bmp": chat_body("x", bmp),
        "mislabelled": chat_body("x", liar),
        "too-big": chat_body(huge),
        "unknown-model": chat_body("x", model="no-such-model"),
    }
    lines = [batch_line(cid, body) for cid, body in bodies.items()]
    # one model per file: the unknown-model line goes in a file of its own
    done, _ = wait_for(client, submit(client, tmp_path, lines[:-1]).id)
    other, _ = wait_for(client, submit(client, tmp_path, lines[-1:], name="b.jsonl").id)
    assert done.status == other.status == "completed"
    assert done.request_counts.model_dump() == {"total": 6, "completed": 1, "failed": 5}
    errors = read_jsonl(client.files.content(done.error_file_id).read())
    errors |= read_jsonl(client.files.content(other.error_file_id).read())
    assert sorted(errors) == sorted(set(bodies) - {"ok"})
    for cid, body in bodies.items():
        if cid == "ok":
            continue
        line = errors[cid]
        try:
            client.chat.completions.create(**body)
        except openai.APIStatusError as exc:
            sync_status, sync_error = exc.status_code, exc.body
        else:
            raise AssertionError(f"{cid} was answered synchronously")
        assert line["response"]["status_code"] == sync_status, cid
        assert line["response"]["body"]["error"] == sync_error, cid
    assert errors["too-big"]["response"]["status_code"] == 413
    assert errors["three-images"]["response"]["status_code"] == 400
    assert server.stats.batch_lines_failed == 6 and server.stats.batch_lines_answered == 1


def test_a_file_that_does_not_validate_fails_the_batch_naming_each_line(server, client, tmp_path):
    good = chat_body("hi")
    lines = [
        batch_line("a", good),
        batch_line("a", good),  # custom_id used twice
        batch_line("b", good, method="GET"),
        batch_line("c", good, url="/v1/completions"),
        batch_line("d", chat_body("hi", model="other-model")),
        {"custom_id": "e", "method": "POST", "body": good},  # no url: inference.net allows it
        batch_line("f", "not an object"),
    ]
    path = write_jsonl(tmp_path / "bad.jsonl", lines)
    with open(path, "a") as f:
        f.write("{not json\n")
    uploaded = client.files.create(file=path, purpose="batch")
    batch = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    done, seen = wait_for(client, batch.id)
    assert seen[-1] == "failed" and done.failed_at and done.output_file_id is None
    found = {(e.line, e.code) for e in done.errors.data}
    assert found == {
        (2, "duplicate_custom_id"),
        (3, "invalid_method"),
        (4, "invalid_url"),
        (5, "mismatched_model"),
        (7, "missing_required_parameter"),
        (8, "invalid_json_line"),
    }
    assert server.stats.batch_lines == 0  # nothing ran, nothing was billed


def test_more_lines_than_the_profile_allows_fail_validation(tmp_path):
    with (
        offline.serve(upload_interval=0, max_requests_per_file=3) as url,
        openai.OpenAI(base_url=url, api_key="offline", max_retries=0) as c,
    ):
        done, _ = wait_for(c, submit(c, tmp_path, photo_lines(4)).id)
        assert done.status == "failed"
        assert [e.code for e in done.errors.data] == ["too_many_requests"]
        assert "at most 3" in done.errors.data[0].message
        ok, _ = wait_for(c, submit(c, tmp_path, photo_lines(3), name="ok.jsonl").id)
        assert ok.status == "completed"


def test_an_expired_batch_delivers_what_completed_and_a_resubmission_pays_nothing_twice(
    tmp_path,
):
    lines = photo_lines(8)
    with (
        offline.serve(upload_interval=0) as url,
        openai.OpenAI(base_url=url, api_key="offline", max_retries=0) as c,
    ):
        url.server.inject_batch(expire_fraction=0.25)  # this batch only
        done, seen = wait_for(c, submit(c, tmp_path, lines).id)
        assert seen[-1] == "expired" and done.expired_at
        assert done.request_counts.model_dump() == {"total": 8, "completed": 6, "failed": 2}
        answered = read_jsonl(c.files.content(done.output_file_id).read())
        unrun = read_jsonl(c.files.content(done.error_file_id).read())
        assert sorted(answered) == [f"row-{i}" for i in range(6)]  # the last lines were unrun
        assert sorted(unrun) == ["row-6", "row-7"]
        for result in unrun.values():
            assert result["response"] is None
            assert result["error"]["code"] == "batch_expired"
        again = [line for line in lines if line["custom_id"] in unrun]
        second, _ = wait_for(c, submit(c, tmp_path, again, name="again.jsonl").id)
        assert second.status == "completed" and second.request_counts.completed == 2
        stats = url.server.stats
        assert stats.batch_lines_answered == len(lines) and stats.paid_twice == {}


def test_injected_line_failures_reach_the_error_file_with_the_message(server, client, tmp_path):
    server.inject_batch(fail_lines={"row-1"}, fail_status=503, message="GPU on fire")
    done, _ = wait_for(client, submit(client, tmp_path, photo_lines(3)).id)
    assert done.status == "completed" and done.request_counts.failed == 1
    failed = read_jsonl(client.files.content(done.error_file_id).read())["row-1"]
    assert failed["response"]["status_code"] == 503
    assert failed["response"]["body"]["error"]["message"] == "GPU on fire"
    nxt, _ = wait_for(client, submit(client, tmp_path, photo_lines(3), name="n.jsonl").id)
    assert nxt.request_counts.failed == 0  # the injection was for one batch


def test_line_fail_rate_is_deterministic_given_the_seed_and_a_rerun_can_succeed(tmp_path):
    lines = photo_lines(12)

    def failed_ids(seed: int) -> set[str]:
        with (
            offline.serve(upload_interval=0, line_fail_rate=0.5, seed=seed) as url,
            openai.OpenAI(base_url=url, api_key="offline", max_retries=0) as c,
        ):
            done, _ = wait_for(c, submit(c, tmp_path, lines).id)
            errors = read_jsonl(c.files.content(done.error_file_id).read())
            assert {e["response"]["status_code"] for e in errors.values()} == {500}
            rerun = [line for line in lines if line["custom_id"] in errors]
            again, _ = wait_for(c, submit(c, tmp_path, rerun, name="r.jsonl").id)
            assert again.request_counts.completed > 0  # a second run is a new draw
            return set(errors)

    first = failed_ids(seed=1)
    assert 0 < len(first) < len(lines)
    assert failed_ids(seed=1) == first


def test_cancel_stops_the_run_and_delivers_what_completed(tmp_path):
    lines = photo_lines(20)
    with (
        offline.serve(upload_interval=0, batch_time=10, batch_cancel_time=0.3) as url,
        openai.OpenAI(base_url=url, api_key="offline", max_retries=0) as c,
    ):
        batch = submit(c, tmp_path, lines)
        deadline = time.monotonic() + WAIT
        while c.batches.retrieve(batch.id).request_counts.completed < 2:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        cancelling = c.batches.cancel(batch.id)
        assert cancelling.status == "cancelling" and cancelling.cancelling_at
        done, seen = wait_for(c, batch.id)
        assert seen[0] == "cancelling" and seen[-1] == "cancelled" and done.cancelled_at
        answered = read_jsonl(c.files.content(done.output_file_id).read())
        skipped = read_jsonl(c.files.content(done.error_file_id).read())
        assert 2 <= len(answered) < 20 and len(answered) + len(skipped) == 20
        assert {r["error"]["code"] for r in skipped.values()} == {"batch_cancelled"}
        assert done.request_counts.completed == len(answered) == url.server.stats.batch_lines
        with pytest.raises(openai.ConflictError, match="status 'cancelled'"):
            c.batches.cancel(batch.id)


def test_list_pages_newest_first(server, client, tmp_path):
    ids = [submit(client, tmp_path, photo_lines(1), name=f"{i}.jsonl").id for i in range(3)]
    page = client.batches.list(limit=2)
    assert page.has_more is True and len(page.data) == 2
    assert {b.id for b in client.batches.list(limit=2)} == set(ids)  # auto-paginates
    for batch_id in ids:
        wait_for(client, batch_id)
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_nope")


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"input_file_id": "file-nope"}, "was not found"),
        ({"endpoint": "/v1/completions"}, "Invalid endpoint"),
        ({"completion_window": "48h"}, "only '24h'"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "at most 16"),
        ({"extra_body": {"webhook_url": "http://example.org/hook"}}, "HTTPS"),
    ],
)
def test_bad_batch_parameters_are_400(server, client, tmp_path, change, match):
    uploaded = client.files.create(
        file=write_jsonl(tmp_path / "a.jsonl", photo_lines(1)), purpose="batch"
    )
    params = {
        "input_file_id": uploaded.id,
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
        **change,
    }
    with pytest.raises(openai.BadRequestError, match=match):
        client.batches.create(**params)
    assert server.stats.batches_created == 0


def test_the_async_client_runs_the_same_flow(tmp_path):
    lines = photo_lines(3)
    path = write_jsonl(tmp_path / "in.jsonl", lines)

    async def run(url: str) -> dict[str, dict]:
        async with openai.AsyncOpenAI(base_url=url, api_key="offline", max_retries=0) as c:
            uploaded = await c.files.create(file=path, purpose="batch")
            batch = await c.batches.create(
                input_file_id=uploaded.id,
                endpoint="/v1/chat/completions",
                completion_window="24h",
            )
            while batch.status not in ("completed", "failed", "expired", "cancelled"):
                await asyncio.sleep(0.02)
                batch = await c.batches.retrieve(batch.id)
            assert [b.id async for b in c.batches.list()] == [batch.id]
            content = await c.files.content(batch.output_file_id)
            return read_jsonl(content.read())

    with offline.serve(upload_interval=0) as url:
        results = asyncio.run(run(url))
    assert sorted(results) == [line["custom_id"] for line in lines]
    assert all(r["response"]["status_code"] == 200 for r in results.values())


def test_the_key_is_never_echoed_by_the_batch_endpoints(tmp_path):
    secret = "sk-batch-secret-7"
    path = write_jsonl(tmp_path / "a.jsonl", photo_lines(2))
    with (
        offline.serve(upload_interval=0, api_key=secret) as url,
        openai.OpenAI(base_url=url, api_key=secret, max_retries=0) as c,
    ):
        uploaded = c.files.create(file=path, purpose="batch")
        batch = c.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        done, _ = wait_for(c, batch.id)
        shown = [
            done.model_dump_json(),
            c.files.content(done.output_file_id).read().decode(),
            repr(url.server.batch(batch.id)),
            json.dumps(url.server.stats.as_dict()),
        ]
    assert not any(secret in text for text in shown)


def test_the_command_line_serves_the_batch_api_with_its_knobs(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", photo_lines(2))
    proc, url = command_line("--upload-interval", "0")
    try:
        with openai.OpenAI(base_url=url, api_key="offline", max_retries=0) as c:
            first = c.files.create(file=path, purpose="batch")
            c.files.create(file=path, purpose="batch")  # no pacing: --upload-interval 0
            batch = c.batches.create(
                input_file_id=first.id, endpoint="/v1/chat/completions", completion_window="24h"
            )
            done, _ = wait_for(c, batch.id)
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=10)
    assert done.status == "completed"
    stats = json.loads(out.strip().splitlines()[-1])
    assert stats["uploads"] == 2 and stats["batch_lines_answered"] == 2
    assert "Traceback" not in err


# -- the runner's own settings, lock and counters ---------------------------------------------


def test_the_batch_runner_is_given_settings_not_the_server_and_keeps_its_own_counts(
    server, client, tmp_path
):
    """Issue 20: the batch service was handed the whole OfflineServer as its knobs (an import
    circle, batches.py <-> server.py) and counted under the server's lock. It now takes a
    ``RunnerSettings`` and keeps its batches and ``BatchCounters`` under a lock of its own;
    ``server.stats`` reads the counters, and ``reset_stats`` starts them afresh."""
    import ast
    import inspect

    from visionkit.offline import batches

    tree = ast.parse(inspect.getsource(batches))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert "server" not in imported  # not even under TYPE_CHECKING
    service = server._batches
    assert service.settings == server.runner_settings() == batches.RunnerSettings()
    assert service._lock is not server._lock
    done, _ = wait_for(client, submit(client, tmp_path, photo_lines(3)).id)
    assert done.status == "completed"
    stats = server.stats
    assert stats.batch is service.counters
    assert (stats.batches_created, stats.batch_lines, stats.batch_lines_answered) == (1, 3, 3)
    assert stats.as_dict()["batch_lines_answered"] == 3 and stats.paid_twice == {}
    old = server.reset_stats()
    assert old.batch_lines == 3 and server.stats.batch_lines == 0
    assert server.stats.batch is service.counters  # the new counters, still the service's
    again, _ = wait_for(client, submit(client, tmp_path, photo_lines(3), name="b.jsonl").id)
    assert again.status == "completed"
    assert server.stats.batch_lines_answered == 3 and len(server.stats.paid_twice) == 0
    assert old.batch_lines == 3  # the old stats keep what they counted


def test_runner_settings_come_from_the_servers_batch_fields():
    srv = offline.OfflineServer(
        batch_time=0.5, batch_expire_fraction=0.25, line_fail_rate=0.1, line_fail_status=503
    )
    settings = srv.runner_settings()
    assert (settings.run_time, settings.expire_fraction) == (0.5, 0.25)
    assert (settings.line_fail_rate, settings.line_fail_status) == (0.1, 503)
