"""How the command line connects (``vk.connect``'s ways, as options) and what it says when the
provider fails.

Options (``add_connection_options``): ``--provider``, ``--base-url``, ``--api-key-env NAME``
(the *name* of the environment variable holding the key: a key typed as an argument would be
kept in the shell's history and shown by ``ps`` to every user of the machine, so
``--api-key`` itself is refused without echoing it), ``--model``, ``--record DIR`` and
``--replay DIR`` (``VISIONKIT_RECORD`` / ``VISIONKIT_REPLAY`` work too), and for batch jobs
``--batch-base-url``.

Provider errors (``provider_error_line``): every error of the openai SDK (``openai.APIError``:
a refusal such as 401 or 404, a 5xx, a connection error or timeout) becomes one line on
stderr -- which error, the status, the server's own message, the server's URL with any
credential masked, and for a refused key what to do -- and exit status 1; no key is in it,
even when the server echoes the one it was sent.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import warnings
from typing import Any

__all__ = [
    "KEY_ADVICE",
    "add_connection_options",
    "connect_from_args",
    "provider_error_line",
]

# The command line takes keys from the environment only (see the module doc).
KEY_ADVICE = (
    "export INFERENCE_API_KEY=... first (the command line reads keys from the environment "
    "only, never from an argument)"
)
KEY_ENV_ADVICE = (
    "put the key in an environment variable (export MY_KEY=...) and pass its name: "
    "--api-key-env MY_KEY"
)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


class _RefuseKey(argparse.Action):
    """``--api-key VALUE``: refused, the value never shown (argparse would otherwise take
    ``--api-key`` as an abbreviation of ``--api-key-env`` and print the key back)."""

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        parser.exit(
            2,
            f"{parser.prog}: error: the key itself never goes on the command line (the shell "
            f"keeps it in its history, ps shows it to everyone); {KEY_ENV_ADVICE}\n",
        )


def add_connection_options(parser: argparse.ArgumentParser, *, batch: bool = False) -> None:
    """The options that say where to send and with which key (module doc)."""
    parser.add_argument(
        "--provider",
        default="auto",
        metavar="NAME",
        help="auto (inference.net if INFERENCE_API_KEY is set, else offline), or a profile name",
    )
    parser.add_argument(
        "--base-url",
        help="any OpenAI-compatible server (e.g. a local vLLM)"
        + ("; its Batch API too" if batch else ""),
    )
    if batch:
        parser.add_argument("--batch-base-url", help="where the Batch API lives, if elsewhere")
    parser.add_argument(
        "--api-key-env",
        metavar="NAME",
        help="the environment variable holding the key (default: the provider's own, e.g. "
        "INFERENCE_API_KEY; none for --base-url). The key itself is never an argument",
    )
    parser.add_argument("--api-key", nargs="?", action=_RefuseKey, help=argparse.SUPPRESS)
    parser.add_argument("--model", help="model name (default: the provider's default model)")
    parser.add_argument(
        "--record", metavar="DIR", help="also write every answer used to DIR/answers.jsonl"
    )
    parser.add_argument(
        "--replay",
        metavar="DIR",
        help="answer from DIR/answers.jsonl only: nothing is sent, no key is needed",
    )


def api_key(args: argparse.Namespace) -> str | None:
    """The key in the variable ``--api-key-env`` names (None without the option); a name that
    is not a variable's name, or an unset variable, is an error that never shows a key."""
    name = getattr(args, "api_key_env", None)
    if name is None:
        return None
    if not _NAME.fullmatch(name):
        raise ValueError(
            "--api-key-env takes the name of an environment variable (like MY_KEY), and what "
            "was given is not one (not shown: it may be the key itself); " + KEY_ENV_ADVICE
        )
    key = os.environ.get(name, "").strip()
    if not key:
        shown = name if name.isupper() else "the variable given"
        raise ValueError(f"--api-key-env: {shown} is not set or empty; export it first")
    return key


def connect_from_args(args: argparse.Namespace, *, say_offline: bool = True) -> Any:
    """``vk.connect`` with the command line's options; the offline notice is one plain line."""
    from ..errors import MissingAPIKey
    from ..providers import DEFAULT_PROVIDER, providers
    from ..query.client import OfflineWarning, connect, offline_notice

    key = api_key(args)
    provider = args.provider
    if key is not None and provider == "auto" and not args.base_url and not args.replay:
        provider = DEFAULT_PROVIDER  # a key is meant for a real provider, not the stand-in
    options: dict[str, Any] = {}
    if getattr(args, "batch_base_url", None):
        options["batch_base_url"] = args.batch_base_url
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OfflineWarning)  # said below, as one plain line
        try:
            client = connect(
                provider,
                api_key=key,
                base_url=args.base_url,
                model=args.model,
                record=args.record,
                replay=args.replay,
                **options,
            )
        except MissingAPIKey as exc:
            profile = providers.get(provider)
            env = (profile.api_key_env if profile is not None else None) or "INFERENCE_API_KEY"
            raise MissingAPIKey(
                f"provider {provider!r} needs an API key: "
                + KEY_ADVICE.replace("INFERENCE_API_KEY", env)
                + ", or name another variable with --api-key-env NAME"
            ) from exc
    offline = provider == "auto" and client.provider.name == "offline" and not args.base_url
    if say_offline and offline and not client.recording:
        how = f"For a real vision model, {KEY_ADVICE}."
        print(f"note: {offline_notice(client.base_url, how)}", file=sys.stderr)
    return client


def provider_error_line(exc: BaseException, args: argparse.Namespace) -> str | None:
    """One line for an error of the openai SDK (module doc), or None for any other error."""
    openai = sys.modules.get("openai")
    if openai is None or not isinstance(exc, openai.APIError):
        return None
    from ..query.messages import describe_error  # a row's error text: the same words
    from ..redact import redact_text, redact_url

    kind, _, message = describe_error(exc).partition(": ")
    request = getattr(exc, "request", None)
    where = f" from {redact_url(str(request.url))}" if request is not None else ""
    line = f"{kind}{where}: {message.strip().rstrip('.')}"
    if getattr(exc, "status_code", None) in (401, 403):
        line += f". The server refused the key: {KEY_ENV_ADVICE}"
        if not getattr(args, "base_url", None):
            line += f" (or {KEY_ADVICE})"
    return _scrub(redact_text(" ".join(line.split())), args)[:600]


def _scrub(text: str, args: argparse.Namespace) -> str:
    """``text`` with every key the command line could have sent replaced by ``***``: the
    variable ``--api-key-env`` names and every provider's key variable."""
    from ..providers import providers

    names = {p.api_key_env for p in providers.values() if p.api_key_env}
    if getattr(args, "api_key_env", None):
        names.add(args.api_key_env)
    for name in names:
        value = os.environ.get(name, "").strip()
        if len(value) >= 4:
            text = text.replace(value, "***")
    return text
