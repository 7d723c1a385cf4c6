"""Provider profiles: each provider's documented limits and token formula, as plain data.

``visionkit.providers`` is the registry; ``register_provider`` adds your own, e.g. for a local
vLLM or Ollama server, most simply derived from a profile whose rules it shares:

    vk.register_provider(vk.get_provider("inference.net").derive(
        name="my-vllm", base_url="http://127.0.0.1:8000/v1", api_key_env=None,
        max_images=4, default_model="Qwen/Qwen2.5-VL-7B-Instruct"))

``DEFAULT_PROVIDER`` ("inference.net") is what every ``provider=`` default names.

Prices: a profile's ``prices`` maps model names to a ``Price`` (US dollars per million tokens
in and out, and the Batch API's discount), each default with its source and date beside it.
Where a model's price is known, usage, dry runs, budgets and plots show money as well as
tokens; set or correct one with ``vk.set_price(provider, model, input=..., output=...)``.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, overload

from . import tokens as _tokens
from ._state import register
from .errors import ImageError
from .tokens import TokenCount, fit_within

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

__all__ = [
    "DEFAULT_PROVIDER",
    "BatchLimits",
    "Price",
    "Provider",
    "RateLimits",
    "estimate_tokens",
    "fit_tokens",
    "floor_side",
    "get_provider",
    "money",
    "money_fields",
    "price_of",
    "providers",
    "register_provider",
    "same_tokens_size",
    "set_price",
]

TokenFunction = Callable[[Any, Any], "TokenCount"]


@dataclass(frozen=True)
class RateLimits:
    """An account's documented request limits (``None``: not documented, not paced)."""

    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None


