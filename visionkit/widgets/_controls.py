"""The annotators' controls: their buttons, their keys and the messages from their front end.

``Controls`` is mixed into ``LabelSession``: it binds keys 1-9 to the widget's choices and the
user's keys to its actions, makes a button per action, turns a key or a message from the
browser into a call, and shows any error such a call raises in the widget (not in the kernel's
log). Which choices and actions there are is the widget's to say.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ipywidgets

from ._keymap import bind_keys, key_name, keys_for

__all__ = ["BUTTONS", "Controls", "button", "button_row", "distinct"]

# The buttons both annotators have: action -> (text, tooltip); {unit} is "row" or "image".
BUTTONS = {
    "previous": ("← previous", "go back one {unit}"),
    "next": ("next →", "go on one {unit}"),
    "undo": ("undo", "undo the last change"),
}


def distinct(values: Sequence[Any], what: str) -> list[str]:
    """``values`` as strings; ``ValueError`` if two are the same (``what`` names them)."""
    out = [str(v) for v in values]
    if len(set(out)) != len(out):
        raise ValueError(f"{what} must be distinct: {out}")
    return out


def button(description: str, tooltip: str, on_click: Callable[[], None]) -> ipywidgets.Button:
    """A button as wide as its text that calls ``on_click()``."""
    out = ipywidgets.Button(
        description=description, tooltip=tooltip, layout=ipywidgets.Layout(width="auto")
    )
    out.on_click(lambda _button: on_click())
    return out


def button_row(buttons: Mapping[str, ipywidgets.Button]) -> ipywidgets.HBox:
    """``buttons`` in a row that wraps."""
    return ipywidgets.HBox(list(buttons.values()), layout=ipywidgets.Layout(flex_flow="row wrap"))


class Controls:
    """Buttons, keys and front-end messages for a widget with a ``view`` (an anywidget with
    ``message`` and ``message_kind`` traits) and the actions named in its bindings."""

    _unit = "row"  # what "previous" and "next" go to, in the buttons' tooltips
    # Actions that need suggestions= (their keys do nothing without), and actions the browser
    # handles alone (zoom, pan): Python ignores their keys.
    _suggestion_actions: tuple[str, ...] = ("accept",)
    _view_actions: tuple[str, ...] = ()

    suggestions: str | None
    view: Any
    _choices: list[str]
    _bindings: dict[str, str]

    def _bind_keys(
        self,
        choices: list[str],
        what: str,
        defaults: Mapping[str, Sequence[str]],
        keys: Mapping[str, str | Sequence[str]] | None,
    ) -> None:
        """Keys 1-9 pick ``choices`` (the options or labels: ``what``); the user's ``keys``
        over the ``defaults`` do the actions (see ``bind_keys``)."""
        self._choices = choices
        self._bindings = bind_keys(defaults, keys, digits=min(len(choices), 9), what=what)

    def _safe(self, action: Callable[..., None]) -> Callable[..., None]:
        """Run ``action`` for a button or key; show its error in the widget instead of losing it
        in the kernel's log."""

        def run(*args: Any) -> None:
            try:
                action(*args)
            except Exception as exc:
                self._say(str(exc), error=True)

        return run

    def _say(self, message: str, *, error: bool = False) -> None:
        self.view.message = message
        self.view.message_kind = "error" if error else "info"

    def _active_bindings(self) -> dict[str, str]:
        """``{key: action}`` without the actions that need suggestions when there are none."""
        if self.suggestions is None:
            return {k: a for k, a in self._bindings.items() if a not in self._suggestion_actions}
        return dict(self._bindings)

    def _action_buttons(
        self,
        actions: Sequence[str],
        texts: Mapping[str, tuple[str, str]],
        *,
        keys_in_tooltip: bool,
    ) -> dict[str, ipywidgets.Button]:
        """A button per action (those that need suggestions only with them) that calls it.

        ``texts`` gives an action's ``(text, tooltip)`` where ``BUTTONS`` does not; the text
        ends with the action's first key (the tooltip lists them all, with ``keys_in_tooltip``).
        """
        buttons = {}
        for name in actions:
            if self.suggestions is None and name in self._suggestion_actions:
                continue
            description, tooltip = texts[name] if name in texts else BUTTONS[name]
            tooltip = tooltip.format(unit=self._unit)
            bound = keys_for(self._bindings, name)
            if bound:
                description += f" [{key_name(bound[0])}]"
                if keys_in_tooltip:
                    tooltip += f" ({', '.join(map(key_name, bound))})"
            buttons[name] = button(
                description, tooltip, self._safe(lambda n=name: getattr(self, n)())
            )
        return buttons

    def _on_key(self, key: str) -> None:
        """A key from the front end: 1-9 pick a choice (a digit past the choices is free for
        an action); the others do their action."""
        if len(key) == 1 and key.isdigit() and 0 < int(key) <= len(self._choices):
            self._choose(self._choices[int(key) - 1])
            return
        action = self._active_bindings().get(key)
        if action is not None and action not in self._view_actions:
            getattr(self, action)()

    def _on_msg(self, _widget: Any, content: Any, _buffers: Any) -> None:
        """A message from the front end: a key, or what the widget's own view sends."""
        if not isinstance(content, dict):
            return
        kind = content.get("type")
        if kind == "key":
            self._safe(lambda: self._on_key(str(content.get("key", ""))))()
        else:
            self._safe(lambda: self._on_view_msg(kind, content))()

    # Subclasses implement these.
    def _choose(self, choice: str) -> None:
        """Key ``1``-``9``: pick ``choice``."""
        raise NotImplementedError

    def _on_view_msg(self, kind: Any, content: dict[str, Any]) -> None:
        """A message of the widget's own kind from the front end (keys are handled here)."""
