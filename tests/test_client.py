"""visionkit.connect: provider choice, missing keys, custom servers, and the key kept secret."""

from __future__ import annotations

import logging
import threading
import warnings

import pandas as pd
import pytest

import visionkit as vk
from tests.test_ask import make_images
from visionkit import offline
from visionkit.query import client as client_module
from visionkit.query.client import GENERIC

SECRET = "sk-live-0123456789-very-secret"


def test_auto_without_a_key_is_the_offline_stand_in_with_one_warning(monkeypatch):
    monkeypatch.delenv("INFERENCE_API_KEY", raising=False)
    monkeypatch.setattr(client_module, "_offline_warned", threading.Event())  # a new process
    with pytest.warns(vk.OfflineWarning, match="describe the pixels only") as record:
        client = vk.connect()
        vk.connect()  # once per process, not once per call site (each notebook cell is one)
        vk.ask(pd.DataFrame({"path": ["datasets/images/coffee.jpg"]}).iloc[:0], "Describe.")
    assert len(record) == 1
    assert client.provider.name == "offline" and client.model == "visionkit-offline"
    assert client.base_url == offline.shared().base_url
    assert client.cache_identity == ("offline", None)  # answers do not depend on the port
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        vk.connect("offline")  # naming it is a choice: no warning


def test_auto_with_a_key_is_inference_net(monkeypatch):
    monkeypatch.setenv("INFERENCE_API_KEY", SECRET)
    client = vk.connect()
    assert client.provider.name == "inference.net"
    assert client.base_url == "https://api.inference.net/v1"
    assert client.model == "google/gemma-3-27b-instruct/bf-16"
    assert client.openai.api_key == SECRET
    assert SECRET not in repr(client) and SECRET not in str(client)


def test_named_provider_without_its_key_names_the_variable(monkeypatch):
    monkeypatch.delenv("INFERENCE_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(vk.MissingAPIKey, match="set the INFERENCE_API_KEY environment variable"):
        vk.connect("inference.net")
    with pytest.raises(vk.MissingAPIKey, match="OPENAI_API_KEY"):
        vk.connect("openai")
    assert vk.connect("openai", api_key=SECRET).provider.name == "openai"


def test_custom_base_url_gets_the_generic_rules_and_never_an_env_key(monkeypatch):
    monkeypatch.setenv("INFERENCE_API_KEY", SECRET)
    client = vk.connect(base_url="http://127.0.0.1:8000/v1", model="Qwen/Qwen2.5-VL-7B")
    assert client.provider is GENERIC and client.provider.max_images == 2
    assert client.openai.api_key != SECRET  # inference.net's key is not sent elsewhere
    assert client.model == "Qwen/Qwen2.5-VL-7B"
    same = vk.connect(base_url="https://api.inference.net/v1/", api_key="k")
    assert same.provider.name == "inference.net"  # a known URL keeps its profile
    proxy = vk.connect("inference.net", base_url="http://proxy.local/v1")
    assert proxy.openai.api_key == SECRET and proxy.provider.name == "inference.net"


def test_a_server_without_model_name_is_asked_for_its_model(tmp_path):
    frame = pd.DataFrame({"path": make_images(tmp_path / "i", 2)})
    with offline.serve(model="my-vlm", api_key=None) as url:
        url.server.model_list = lambda: [{"id": "my-vlm", "object": "model"}]
        client = vk.connect(base_url=url)
        assert client.model is None
        result = frame.vision.ask("Describe.", client=client, cache=False, progress=False)
        assert result["error"].isna().all()
        assert result.attrs["usage"]["model"] == "my-vlm"


def test_key_never_reaches_logs_errors_or_repr(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)  # including the openai and httpx loggers
    frame = pd.DataFrame({"path": make_images(tmp_path / "i", 3)})
    with offline.serve(api_key=SECRET) as url:
        client = vk.connect("offline", base_url=url, api_key=SECRET)
        result = frame.vision.ask(
            "Describe.", client=client, cache=tmp_path / "c.sqlite", progress=False
        )
    assert result["error"].isna().all()
    assert SECRET not in caplog.text
    assert SECRET not in repr(client) and SECRET not in result.to_string()
    assert SECRET not in repr(result.attrs)
    for part in tmp_path.glob("c.sqlite*"):  # the database, its WAL and shared memory
        assert SECRET.encode() not in part.read_bytes()
