"""The type column of `--help`: what an operator types, not Python's annotations.

Typer 0.2x prints a flag as `--json <bool>` (a flag takes no value) and a repeatable option as
`--tutor <list[str]>` (it takes one value, given several times). Flags get no type; repeatable
options show their element type with "…, repeatable". One patch of Typer's option, applied
once when the CLI is built, so every command's help reads the same.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from typer.core import TyperArgument, TyperOption

_option_type = TyperOption.display_type_rich
_argument_type = TyperArgument.display_type_rich


def _element(label: str | None, many: str) -> str | None:
    """`<list[str]>` → `<str> (repeatable)`; anything else unchanged."""
    if label and label.startswith("<list[") and label.endswith("]>"):
        return f"<{label[6:-2].lower()}> ({many})"
    return label


def _option(self: TyperOption, ctx: Any) -> str | None:
    return None if self.is_flag else _element(_option_type(self, ctx), "repeatable")


def _argument(self: TyperArgument, ctx: Any) -> str | None:
    return _element(_argument_type(self, ctx), "one or more")


def install() -> None:
    """Make every option's and argument's help type read as above (idempotent)."""
    patches: list[tuple[type, Callable[..., str | None]]] = [
        (TyperOption, _option), (TyperArgument, _argument),
    ]  # fmt: skip
    for cls, method in patches:
        cls.display_type_rich = method  # type: ignore[attr-defined]
