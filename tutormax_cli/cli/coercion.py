"""Typer's value coercion without pydantic for the values the operator's commands take.

Typer 0.29 converts every non-flag value through a pydantic `TypeAdapter`, built the first time
the parameter is used: importing pydantic and building the adapters of a `show` command's few
parameters cost 0.1-0.2 s of a 0.5 s budget, to turn a `str` into the same `str`. Here, a value
whose result is certain is converted directly: a string for a `str`, one of a `Literal`'s
strings given exactly, a plain decimal within an `int`'s range, a list of strings for a
`list[str]`. Anything else (a path, a float, a value out of range or not one of the choices, a
custom parser) goes to Typer's own adapter, so its conversions and error messages stay Typer's.
One patch of Typer's parameter, applied once when the CLI is built.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Literal, get_args, get_origin

if TYPE_CHECKING:
    from typer.core import _TyperParameter

_DECIMAL = re.compile(r"0|[1-9][0-9]{0,17}")


class _Direct:
    """A runtime parameter that converts the certain cases itself and hands the rest to the
    one Typer would build (built only then)."""

    def __init__(self, param: _TyperParameter) -> None:
        self.param = param
        desc = param.type_descriptor
        self.annotation = desc.annotation
        self.info = desc.parameter_info
        self.typer: Any = None

    def _fallback(self) -> Any:
        if self.typer is None:
            from typer._coercion import build_runtime_param

            self.typer = build_runtime_param(self.param.type_descriptor)
        return self.typer

    def coerce(self, value: Any, param: Any, ctx: Any) -> Any:
        done, result = self._direct(value, param, ctx)
        if done:
            return result
        return self._fallback().coerce(value, param=param, ctx=ctx)

    def _direct(self, value: Any, param: Any, ctx: Any) -> tuple[bool, Any]:
        if self.info.parser is not None:
            return False, None
        if value is None:  # what Typer's coercion returns for a missing value, any type
            return True, (() if param.multiple or param.nargs == -1 else None)
        return _convert(self.annotation, value, self.info, ctx)


def _convert(annotation: Any, value: Any, info: Any, ctx: Any) -> tuple[bool, Any]:
    """(True, the value Typer's adapter would return) when that is certain, else (False, _)."""
    if annotation is str:
        return (True, value) if type(value) is str else (False, None)
    if get_origin(annotation) is Literal:
        choices = get_args(annotation)
        plain = info.case_sensitive and (ctx is None or ctx.token_normalize_func is None)
        if plain and type(value) is str and value in choices:
            return True, value
        return False, None
    if annotation is int and type(value) is str and not info.clamp:
        if _DECIMAL.fullmatch(value) is None:
            return False, None
        number = int(value)
        low, high = info.min, info.max
        if (low is not None and number < low) or (high is not None and number > high):
            return False, None
        return True, number
    strings = get_origin(annotation) is list and get_args(annotation) == (str,)
    if strings and isinstance(value, list | tuple) and all(type(v) is str for v in value):
        return True, list(value)
    return False, None


def _runtime_param(self: _TyperParameter) -> Any:
    if self._runtime_param is None:
        self._runtime_param = _Direct(self)  # type: ignore[assignment]
    return self._runtime_param


def install() -> None:
    """Convert certain values without pydantic in every command (idempotent). A Typer without
    the hook this patches (older or newer than the one it was written for) is left as it is:
    slower, never wrong."""
    import importlib.util

    try:
        from typer.core import _TyperParameter
    except ImportError:
        return
    hook = getattr(_TyperParameter, "get_runtime_param", None)
    if hook is None or importlib.util.find_spec("typer._coercion") is None:
        return
    _TyperParameter.get_runtime_param = _runtime_param  # type: ignore[method-assign]
