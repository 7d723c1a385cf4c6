"""``connect``: an ``openai.AsyncOpenAI`` client plus the provider rules and model it serves.

Usage:

    import visionkit as vk
    client = vk.connect()                       # inference.net if INFERENCE_API_KEY is set,
                                                # else the offline stand-in (with a warning)
    client = vk.connect("inference.net")        # MissingAPIKey names INFERENCE_API_KEY if unset
    client = vk.connect(base_url="http://127.0.0.1:8000/v1", model="Qwen/Qwen2.5-VL-7B-Instruct")

How the provider profile is chosen:

- a provider name (or a ``Provider``) uses that profile; ``base_url=`` then only moves it (a
  proxy), and the key comes from ``api_key=`` or the profile's environment variable;
- ``"auto"`` with ``base_url=`` uses the registered profile with that base URL if there is one,
  else the generic ``"openai-compatible"`` profile: inference.net's conservative rules (data URIs,
  png/jpeg/webp/gif, body under 1 MB, 2 images) so a request that passes them suits any
  server, with no default model (``ask`` asks the server's ``/models`` and uses the only
  one it serves). Such a client never picks up a provider's key from the environment: a key
  meant for inference.net is not sent to an arbitrary URL. Pass ``api_key=`` if the server
  wants one, or name a profile (``vk.connect("openai", base_url=...)``) to use its rules.

The key is kept only inside the ``AsyncOpenAI`` object: ``repr(client)``, errors and log lines
show the provider, URL and model, never the key.

Credentials inside ``base_url`` (``https://user:token@host/v1``, ``?api-key=...``; see
``visionkit.redact``) are taken out of the URL before the SDK client is built: the user and
password go as HTTP Basic auth (what curl, requests and httpx send for them; together with an
API key, which would need the same ``Authorization`` header, ``connect`` refuses up front), the
query parameters as the SDK's ``default_query``, so no URL httpx, aiohttp or the SDK logs holds
them. ``client.base_url`` (and the batch manifest) shows them as ``***``; cache keys and
recordings name the server by its URL without them, so a new token keeps the cached answers.

HTTP transport: when the SDK's aiohttp transport is installed (``pip install
'visionkit[aiohttp]'``, which pulls ``openai[aiohttp]``), ``ask`` sends through
``openai.DefaultAioHttpClient`` instead of the SDK's default httpx stack: on the benchmark
machine (2 cores) it cost 2.5 ms of client CPU per request against 3.5 ms for httpx (-28 %),
which is what stands between a 400-row, concurrency-32 run and its ideal time. Each run builds
its own HTTP client inside the event loop that uses it (an aiohttp session is bound to its loop)
and closes it when the run ends. ``connect(transport="httpx")`` opts out; an ``http_client=``
you pass is used as it is (and left open: it is yours), so it must work in the loop the run
uses -- one per ``ask`` call, or yours with ``ask_async``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._state import register
from ..errors import MissingAPIKey, OfflineWarning, warn
from ..providers import DEFAULT_PROVIDER, Provider, RateLimits, get_provider, providers
from ..redact import install_log_filter, public_url, redact_url, split_url
from .replay import RECORD_ENV, REPLAY_ENV, Recording, ci_default

if TYPE_CHECKING:
    import httpx2  # the openai SDK's HTTP library (its fork of httpx)
    import openai
    from openai import OpenAI as SyncOpenAI

__all__ = [
    "Client",
    "OfflineWarning",
    "Session",
    "aiohttp_available",
    "cache_identity",
    "connect",
    "discover_model",
    "rate_limits",
    "raw_response",
]

logger = logging.getLogger("visionkit")

NO_KEY = "no-key-needed"  # the SDK insists on some key; servers that want none ignore it


@dataclass(frozen=True, repr=False, eq=False, kw_only=True)
class Client:
    """An ``openai.AsyncOpenAI`` client (``.openai``) with its provider profile and model.

    ``ask`` copies ``.openai`` for each run (its own connection pool and event loop, SDK
    retries off: visionkit retries adaptively itself); use ``.openai`` directly for anything
    else the SDK offers.
    """

    openai: openai.AsyncOpenAI
    provider: Provider
    model: str | None
    base_url: str
    # "aiohttp", "httpx", or "custom" (the caller's http_client). Left out of the repr: it
    # depends on what is installed, and the tutorials' stored outputs must not.
    transport: str = "httpx"
    # Known limits ``ask`` paces to from the first request (``connect(tier=...)`` or
    # ``requests_per_minute=``/``tokens_per_minute=``); ``None``: adapt to 429s only.
    rate_limits: RateLimits | None = None
    # Record answers to, or replay them from, a store (``visionkit.query.replay``).
    recording: Recording | None = None
    # Where the provider's Batch API (files, batches) lives: its profile's batch URL, or the
    # same server for a custom base_url (``connect(..., batch_base_url=...)`` overrides).
    batch_base_url: str | None = None
    # The batch URL as given (with its credentials) and the SDK options that carry them:
    # private, never shown (the fields above hold the URLs with credentials masked).
    _batch_url: str | None = dataclasses.field(default=None, compare=False)
    _batch_options: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False)

    def batch_sdk(self, **sdk_options: Any) -> SyncOpenAI:
        """A synchronous ``openai.OpenAI`` on ``batch_base_url`` with this client's key (for
        batch jobs: uploads, batches, downloads). Raises ``ValueError`` without a batch URL."""
        import openai

        if not self.batch_base_url:
            raise ValueError(
                f"provider {self.provider.name!r} has no Batch API in its profile; pass "
                "connect(..., batch_base_url=...) if the server has one"
            )
        sdk = self.openai
        base, _, _ = split_url(self._batch_url or self.batch_base_url)
        return openai.OpenAI(
            api_key=sdk.api_key,
            base_url=base,
            organization=sdk.organization,
            project=sdk.project,
            **{**self._batch_options, **sdk_options},
        )

    def http_client(self) -> httpx2.AsyncClient | None:
        """A fresh HTTP client for one run (create it inside the loop that will use it), or
        ``None`` when the caller gave their own ``http_client`` (then the SDK's is used as is)."""
        import openai

        if self.transport == "custom":
            return None
        if self.transport == "aiohttp":
            return openai.DefaultAioHttpClient()
        return openai.DefaultAsyncHttpxClient()

    @property
    def cache_identity(self) -> tuple[str, str | None]:
        """(provider name, base URL) for cache keys; the offline stand-in's port is left out."""
        return cache_identity(self.provider, self.base_url)

    def with_model(self, model: str | None) -> Client:
        """The same connection asking ``model`` (``None`` keeps the current one)."""
        if model is None or model == self.model:
            return self
        return dataclasses.replace(self, model=model)

    def __repr__(self) -> str:
        return (
            f"Client(provider={self.provider.name!r}, base_url={self.base_url!r}, "
            f"model={self.model!r})"
        )


@functools.cache
def raw_response() -> dict[str, Any]:
    """Request options asking the SDK for the raw response (headers, then ``.parse()``), as its
    ``with_raw_response`` does; the low-level ``post`` a run sends through takes them.
    ``openai._constants`` is private, so its value is the fallback."""
    try:
        from openai._constants import RAW_RESPONSE_HEADER as name
    except ImportError:  # pragma: no cover - an SDK that moved it
        name = "X-Stainless-Raw-Response"
    return {"headers": {name: "true"}}


class Session:
    """The SDK client one run sends through: SDK retries off (the run retries itself), the
    call's timeout, and a fresh HTTP client made on first use -- inside the run's event loop,
    as an aiohttp session is bound to its loop -- and closed by ``close``. A caller's own
    ``http_client`` is used as it is and left open."""

    def __init__(self, client: Client, timeout: float | None) -> None:
        self.client = client
        self.timeout = timeout
        self._sdk: Any = None
        self._owned = False

    def sdk(self) -> Any:
        if self._sdk is None:
            http_client = self.client.http_client()
            sdk = self.client.openai
            if http_client is None:
                self._sdk = sdk.with_options(max_retries=0, timeout=self.timeout)
            else:
                self._sdk = sdk.copy(max_retries=0, timeout=self.timeout, http_client=http_client)
                self._owned = True
        return self._sdk

    async def close(self) -> None:
        if self._owned:
            await self._sdk.close()


def cache_identity(provider: Provider, base_url: str | None) -> tuple[str, str | None]:
    """What names a server in cache keys: the profile name and the base URL without a
    trailing slash -- except the offline stand-in, whose answers do not depend on its port."""
    if provider.name == "offline":
        return ("offline", None)
    return (provider.name, _norm(base_url))


GENERIC = providers[DEFAULT_PROVIDER].derive(
    name="openai-compatible",
    base_url=None,
    api_key_env=None,
    default_model=None,
    batch=None,  # whether an arbitrary server has a Batch API is not known
    notes="any OpenAI-compatible server: inference.net's conservative rules, no default model",
)


def aiohttp_available() -> bool:
    """Whether the SDK's aiohttp transport (``openai.DefaultAioHttpClient``) can be used."""
    import openai

    cls = getattr(openai, "DefaultAioHttpClient", None)
    if cls is None:  # an SDK from before the transport existed
        return False
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        return False
    # Without a usable aiohttp the SDK substitutes a class that raises on construction.
    return "Missing" not in cls.__name__


def _transport(transport: str, client_options: dict[str, Any]) -> str:
    if transport not in ("auto", "aiohttp", "httpx"):
        raise ValueError(f"transport must be 'auto', 'aiohttp' or 'httpx', not {transport!r}")
    if client_options.get("http_client") is not None:
        if transport != "auto":
            raise ValueError("pass either http_client=... or transport=..., not both")
        return "custom"
    if transport == "auto":
        return "aiohttp" if aiohttp_available() else "httpx"
    if transport == "aiohttp" and not aiohttp_available():
        raise ImportError(
            "transport='aiohttp' needs the SDK's aiohttp transport: "
            "pip install 'visionkit[aiohttp]' (or 'openai[aiohttp]')"
        )
    return transport


def _norm(url: str | None) -> str | None:
    """A base URL as it names a server: without credentials or a trailing slash."""
    return public_url(url)


def _offline_server() -> tuple[str, str]:
    """Base URL and key of this process's shared offline server (started on first use)."""
    from .. import offline

    server = offline.shared()
    return server.base_url, server.api_key or NO_KEY


def offline_notice(
    url: str,
    how: str = "Set INFERENCE_API_KEY, or call vk.connect('inference.net', api_key=...), for a "
    "real vision model.",
) -> str:
    """What ``connect("auto")`` says when it falls back to the offline stand-in; ``how`` says
    how to get a real model (the command line has its own way)."""
    return (
        f"INFERENCE_API_KEY is not set, so visionkit uses the offline stand-in at {url}. Its "
        "answers describe the pixels only (size, format, colours, brightness), not what the "
        f"image shows. {how}"
    )


def resolve_profile(provider: str | Provider = "auto", *, base_url: str | None = None) -> Provider:
    """The profile ``connect`` would use, without connecting, starting servers or reading keys."""
    if isinstance(provider, Provider):
        return provider
    if provider == "auto":
        if base_url is not None:
            for p in providers.values():
                if p.base_url and _norm(p.base_url) == _norm(base_url):
                    return p
            return GENERIC
        return providers[DEFAULT_PROVIDER if os.environ.get("INFERENCE_API_KEY") else "offline"]
    return get_provider(provider)


def connect(
    provider: str | Provider = "auto",
    *,
    api_key: str | None = None,
    base_url: str | None = None,
    model: str | None = None,
    transport: str = "auto",
    tier: str | None = None,
    requests_per_minute: float | None = None,
    tokens_per_minute: float | None = None,
    record: str | os.PathLike[str] | None = None,
    replay: str | os.PathLike[str] | None = None,
    strict: bool | None = None,
    batch_base_url: str | None = None,
    **client_options: Any,
) -> Client:
    """Connect to a vision provider through the ``openai`` SDK's ``AsyncOpenAI``.

    ``provider``: ``"auto"`` (inference.net when ``INFERENCE_API_KEY`` is set, else the offline
    stand-in, with one ``OfflineWarning`` per process saying its answers describe pixels only),
    a name in ``visionkit.providers`` or a ``Provider``. ``base_url=`` and ``api_key=`` reach any
    OpenAI-compatible server. ``client_options`` go to ``AsyncOpenAI`` (``timeout``,
    ``default_headers``, ``organization``, ``http_client``, ...). Raises ``MissingAPIKey``
    naming the environment variable when a named provider's key is unset.

    ``transport``: the HTTP stack ``ask`` sends through: ``"auto"`` (the SDK's aiohttp
    transport when installed, else httpx), ``"aiohttp"`` or ``"httpx"``. An ``http_client=``
    of your own is used instead, as it is (see the module docstring).

    Known rate limits, paced from the first request (``visionkit.query.pacing``): ``tier=``
    names one of the profile's documented tiers (inference.net: ``"free"``, 30 requests a
    minute; ``"paid"``, 250); ``requests_per_minute=`` / ``tokens_per_minute=`` give (or
    override) the numbers. Without them ``ask`` starts at ``concurrency`` and slows down on 429s.

    Record and replay (``visionkit.query.replay``), for notebooks in CI: ``record="answers/"``
    (or ``VISIONKIT_RECORD``) also writes every answer a run uses to that store;
    ``replay="answers/"`` (or ``VISIONKIT_REPLAY``) answers every request from it, under the
    provider identity it was recorded with, sending nothing and needing no key. ``strict``
    (default: ``True`` when the ``CI`` variable is set) makes a request that was never
    recorded raise ``ReplayError`` instead of being that row's error.

    ``batch_base_url``: where batch jobs (``df.vision.submit``) upload files and create
    batches: by default the profile's batch URL (``https://batch.inference.net/v1`` for
    inference.net), or the same server when ``base_url=`` was given or the profile names none.
    """
    import openai

    if isinstance(provider, Client):
        return provider.with_model(model)
    kind = _transport(transport, client_options)
    record = record if record is not None else (os.environ.get(RECORD_ENV) or None)
    replay = replay if replay is not None else (os.environ.get(REPLAY_ENV) or None)
    if record and replay:
        raise ValueError(
            f"record= and replay= cannot both be on (check {RECORD_ENV} and {REPLAY_ENV})"
        )
    if replay:
        strict = ci_default() if strict is None else strict
        store = Recording(Path(replay), "replay", strict=strict)
        return _replay_client(store, provider, base_url, model, kind, client_options)
    profile = resolve_profile(provider, base_url=base_url)
    limits = rate_limits(profile, tier, requests_per_minute, tokens_per_minute)
    auto = provider == "auto"
    if profile.name == "offline":
        if base_url is None:
            url, key = _offline_server()
            key = api_key or key
        else:
            url, key = base_url, api_key or "offline"
        if auto and not _offline_warned.is_set():
            _offline_warned.set()  # once per process: each notebook cell is a new location
            # names the user's line, also when ask() or evaluate() connected for them
            warn(f"visionkit: {offline_notice(url)}", OfflineWarning)
    else:
        named_url = base_url or profile.base_url
        if not named_url:
            raise ValueError(
                f"provider {profile.name!r} has no base_url; pass connect(..., base_url=...)"
            )
        url = named_url
        if api_key:
            key = api_key
        elif profile.api_key_env and not (auto and base_url is not None):
            key = os.environ.get(profile.api_key_env, "")
            if not key:
                raise MissingAPIKey(
                    f"provider {profile.name!r} needs an API key: set the "
                    f"{profile.api_key_env} environment variable or pass api_key=..."
                )
        else:
            key = NO_KEY
    explicit_key = bool(api_key) or key not in (NO_KEY, "offline")
    sdk_url, sdk_options = _live_options(url, client_options, explicit_key)
    sdk = openai.AsyncOpenAI(api_key=key, base_url=sdk_url, **sdk_options)
    if batch_base_url is None:
        profile_batch = profile.batch.base_url if profile.batch is not None else None
        batch_base_url = url if base_url is not None or not profile_batch else profile_batch
    if batch_base_url == url:
        batch_options = sdk_options
    else:
        batch_options = _live_options(batch_base_url, {}, explicit_key)[1]
    install_log_filter()
    return Client(
        openai=sdk,
        provider=profile,
        model=model or profile.default_model,
        base_url=redact_url(url),
        transport=kind,
        rate_limits=limits,
        recording=_recording(record),
        batch_base_url=redact_url(batch_base_url) if batch_base_url else batch_base_url,
        _batch_url=batch_base_url,
        _batch_options=_credential_options(batch_options),
    )


def _live_options(
    url: str, client_options: dict[str, Any], explicit_key: bool
) -> tuple[str, dict[str, Any]]:
    """The SDK's base URL and options for ``url``: its credentials (``visionkit.redact``) move
    out of the URL -- userinfo into a Basic ``Authorization`` header, query parameters into
    ``default_query`` -- so no URL the SDK, httpx or aiohttp logs or raises holds them (and
    aiohttp refuses credentials in a URL next to an ``Authorization`` header)."""
    base, query, authorization = split_url(url)
    options = dict(client_options)
    if query:
        options["default_query"] = {**query, **dict(options.get("default_query") or {})}
    if authorization is not None:
        headers = dict(options.get("default_headers") or {})
        if explicit_key or any(k.lower() == "authorization" for k in headers):
            raise ValueError(
                f"{redact_url(url)} carries a user name and password, which are sent as HTTP "
                "Basic auth in the Authorization header; an API key (api_key= or the "
                "provider's key variable) or an Authorization header of your own would need "
                "the same header. Keep one: drop the user:password@ part of the URL, or "
                "connect without the key."
            )
        options["default_headers"] = {**headers, "Authorization": authorization}
    return base, options


def _credential_options(options: dict[str, Any]) -> dict[str, Any]:
    """The parts of ``options`` that carry credentials to a second (batch) SDK client."""
    return {k: options[k] for k in ("default_headers", "default_query") if options.get(k)}


def _recording(record: str | os.PathLike[str] | None) -> Recording | None:
    """The store to record into, read now: a ``ReplayWarning`` about it names the caller."""
    if not record:
        return None
    store = Recording(Path(record), "record")
    store.check()
    return store


REPLAY_URL = "http://replay.invalid/v1"  # never contacted: a replaying run sends nothing


def _replay_client(
    store: Recording,
    provider: str | Provider,
    base_url: str | None,
    model: str | None,
    transport: str,
    client_options: dict[str, Any],
) -> Client:
    """A client answering from ``store`` under the identity its answers were recorded with."""
    import openai

    found = store.identities()
    name = provider.name if isinstance(provider, Provider) else provider
    candidates = found if name == "auto" else [i for i in found if i[0] == name]
    if base_url is not None and len(candidates) > 1:
        candidates = [i for i in candidates if i[1] == _norm(base_url)] or candidates
    if len(candidates) != 1:
        listed = ", ".join(f"{p} at {u or 'the offline stand-in'}" for p, u in found) or "none"
        wanted = "any provider" if name == "auto" else repr(name)
        raise ValueError(
            f"cannot replay {wanted} from {store.file}: it holds answers from {listed}. "
            + (
                "Name the provider (and base_url=) to replay."
                if len(candidates) > 1
                else "Record this provider first (VISIONKIT_RECORD=...)."
            )
        )
    recorded_name, recorded_url = candidates[0]
    profile = provider if isinstance(provider, Provider) else replay_profile(recorded_name)
    if model is None and profile.default_model is None:
        models = store.models(recorded_name)
        model = models[0] if len(models) == 1 else None
    client_options = {k: v for k, v in client_options.items() if k != "http_client"}
    sdk = openai.AsyncOpenAI(
        api_key="replay", base_url=recorded_url or REPLAY_URL, **client_options
    )
    return Client(
        openai=sdk,
        provider=profile,
        model=model or profile.default_model,
        base_url=recorded_url or REPLAY_URL,
        transport="httpx" if transport == "custom" else transport,
        recording=store,
    )


def replay_profile(name: str) -> Provider:
    """The profile a recording made under ``name`` replays with: the registered one; the
    generic profile for a recording made against a custom ``base_url`` (``"openai-compatible"``,
    which is not registered); for a ``Provider`` that was never registered in this process,
    the generic rules under its name (the name is part of every cache key, the rules are not;
    pass the ``Provider`` to ``connect`` to replay under its own rules)."""
    if name in providers:
        return providers[name]
    if name == GENERIC.name:
        return GENERIC
    return GENERIC.derive(name=name, notes=f"replayed: {name!r} is not a registered profile")


def rate_limits(
    profile: Provider,
    tier: str | None = None,
    requests_per_minute: float | None = None,
    tokens_per_minute: float | None = None,
    base: RateLimits | None = None,
) -> RateLimits | None:
    """The limits to pace to: ``base`` (or the profile's ``tier``), overridden by the numbers
    given; ``None`` when nothing is known."""
    if tier is not None:
        if tier not in profile.tiers:
            known = ", ".join(map(repr, profile.tiers)) or "none documented"
            raise ValueError(
                f"{profile.name} has no tier {tier!r} (tiers: {known}); pass "
                "requests_per_minute= (and tokens_per_minute=) for your account's limits"
            )
        base = profile.tiers[tier]
    if requests_per_minute is None and tokens_per_minute is None:
        return base
    base = base or RateLimits()
    return RateLimits(
        requests_per_minute=(
            requests_per_minute if requests_per_minute is not None else base.requests_per_minute
        ),
        tokens_per_minute=(
            tokens_per_minute if tokens_per_minute is not None else base.tokens_per_minute
        ),
    )


_default_lock = threading.Lock()
_offline_warned = threading.Event()
_default: dict[str, Client] = {}


def default_client() -> Client:
    """``connect()`` made once per process (and again if ``INFERENCE_API_KEY``,
    ``VISIONKIT_RECORD`` or ``VISIONKIT_REPLAY`` change)."""
    env = (os.environ.get(name, "") for name in ("INFERENCE_API_KEY", RECORD_ENV, REPLAY_ENV))
    state = hashlib.sha256("\0".join(env).encode()).hexdigest()
    with _default_lock:
        client = _default.get(state)
        if client is None:
            client = _default[state] = connect("auto")
        return client


async def discover_model(sdk: Any) -> str:
    """The one model a server serves (for ``connect(base_url=...)`` without ``model=``)."""
    page = await sdk.models.list()
    ids = [m.id for m in page.data]
    if len(ids) == 1:
        logger.info("using the server's only model %r", ids[0])
        return str(ids[0])
    raise ValueError(
        f"the server serves {len(ids)} models ({', '.join(ids[:10]) or 'none'}); "
        "pass model=... to ask() or connect()"
    )


def _held_clients() -> tuple[int, str]:
    with _default_lock:
        clients = list(_default.values())
    return len(clients), "; ".join(repr(c) for c in clients)


def _forget_clients() -> None:
    with _default_lock:
        _default.clear()
    _offline_warned.clear()


register("default clients", __name__, _held_clients, _forget_clients)
