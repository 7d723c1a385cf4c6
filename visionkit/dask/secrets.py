"""Credentials to the workers without putting them in a task graph, a log or the dashboard.

A task's arguments are pickled into the graph, held by the scheduler, listed by
``client.run_on_scheduler`` and shown in error reports, so the API key and secret
``storage_options`` never go into one. Instead:

- ``ClientSpec`` (what a task carries) names the provider, base URL (without credentials: a
  ``user:token@`` or ``?api-key=`` travels with the key), model, transport, known
  rate limits and a random ``secret_id`` -- never the key;
- the key and storage options travel once in a ``distributed.WorkerPlugin`` (``_Secrets``),
  which the scheduler keeps (pickled, in memory) and installs on every worker, including those
  that join or are restarted later (so a task Dask retries on a fresh worker still has them);
  its ``repr`` shows only the names of what it carries. The comm between client, scheduler
  and workers is the cluster's own (TLS when the cluster is configured with it).
- On a worker, ``ClientSpec.connect()`` looks the key up in this process's registry and makes a
  ``vk.connect(...)`` client once per process.

Workers on a LocalCluster inherit the client's environment, so a key in ``INFERENCE_API_KEY``
would reach them anyway; on a real cluster it would not, which is why the key is shipped.
"""

from __future__ import annotations

import dataclasses
import threading
import uuid
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

from .._state import register
from ..providers import Provider, RateLimits
from ..query.client import Client
from ..redact import public_url

__all__ = ["ClientSpec", "client_spec", "share_client", "share_storage_options"]

_REGISTRY: dict[str, dict[str, Any]] = {}  # secret_id -> {"api_key": ..., ...} (worker side)
_CLIENTS: dict[tuple[Any, ...], Client] = {}
_LOCK = threading.Lock()
_IDS: weakref.WeakKeyDictionary[Client, str] = weakref.WeakKeyDictionary()


