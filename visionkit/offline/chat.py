"""One chat request body in, one completion out: the pipeline the synchronous endpoint and every
batch line share, so a body answers the same whichever way it was sent.

``ChatEngine.answer(body, request_id)`` applies the provider profile's per-request rules (body
size, JSON shape, known model, at most N images, base64 ``data:`` URIs whose bytes match their
type, decodable images), describes the pixels and returns the completion with its usage, or
raises a ``Reply`` with the OpenAI-shaped error. What only the synchronous endpoint does (key,
rate limit, injected faults, latency, ``fail_rate``) stays in ``OfflineServer``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..providers import Provider
from ..tokens import text_tokens
from .answers import completion
from .describe import FactsCache, ImageFacts
from .marks import MODEL_RESOLUTION, count_marks, wants_count
from .rules import Parsed, Reply, body_too_large, model_not_found, parse_request

__all__ = ["Answer", "ChatEngine"]


@dataclass
class Answer:
    """A completion (the JSON object, usage included) and what it was made from."""

    response: dict[str, Any]
    parsed: Parsed
    images: int
    image_bytes: int
    prompt_tokens: int
    completion_tokens: int


class ChatEngine:
    """Checks and answers chat request bodies under one provider profile."""

    def __init__(
        self,
        provider: Provider,
        models: Callable[[], Sequence[str]],
        *,
        any_model: bool = False,
        max_images: int | None = None,
        pixels: bool = True,
    ) -> None:
        self.provider = provider
        self._models = models
        self._any_model = any_model
        self._max_images = max_images
        self._pixels = pixels
        self._facts = FactsCache(pixels=pixels)

    @property
    def max_body_bytes(self) -> int | None:
        return self.provider.max_body_bytes

    def check_size(self, length: int) -> None:
        """Raise the 413 for a body of ``length`` bytes over the profile's limit."""
        limit = self.provider.max_body_bytes
        if limit is not None and length >= limit:
            raise body_too_large(length, limit)

    def answer(self, body: bytes, request_id: str) -> Answer:
        self.check_size(len(body))
        parsed = parse_request(body, self.provider, self._max_images, full=self._pixels)
        known = list(self._models())
        if not self._any_model and parsed.model not in known:
            raise model_not_found(parsed.model, known)
        facts: list[ImageFacts] = []
        image_tokens = 0
        for part in parsed.images:
            try:
                f = self._facts.get(part)
            except Exception as exc:
                raise Reply(
                    400,
                    f"The image in {part.param} could not be decoded ({type(exc).__name__}).",
                    param=part.param,
                    code="invalid_image",
                ) from None
            facts.append(f)
            image_tokens += int(self.provider.estimate(f.width, f.height))
        image_tokens += len(parsed.urls) * int(self.provider.estimate(1, 1))
        counts = None
        if self._pixels and wants_count(parsed.prompt):  # the one task it can see
            resolution = MODEL_RESOLUTION.get(parsed.model)
            counts = [count_marks(part.full(), resolution=resolution) for part in parsed.images]
        response, completion_tokens = completion(parsed, facts, request_id, counts=counts)
        prompt_tokens = image_tokens + text_tokens(*parsed.texts)
        response["usage"] = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        return Answer(
            response=response,
            parsed=parsed,
            images=len(parsed.images) + len(parsed.urls),
            image_bytes=sum(part.size for part in parsed.images),
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
        )
