"""The annotators' keys in Python: which key does what (defaults plus the user's ``keys=``),
how a key is named on a button, and the key line under the image.

Keys 1-9 always pick the first nine options (labels, classes); the actions take the rest. The
browser side, which takes the keys only after a click into the widget, is ``_keys.js``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

__all__ = ["KEY_NAMES", "bind_keys", "digit_help", "key_help", "key_name", "keys_for"]

KEY_NAMES = {"ArrowRight": "→", "ArrowLeft": "←", "Backspace": "⌫", "Delete": "Del", " ": "Space"}


def bind_keys(
    defaults: Mapping[str, Sequence[str]],
    keys: Mapping[str, str | Sequence[str]] | None,
    *,
    digits: int = 0,
    what: str = "options",
) -> dict[str, str]:
    """``{key: action}`` from the default ``{action: [keys]}`` with the user's overrides.

    ``keys`` maps an action to a key (``event.key`` names: ``"x"``, ``"ArrowRight"``,
    ``"Delete"``) or a list of keys; an empty list turns the action's keys off. Keys ``"1"``
    to ``str(digits)`` pick the ``what`` and cannot be bound to an action.
    """
    chosen = {action: list(k) for action, k in defaults.items()}
    for action, k in (keys or {}).items():
        if action not in chosen:
            raise ValueError(f"keys: unknown action {action!r}; the actions are {list(chosen)}")
        chosen[action] = [k] if isinstance(k, str) else list(k)
    out: dict[str, str] = {}
    for action, ks in chosen.items():
        for k in ks:
            if not isinstance(k, str) or not k:
                raise ValueError(f"keys: {action!r} needs key names, not {k!r}")
            if k in out and out[k] != action:
                raise ValueError(f"keys: {k!r} is bound to both {out[k]!r} and {action!r}")
            out[k] = action
    clash = sorted({str(i) for i in range(1, digits + 1)} & set(out))
    if clash:
        raise ValueError(f"keys: {clash} already pick {what} (1-9); choose other keys")
    return out


def key_name(key: str) -> str:
    """How a button or the key line names ``key`` (``"→"`` for ``"ArrowRight"``)."""
    return KEY_NAMES.get(key, key)


def keys_for(bindings: Mapping[str, str], action: str) -> list[str]:
    """The keys bound to ``action``, in binding order."""
    return [k for k, a in bindings.items() if a == action]


def digit_help(n: int, word: str) -> list[str]:
    """The key line's part for keys 1..n: ``["1–3 label"]``, ``["1 label"]`` or ``[]``."""
    if not n:
        return []
    return [f"1–{n} {word}" if n > 1 else f"1 {word}"]


def key_help(
    bindings: Mapping[str, str], actions: Iterable[str], names: Mapping[str, str]
) -> list[str]:
    """The key line's parts for ``actions`` (in that order) that have keys: ``"→ next"``,
    ``"a / Enter accept the model's answer"`` (``names`` renames an action)."""
    parts = []
    for action in actions:
        bound = keys_for(bindings, action)
        if bound:
            parts.append(f"{' / '.join(map(key_name, bound))} {names.get(action, action)}")
    return parts