class _Secrets(WorkerPlugin):
    """Carries secrets to every worker (present and future); its repr names no value."""

    idempotent = False

    def __init__(
        self,
        name: str,
        clients: Mapping[str, Mapping[str, Any]] | None = None,
        storage: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self.name = name
        self._clients = dict(clients or {})
        self._storage = dict(storage or {})

    def setup(self, worker: Any) -> None:
        install(self._clients, self._storage)

    def __repr__(self) -> str:
        return (
            f"<visionkit secrets: clients {sorted(self._clients)}, storage {sorted(self._storage)}>"
        )


def install(
    clients: Mapping[str, Mapping[str, Any]], storage: Mapping[str, Mapping[str, Any]]
) -> None:
    """Put secrets into this process's registry (a worker plugin's ``setup``)."""
    from ..images.remote import set_storage_options

    with _LOCK:
        _REGISTRY.update({k: dict(v) for k, v in clients.items()})
    for prefix, options in storage.items():
        set_storage_options(prefix, dict(options))


@dataclass(frozen=True)
class ClientSpec:
    """How a worker connects like the caller's ``Client``, minus the key (see module doc)."""

    provider: Provider
    base_url: str
    model: str | None
    transport: str
    rate_limits: RateLimits | None
    secret_id: str
    replay: tuple[str, bool] | None = None  # (store path, strict)

    @property
    def gate_name(self) -> str:
        """One gate per provider account as far as this cluster can tell: the provider, URL
        and the key's random id (two calls with one ``Client`` share it)."""
        return f"{self.provider.name}|{self.base_url}|{self.secret_id}"

    def planner(self) -> Client:
        """A ``Client`` that plans rows as the caller's does (provider, URL and model make the
        cache key) and holds no key: batch files are written on the workers, but only the
        caller's process uploads them, so the key need not reach the workers at all."""
        import openai

        from ..query.client import NO_KEY

        return Client(
            openai=openai.AsyncOpenAI(api_key=NO_KEY, base_url=self.base_url),
            provider=self.provider,
            model=self.model,
            base_url=self.base_url,
            transport=self.transport,
            rate_limits=self.rate_limits,
        )

    def connect(self) -> Client:
        """This process's ``Client`` for the spec (made once per process)."""
        from ..query.client import connect

        key = (self.secret_id, self.model, self.base_url, self.replay)
        with _LOCK:
            found = _CLIENTS.get(key)
            secret = _REGISTRY.get(self.secret_id)
        if found is not None:
            return found
        if self.replay is not None:
            path, strict = self.replay
            client = connect(self.provider, model=self.model, replay=path, strict=strict)
        else:
            if secret is None:
                raise RuntimeError(
                    "this worker has not received the client's credentials (the visionkit "
                    "secrets plugin is missing; was the Client registered with this scheduler?)"
                )
            client = connect(
                self.provider,
                api_key=secret["api_key"],
                base_url=self.base_url,
                model=self.model,
                transport=self.transport if self.transport != "custom" else "auto",
                default_headers=secret.get("headers") or None,
                default_query=secret.get("query") or None,
            )
            if self.rate_limits is not None:
                client = dataclasses.replace(client, rate_limits=self.rate_limits)
        with _LOCK:
            _CLIENTS[key] = client
        return client


def _secret_id(client: Client) -> str:
    with _LOCK:
        found = _IDS.get(client)
        if found is None:
            found = _IDS[client] = uuid.uuid4().hex[:16]
        return found


def client_spec(client: Client) -> ClientSpec:
    """A ``ClientSpec`` for ``client`` (nothing is shared: see ``share_client``)."""
    recording = client.recording
    if recording is not None and not recording.replaying:
        raise ValueError(
            "recording (connect(record=...)) runs in one process: record with df.vision.ask, "
            "then replay on the cluster with connect(replay=...)"
        )
    sid = _secret_id(client)
    replay = (str(Path(recording.path).resolve()), recording.strict) if recording else None
    # The URL without its credentials: they travel with the key (share_client), not in tasks.
    url = public_url(client.base_url) or client.base_url
    spec = ClientSpec(client.provider, url, client.model, client.transport, client.rate_limits, sid)
    return dataclasses.replace(spec, replay=replay)


def share_client(dask_client: Any, client: Client) -> ClientSpec:
    """A ``ClientSpec`` for ``client``; its key goes to every worker in a plugin, once."""
    spec = client_spec(client)
    sid, recording = spec.secret_id, client.recording
    if recording is None:
        sdk = client.openai
        headers = {
            k: v
            for k, v in dict(getattr(sdk, "_custom_headers", {}) or {}).items()
            if isinstance(v, str)
        }
        query = {
            k: v
            for k, v in dict(getattr(sdk, "_custom_query", {}) or {}).items()
            if isinstance(v, str)
        }
        secrets = {sid: {"api_key": sdk.api_key, "headers": headers, "query": query}}
        _register(dask_client, _Secrets(f"visionkit-secrets-{sid}", clients=secrets))
    return spec


def share_storage_options(dask_client: Any) -> None:
    """Every fsspec ``storage_options`` this process remembers (``read_images(...,
    storage_options=)``, ``vk.set_storage_options``) to every worker, by plugin."""
    from ..images import remote

    with remote._OPTIONS_LOCK:
        storage = {k: dict(v) for k, v in remote._OPTIONS.items()}
    if not storage:
        return
    digest = uuid.uuid5(uuid.NAMESPACE_OID, repr(sorted(storage.items()))).hex[:16]
    _register(dask_client, _Secrets(f"visionkit-storage-{digest}", storage=storage))


_REGISTERED: set[tuple[str, str]] = set()


def _register(dask_client: Any, plugin: _Secrets) -> None:
    """Register ``plugin`` with the scheduler once per client (it then reaches new workers)."""
    mark = (str(dask_client.id), plugin.name)
    if mark in _REGISTERED:
        return
    dask_client.register_plugin(plugin)
    _REGISTERED.add(mark)


def _held_secrets() -> tuple[int, str]:
    with _LOCK:
        secrets, clients = len(_REGISTRY), len(_CLIENTS)
    return secrets + clients, (
        f"{secrets} shared key/option sets (worker side), {clients} clients, "
        f"{len(_REGISTERED)} plugins registered"
    )


register("dask keys and clients", __name__, _held_secrets)  # a running cluster needs them
