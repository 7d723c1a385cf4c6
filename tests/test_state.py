"""Process-wide state in one place: ``vk.state()`` lists it, ``vk.reset_state()`` forgets it,
secrets never show, and the decode hooks are installed only while an image decodes."""

from __future__ import annotations

import threading
import warnings

import pandas as pd
import pytest
from PIL import Image

import visionkit as vk
from visionkit.images import pil_messages, remote, thumbnails
from visionkit.images.pil_errors import pil_errors


def _row(name: str) -> pd.Series:
    table = vk.state().set_index("piece")
    assert name in table.index, f"{name!r} not in {list(table.index)}"
    return table.loc[name]


def test_storage_options_are_listed_by_key_never_by_value_and_reset(tmp_path):
    vk.set_storage_options("s3://lab-bucket/", key="AKIA-id", secret="s3cret-value")
    vk.set_storage_options("ftp://ana:hunter2@images.example.org/", timeout=5)
    row = _row("storage options")
    shown = vk.state().to_string() + repr(vk.state().to_dict())
    assert row["items"] >= 2 and "s3://lab-bucket/ (key, secret)" in row["holds"]
    assert "images.example.org" in row["holds"]
    for secret in ("s3cret-value", "AKIA-id", "hunter2", "ana:"):
        assert secret not in shown
    assert "storage options" in vk.reset_state()
    assert _row("storage options")["items"] == 0
    assert remote.options_for("s3://lab-bucket/x.jpg") == {}


def test_thumbnails_and_default_clients_are_forgotten(tmp_path, monkeypatch):
    monkeypatch.delenv("INFERENCE_API_KEY", raising=False)
    path = tmp_path / "a.png"
    Image.new("RGB", (40, 30), "red").save(path)
    vk.thumbnail(path)
    vk.Client  # noqa: B018 - imports visionkit.query.client, which registers its clients
    assert _row("thumbnails")["items"] >= 1
    vk.reset_state()
    assert _row("thumbnails")["items"] == 0 and len(thumbnails._cache) == 0
    assert _row("default clients")["items"] == 0


def test_reset_stops_the_shared_offline_server_and_a_new_one_starts_on_demand():
    from visionkit import offline

    server = offline.shared()
    assert server.running and _row("shared offline server")["items"] == 1
    assert "127.0.0.1" in _row("shared offline server")["holds"]
    vk.reset_state()
    assert not server.running and _row("shared offline server")["items"] == 0
    again = offline.shared()
    assert again is not server and again.running
    vk.reset_state()


def test_the_environment_connect_reads_is_shown_without_the_key(monkeypatch):
    monkeypatch.setenv("INFERENCE_API_KEY", "sk-very-secret-123")
    monkeypatch.setenv("VISIONKIT_REPLAY", "answers/")
    monkeypatch.delenv("VISIONKIT_RECORD", raising=False)
    table = vk.state().set_index("piece")
    assert table.loc["$INFERENCE_API_KEY", "holds"] == "set"
    assert table.loc["$VISIONKIT_REPLAY", "holds"] == "answers/"
    assert table.loc["$VISIONKIT_RECORD", "holds"] == "unset"
    assert "sk-very-secret-123" not in table.to_string()


def test_registered_providers_are_listed_and_kept():
    row = _row("providers")
    assert "inference.net" in row["holds"] and not row["resettable"]
    vk.reset_state()
    assert "inference.net" in vk.providers


def test_the_warning_hook_is_installed_only_while_an_image_decodes(tmp_path):
    """Before: the first decode wrapped ``warnings.showwarning`` for good (and replaced
    libtiff's error handler for good). Now both are put back when the last decode ends."""
    before = warnings.showwarning
    path = tmp_path / "b.png"
    Image.new("RGB", (20, 20), "blue").save(path)
    vk.encode_image(path)
    assert warnings.showwarning is before
    assert pil_messages.installed() == []
    assert _row("hooks")["items"] == 0
    with pil_messages.capture() as notes:
        inside = pil_messages.installed()
        assert "warnings.showwarning" in inside and warnings.showwarning is not before
        warnings.warn("Corrupt EXIF data", UserWarning, stacklevel=1)
    assert notes == ["UserWarning: Corrupt EXIF data"]
    assert warnings.showwarning is before and pil_messages.installed() == []


def test_a_planning_pass_holds_the_hooks_for_its_length_and_puts_them_back(tmp_path):
    """Installed and removed around every decode, the hooks cost the planner a third more than
    encoding alone; a pass over many images holds them from its first row to its last, and
    between calls nothing is installed."""
    from visionkit.query.options import AskOptions
    from visionkit.query.plan import make_plan, plan_rows

    before = warnings.showwarning
    paths = []
    for i in range(60):
        path = tmp_path / f"p{i}.png"
        Image.new("RGB", (16 + i, 12), (i * 4, 30, 90)).save(path)
        paths.append(str(path))
    seen = []
    options = AskOptions(cache=False, progress=False)
    with make_plan(pd.DataFrame({"path": paths}), "Describe.", options, connect_now=False) as plan:
        for row in plan_rows(plan):
            assert row.error is None
            seen.append(pil_messages.installed())
    assert len(seen) == 60 and all("warnings.showwarning" in hooks for hooks in seen)
    assert warnings.showwarning is before and pil_messages.installed() == []


def test_a_warning_outside_a_capture_reaches_the_user_while_another_thread_decodes():
    """The hook, while installed for one thread's decode, passes other threads' warnings on."""
    entered, leave = threading.Event(), threading.Event()

    def decode() -> None:
        with pil_errors(row=1):
            entered.set()
            leave.wait(5)

    worker = threading.Thread(target=decode)
    worker.start()
    try:
        assert entered.wait(5)
        with pytest.warns(UserWarning, match="the user's own"):
            warnings.warn("the user's own", UserWarning, stacklevel=1)
    finally:
        leave.set()
        worker.join(5)
    assert pil_messages.installed() == []


def test_libtiffs_messages_still_become_the_rows_reason_and_the_handler_goes_back():
    from tests.image_factory import corrupt_lzw_tiff

    before = warnings.showwarning
    with pytest.raises(vk.ImageError) as caught:
        vk.encode_image(corrupt_lzw_tiff(), row=7)
    assert "row 7" in str(caught.value)
    if pil_messages._libtiff is not None and pil_messages._libtiff.reachable:
        assert "libtiff" in str(caught.value)  # captured while the handler was ours
    assert pil_messages.installed() == [] and warnings.showwarning is before