@dataclass(frozen=True)
class Price:
    """What one model costs: US dollars per million ``input`` (prompt, images included) and
    ``output`` (completion) tokens, and the Batch API's ``batch_discount`` (0.5: half price).

    ``source`` says where the figures come from and when they were read: prices change, so
    check a default before a large job and correct it with ``vk.set_price``.
    """

    input: float
    output: float
    batch_discount: float = 0.0
    source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        for name in ("input", "output"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(
                    f"Price.{name} must be a number >= 0 (USD per 1M tokens), not {value!r}"
                )
        d = self.batch_discount
        if isinstance(d, bool) or not isinstance(d, (int, float)) or not 0 <= d < 1:
            raise ValueError(
                f"batch_discount must be a fraction in [0, 1) (0.5: half price), not {d!r}"
            )

    def cost(
        self, prompt_tokens: float, completion_tokens: float = 0, *, batch: bool = False
    ) -> float:
        """US dollars for these tokens (through the Batch API when ``batch``)."""
        usd = (prompt_tokens * self.input + completion_tokens * self.output) / 1_000_000
        return usd * (1 - self.batch_discount) if batch else usd


@dataclass(frozen=True)
class BatchLimits:
    """A provider's Batch API (OpenAI's shape: upload a JSONL file, create a batch, download).

    ``base_url`` is where the Files and Batches endpoints live (``None``: the provider's own
    ``base_url``). ``max_file_bytes`` and ``max_requests_per_file`` cap one input file;
    ``upload_interval`` is the seconds to leave between two file uploads. Where the provider's
    docs disagree with each other, the conservative value is the default: pass your own
    ``BatchLimits`` (``dataclasses.replace``) when your account has been told otherwise.
    """

    base_url: str | None = None
    max_file_bytes: int | None = None
    max_requests_per_file: int | None = None
    upload_interval: float = 0.0
    completion_window: str = "24h"
    endpoint: str = "/v1/chat/completions"
    notes: str = field(default="", compare=False)


@dataclass(frozen=True, kw_only=True)
class Provider:
    """One OpenAI-compatible vision endpoint and the rules it documents.

    ``max_body_bytes`` is exclusive: a request body must be *smaller* than it. ``None`` means
    no documented limit. ``max_side`` is the longest side past which the token estimate stops
    growing; ``encode`` downscales to it by default.
    """

    name: str
    base_url: str | None
    api_key_env: str | None
    formats: tuple[str, ...]
    max_body_bytes: int | None
    max_images: int | None
    tokens: TokenFunction
    default_model: str | None
    max_side: int | None = None
    max_image_bytes: int | None = None
    data_uri_only: bool = True
    notes: str = field(default="", compare=False)
    # Documented rate limits per account tier (``vk.connect(..., tier="paid")`` paces to them).
    tiers: Mapping[str, RateLimits] = field(default_factory=dict, compare=False)
    batch: BatchLimits | None = None  # the Batch API, if the provider has one
    # Known prices by model name (``vk.set_price`` adds or corrects one).
    prices: Mapping[str, Price] = field(default_factory=dict, compare=False)

    def derive(self, **changes: Any) -> Provider:
        """A new profile with ``changes`` (field=value) over this one's rules, e.g. a local
        vLLM server under inference.net's limits:

            vk.register_provider(vk.get_provider("inference.net").derive(
                name="my-vllm", base_url="http://127.0.0.1:8000/v1", api_key_env=None,
                default_model="Qwen/Qwen2.5-VL-7B-Instruct", max_images=4))
        """
        return replace(self, **changes)

    def estimate(self, width: Any, height: Any) -> TokenCount:
        """Estimated image tokens for ``width x height`` (scalar or vectorised)."""
        return self.tokens(width, height)

    def price(self, model: str | None = None) -> Price | None:
        """The known price of ``model`` (default: the profile's ``default_model``), or None."""
        name = model or self.default_model
        return self.prices.get(name) if name else None

    def image_budget(self, images: int | None = None, prompt_allowance: int = 16_384) -> int | None:
        """Bytes one base64 data URI may take so that ``images`` of them and a prompt fit a body.

        With the default of the provider's ``max_images``, the two images inference.net allows
        and a prompt of up to ``prompt_allowance`` bytes of JSON all fit under its 1 MB limit.
        """
        limit = self.max_body_bytes
        per_image = self.max_image_bytes
        if limit is not None:
            n = images or self.max_images or 1
            share = (limit - 1 - prompt_allowance) // n
            per_image = share if per_image is None else min(per_image, share)
        return per_image

    def __repr__(self) -> str:
        return f"Provider(name={self.name!r}, base_url={self.base_url!r})"


class ProviderRegistry(Mapping[str, Provider]):
    """A name -> Provider mapping; ``to_frame()`` shows the rules side by side."""

    def __init__(self) -> None:
        self._items: dict[str, Provider] = {}

    def __getitem__(self, name: str) -> Provider:
        try:
            return self._items[name]
        except KeyError:
            raise KeyError(
                f"unknown provider {name!r}; known providers are {sorted(self._items)} "
                "(add your own with visionkit.register_provider)"
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def register(self, provider: Provider, *, replace: bool = False) -> Provider:
        if provider.name in self._items and not replace:
            raise ValueError(f"provider {provider.name!r} exists; pass replace=True to replace it")
        self._items[provider.name] = provider
        return provider

    def to_frame(self) -> pd.DataFrame:
        import pandas as pd

        rows = [
            {
                "provider": p.name,
                "base_url": p.base_url,
                "api_key_env": p.api_key_env,
                "formats": ", ".join(p.formats),
                "max_body_bytes": p.max_body_bytes,
                "max_images": p.max_images,
                "max_side": p.max_side,
                "tokens_560": p.estimate(560, 560),
                "tokens_1120": p.estimate(1120, 1120),
                "default_model": p.default_model,
            }
            for p in self._items.values()
        ]
        return pd.DataFrame(rows).set_index("provider")

    def price_table(self) -> pd.DataFrame:
        """Every known price: one row per provider and model, with its source and date."""
        import pandas as pd

        rows = [
            {
                "provider": p.name,
                "model": model,
                "input_per_million": price.input,
                "output_per_million": price.output,
                "batch_discount": price.batch_discount,
                "source": price.source,
            }
            for p in self._items.values()
            for model, price in p.prices.items()
        ]
        columns = ["provider", "model", "input_per_million", "output_per_million"]
        columns += ["batch_discount", "source"]
        return pd.DataFrame(rows, columns=columns).set_index(["provider", "model"])

    def __repr__(self) -> str:
        return f"ProviderRegistry({sorted(self._items)})"

    def _repr_html_(self) -> str:
        return self.to_frame()._repr_html_()


providers = ProviderRegistry()


def register_provider(provider: Provider, *, replace: bool = False) -> Provider:
    """Add ``provider`` to ``visionkit.providers`` so every function accepts its name."""
    return providers.register(provider, replace=replace)


def get_provider(provider: str | Provider | None) -> Provider:
    """Resolve a name (or a Provider, returned as is); ``None`` means ``DEFAULT_PROVIDER``."""
    if provider is None:
        return providers[DEFAULT_PROVIDER]
    if isinstance(provider, Provider):
        return provider
    return providers[provider]


DEFAULT_PROVIDER = "inference.net"  # the provider visionkit targets first: every default names it

INFERENCE_NET = register_provider(
    Provider(
        name=DEFAULT_PROVIDER,
        base_url="https://api.inference.net/v1",
        api_key_env="INFERENCE_API_KEY",
        formats=("png", "jpeg", "webp", "gif"),
        max_body_bytes=1_000_000,
        max_images=2,
        tokens=_tokens.inference_net_tokens,
        default_model="google/gemma-3-27b-instruct/bf-16",
        max_side=1120,
        notes="docs.inference.net vision guide: data URIs only, body under 1 MB, 2 images",
        # docs.inference.net/api/rate-limits: requests per minute by account tier (custom
        # teams 500 - 1,000,000 by arrangement; pass requests_per_minute= for those). No
        # tokens-per-minute limit is documented. The gateway also caps any key at 100 req/s.
        tiers={"free": RateLimits(requests_per_minute=30), "paid": RateLimits(250)},
        batch=BatchLimits(
            # docs.inference.net's Batch API page: "Use https://batch.inference.net/v1 for all
            # Batch API requests"; an older page of the same docs says api.inference.net.
            base_url="https://batch.inference.net/v1",
            # Not documented by inference.net; OpenAI's Batch API (whose shape it copies)
            # takes files "up to 200 MB" -- read as 200,000,000 bytes, the smaller reading.
            max_file_bytes=200_000_000,
            # inference.net's pages say 50,000 requests per batch on one and 1,000,000 on
            # another; OpenAI's limit is 50,000. The smaller is the default.
            max_requests_per_file=50_000,
            # docs.inference.net rate limits: "Batch file upload: 1 per minute".
            upload_interval=60.0,
            notes="docs.inference.net Batch API and rate-limits pages; file size from OpenAI",
        ),
        # No default prices: inference.net prices each model in USD per 1M input and output
        # tokens (docs.inference.net, "Serverless deployments": set per deployment), and the
        # seed guide names none. vk.set_price("inference.net", MODEL, input=..., output=...)
        # with the figures from your dashboard makes every table and plot show money.
    )
)

OPENAI = register_provider(
    Provider(
        name="openai",
        base_url="https://api.openai.com/v1",
        api_key_env="OPENAI_API_KEY",
        formats=("png", "jpeg", "webp", "gif"),
        # platform.openai.com/docs/guides/images-vision: up to 50 MB payload, 500 images.
        max_body_bytes=50 * 1024 * 1024,
        max_images=500,
        tokens=functools.partial(_tokens.openai_tokens, detail="high"),
        default_model="gpt-4o-mini",
        max_side=2048,
        data_uri_only=False,
        notes="GPT-4o tile formula, detail=high; non-animated GIF only",
        batch=BatchLimits(
            # The openai SDK's batches.create docs: "up to 50,000 requests ... up to 200 MB".
            max_file_bytes=200_000_000,
            max_requests_per_file=50_000,
            notes="openai SDK docstring of batches.create",
        ),
        # openai.com/api/pricing, USD per 1M tokens; the Batch API costs half
        # (platform.openai.com/docs/guides/batch: "50% cost discount"). gpt-4o-mini bills an
        # image as ~33x the tokens of this profile's GPT-4o formula, so its *reported* prompt
        # tokens (and so its money) are far above the estimate: at these prices an image costs
        # about the same on either model.
        prices={
            "gpt-4o-mini": Price(
                0.15, 0.60, 0.5, source="openai.com/api/pricing, since launch on 2024-07-18"
            ),
            "gpt-4o": Price(
                2.50, 10.00, 0.5, source="openai.com/api/pricing, gpt-4o-2024-08-06 (2024-10-02)"
            ),
        },
    )
)

register_provider(
    OPENAI.derive(
        name="openai-low",
        tokens=functools.partial(_tokens.openai_tokens, detail="low"),
        max_side=512,
        notes="detail=low: a flat 85 tokens at 512 x 512",
    )
)

register_provider(
    Provider(
        name="anthropic",
        # Anthropic's OpenAI SDK compatibility endpoint.
        base_url="https://api.anthropic.com/v1/",
        api_key_env="ANTHROPIC_API_KEY",
        formats=("png", "jpeg", "webp", "gif"),
        # docs.anthropic.com vision: 5 MB per image, 32 MB per request, 100 images per request.
        max_body_bytes=32 * 1024 * 1024,
        max_images=100,
        tokens=_tokens.anthropic_tokens,
        default_model="claude-sonnet-4-5",
        max_side=1568,
        max_image_bytes=5 * 1024 * 1024,
        notes="tokens = w*h/750 after scaling to 1568 px / ~1.15 MP",
        # anthropic.com/pricing, USD per 1M tokens; Message Batches cost half (docs.anthropic.com
        # "Batch processing"), though the OpenAI-compatible endpoint this profile uses has none.
        prices={
            "claude-sonnet-4-5": Price(
                3.00, 15.00, 0.5, source="anthropic.com/pricing, since launch on 2025-09-29"
            ),
        },
    )
)

register_provider(
    INFERENCE_NET.derive(
        name="offline",
        base_url=None,  # set when visionkit.offline starts its server on 127.0.0.1
        api_key_env=None,
        default_model="visionkit-offline",
        notes="the local stand-in: inference.net's rules, answers describe pixels only",
        # The stand-in serves its Batch API on its own base URL, with inference.net's limits.
        batch=replace(INFERENCE_NET.batch, base_url=None) if INFERENCE_NET.batch else None,
    )
)


def price_of(provider: str | Provider | None, model: str | None = None) -> Price | None:
    """The known price of ``model`` under ``provider`` (default model if ``None``), or None.

    The registered profile of that name is asked first, so a price set with ``set_price``
    reaches clients connected before it was set.
    """
    if isinstance(provider, str) and provider not in providers:
        return None  # e.g. "openai-compatible": any server, price unknown
    profile = get_provider(provider)
    registered = providers._items.get(profile.name)
    found = registered.price(model or profile.default_model) if registered is not None else None
    return found if found is not None else profile.price(model)


def set_price(
    provider: str | Provider,
    model: str,
    *,
    input: float,
    output: float,
    batch_discount: float = 0.0,
    source: str = "set with vk.set_price",
) -> Price:
    """Set what ``model`` costs under ``provider``, in US dollars per million tokens.

    From then on usage, dry runs, budgets, evaluations and plots show money for that model:

        vk.set_price("inference.net", "google/gemma-3-27b-instruct/bf-16",
                     input=0.10, output=0.30, batch_discount=0.5, source="my invoice, 2026-03")
    """
    profile = get_provider(provider)
    if not isinstance(model, str) or not model:
        raise ValueError(f"model must be a model name, not {model!r}")
    price = Price(input, output, batch_discount, source=source)
    base = providers._items.get(profile.name, profile)
    register_provider(base.derive(prices={**base.prices, model: price}), replace=True)
    return price


def money(
    provider: str | Provider | None,
    model: str | None,
    prompt_tokens: float,
    completion_tokens: float = 0,
    *,
    batch: bool = False,
) -> float | None:
    """US dollars for these tokens under ``model``'s known price, or None (price unknown)."""
    price = price_of(provider, model)
    if price is None:
        return None
    return price.cost(prompt_tokens, completion_tokens, batch=batch)


def money_fields(
    provider: str | Provider | None,
    model: str | None,
    prompt_tokens: float,
    completion_tokens: float = 0,
    *,
    batch: bool = False,
    name: str = "cost_usd",
) -> dict[str, float]:
    """``{name: dollars}`` for a usage dict when the price is known, else ``{}``: usage shows
    money where prices are known and tokens only otherwise."""
    usd = money(provider, model, prompt_tokens, completion_tokens, batch=batch)
    return {} if usd is None else {name: round(usd, 6)}


@overload
def estimate_tokens(
    width: float, height: float, *, provider: str | Provider = DEFAULT_PROVIDER
) -> int: ...


@overload
def estimate_tokens(
    width: np.ndarray | Sequence[float], height: Any, *, provider: str | Provider = ...
) -> np.ndarray: ...


@overload
def estimate_tokens(width: Any, height: Any, *, provider: str | Provider = ...) -> pd.Series: ...


def estimate_tokens(
    width: Any, height: Any, *, provider: str | Provider = DEFAULT_PROVIDER
) -> int | np.ndarray | pd.Series:
    """Estimated image tokens for ``width x height`` under ``provider``'s formula.

    Scalars give an ``int``; arrays and Series give the same shape (a Series keeps its index).

    >>> estimate_tokens(1120, 1120)
    6404
    """
    profile = get_provider(provider)
    pandas = sys.modules.get("pandas")  # not imported: no Series can have been passed
    if pandas is not None and (
        isinstance(width, pandas.Series) or isinstance(height, pandas.Series)
    ):
        pd = pandas
        index = width.index if isinstance(width, pd.Series) else height.index
        w = pd.to_numeric(pd.Series(width, index=index), errors="coerce")
        h = pd.to_numeric(pd.Series(height, index=index), errors="coerce")
        ok = w.notna() & h.notna()
        out = pd.Series(pd.NA, index=index, dtype="Int64", name="estimated_tokens")
        if ok.any():
            out[ok] = profile.estimate(w[ok].to_numpy(), h[ok].to_numpy())
        return out
    return profile.estimate(width, height)


def fit_tokens(w: int, h: int, provider: Provider, max_tokens: int) -> tuple[int, int]:
    """The largest size within ``w x h`` (same aspect) whose token estimate is <= max_tokens.

    Raises ``ImageError`` when no size is cheap enough (the provider's minimum is higher).
    """
    if provider.estimate(w, h) <= max_tokens:
        return w, h
    lo, hi = 1, max(w, h) - 1  # longest side; estimates grow with size
    best = None
    while lo <= hi:
        mid = (lo + hi) // 2
        cand = fit_within(w, h, mid)
        if provider.estimate(*cand) <= max_tokens:
            best, lo = cand, mid + 1
        else:
            hi = mid - 1
    if best is None:
        raise ImageError(
            f"max_tokens={max_tokens} is below {provider.name}'s estimate for any size of image"
        )
    return best


def floor_side(provider: Provider) -> int:
    """The largest square side the provider still prices at its minimum (inference.net: 560
    px, OpenAI detail=high: 512): below it a smaller image costs the same and shows less."""
    lowest = provider.estimate(1, 1)
    lo, hi = 1, 8192
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if provider.estimate(mid, mid) == lowest:
            lo = mid
        else:
            hi = mid - 1
    return lo


def same_tokens_size(w: int, h: int, provider: Provider) -> tuple[int, int]:
    """The smallest size within ``w x h`` (same aspect) with the same token estimate, never
    taking a side below the provider's ``floor_side`` (or its own size, if smaller).

    Where the formula is flat (OpenAI's 512 px tiles) this drops pixels that cost nothing;
    where it grows with every pixel (inference.net between 560 and 1,120 px) the size stays.
    """
    target = provider.estimate(w, h)
    floor = floor_side(provider)
    need_w, need_h = min(w, floor), min(h, floor)

    def ok(side: int) -> bool:
        cw, ch = fit_within(w, h, side)
        return cw >= need_w and ch >= need_h and provider.estimate(cw, ch) == target

    lo, hi = 1, max(w, h)  # ok(hi) holds: fit_within(w, h, max(w, h)) == (w, h)
    while lo < hi:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid + 1
    return fit_within(w, h, lo)


def _held_providers() -> tuple[int, str]:
    return len(providers), ", ".join(providers)


register("providers", __name__, _held_providers)  # not reset: the built-in profiles live here
