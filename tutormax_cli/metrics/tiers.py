"""Performance tiers (docs/metrics.md §4) as data, and their vectorized evaluation.

Thresholds are a value, not code, so an operator can load another rule set from TOML
(`--tiers FILE`) and see its effect with a dry run before anything is written.
"""

from __future__ import annotations

import json
import math
import tomllib
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from tutormax_cli.errors import TiersFileError

if TYPE_CHECKING:  # the rules are plain data; only the polars kernel's expressions need it
    import polars as pl

Direction = Literal["higher", "lower"]

TIER_NAMES = ("Exemplary", "Strong", "Developing", "Needs Attention", "At Risk")
"""Best first: the order every view lists tiers in."""

FLAGGED_METRICS = (
    "avg_rating",
    "first_session_success_rate",
    "reschedule_rate",
    "no_show_count",
    "engagement_score",
    "learning_objectives_met_pct",
)


@dataclass(frozen=True)
class Threshold:
    """Where one metric turns green or red."""

    metric: str
    direction: Direction
    green: float
    red: float

    def describe(self, flag: str) -> str:
        """The rule a flag was earned by, in an operator's words (e.g. `≥ 4.5`)."""
        if self.direction == "higher":
            return f"≥ {self.green:g}" if flag == "green" else f"< {self.red:g}"
        return f"≤ {self.green:g}" if flag == "green" else f"> {self.red:g}"

    def flag_of(self, value: float | None) -> str | None:
        """`green`, `red` or None for one value: the scalar twin of `flag_exprs`."""
        if value is None:
            return None
        if self.direction == "higher":
            return "green" if value >= self.green else "red" if value < self.red else None
        return "green" if value <= self.green else "red" if value > self.red else None


@dataclass(frozen=True)
class TierRules:
    """A complete rule set: one threshold per flagged metric and the rule counts."""

    thresholds: tuple[Threshold, ...]
    exemplary_min_green: int = 5
    at_risk_min_red: int = 3
    needs_attention_min_red: int = 1
    strong_min_green: int = 3

    def threshold(self, metric: str) -> Threshold:
        """The threshold of one flagged metric."""
        for item in self.thresholds:
            if item.metric == metric:
                return item
        raise KeyError(metric)

    def tier_of(self, greens: int, reds: int) -> str:
        """The tier for flag counts: the scalar twin of `tier_expr`."""
        if greens >= self.exemplary_min_green and reds == 0:
            return "Exemplary"
        if reds >= self.at_risk_min_red:
            return "At Risk"
        if reds >= self.needs_attention_min_red:
            return "Needs Attention"
        if greens >= self.strong_min_green:
            return "Strong"
        return "Developing"


THRESHOLD_KEYS = ("direction", "green", "red")
"""The keys of a `[thresholds.<metric>]` table."""

RULE_KEYS = tuple(f.name for f in fields(TierRules) if f.name != "thresholds")
"""The keys of `[rules]`: `TierRules`'s counts, in the order the rules are tried."""

TABLES = ("thresholds", "rules")
"""The top-level tables of a tiers file."""


def _shown(value: object) -> str:
    """A value as the file spells it, for a message: `"five"`, `true`, `2.7`, `nan`."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return str(value)


def _unknown(origin: str, what: str, found: Any, expected: tuple[str, ...]) -> None:
    """Refuse a key the format does not have: a typo ignored would leave the rule it meant to
    change at its default, and a dry run would then report no change instead of the mistake."""
    extra = sorted(set(found) - set(expected))
    if extra:
        raise TiersFileError(
            f"{origin}: unknown {what.format(extra[0])} (expected {', '.join(expected)})"
        )


def _number(origin: str, where: str, value: Any) -> float:
    """A threshold: a TOML integer or float, finite. A boolean is no number here (Python would
    take `true` as 1), and NaN compares false with everything, so it would flag nothing."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TiersFileError(f"{origin}: {where} must be a number, got {_shown(value)}")
    if not math.isfinite(value):
        raise TiersFileError(f"{origin}: {where} must be a finite number, got {_shown(value)}")
    return float(value)


def _count(origin: str, key: str, value: Any) -> int:
    """A rule's count of flags: a whole number ≥ 0 (`2.0` is 2; `2.7` is refused, not cut)."""
    whole = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not whole or value < 0:
        raise TiersFileError(
            f"{origin}: [rules] {key} must be a whole number ≥ 0, got {_shown(value)}"
        )
    return int(value)


def _parse(data: dict[str, Any], origin: str, default: TierRules | None) -> TierRules:
    """Rules from parsed TOML; metrics the file leaves out keep `default`'s thresholds.

    Every key is checked, not only the ones read: the file is the operator's whole intent, and
    anything this code would silently skip (a table spelled `[threshold.…]`, a key spelled
    `gren`) would make `tiers simulate` say nothing changes."""
    extra = sorted(set(data) - set(TABLES))
    if extra:
        key = extra[0]
        what = f"table [{key}]" if isinstance(data[key], dict) else f"key {key}"
        raise TiersFileError(f"{origin}: unknown {what} (expected [thresholds.<metric>], [rules])")
    raw = data.get("thresholds", {} if default is not None else None)
    if not isinstance(raw, dict):
        raise TiersFileError(f"{origin}: missing [thresholds.<metric>] tables")
    unknown = sorted(set(raw) - set(FLAGGED_METRICS))
    if unknown:
        raise TiersFileError(f"{origin}: unknown metric {unknown[0]!r} in [thresholds]")
    thresholds = []
    for metric in FLAGGED_METRICS:
        spec = raw.get(metric)
        if spec is None:
            if default is None:
                raise TiersFileError(f"{origin}: no threshold for {metric}")
            thresholds.append(default.threshold(metric))
            continue
        if not isinstance(spec, dict):
            raise TiersFileError(
                f"{origin}: thresholds.{metric} must be a table [thresholds.{metric}], "
                f"got {_shown(spec)}"
            )
        _unknown(origin, f"key {{}} in [thresholds.{metric}]", spec, THRESHOLD_KEYS)
        direction = spec.get("direction", default.threshold(metric).direction if default else None)
        if direction not in ("higher", "lower"):
            raise TiersFileError(
                f"{origin}: thresholds.{metric}.direction must be 'higher' or 'lower'"
            )
        if "green" not in spec or "red" not in spec:
            raise TiersFileError(f"{origin}: thresholds.{metric} needs numeric 'green' and 'red'")
        green = _number(origin, f"thresholds.{metric}.green", spec["green"])
        red = _number(origin, f"thresholds.{metric}.red", spec["red"])
        bad_order = green < red if direction == "higher" else green > red
        if bad_order:
            raise TiersFileError(
                f"{origin}: thresholds.{metric}: green {green:g} and red {red:g} overlap "
                f"for a '{direction}' metric"
            )
        thresholds.append(Threshold(metric, direction, green, red))
    rules = data.get("rules", {})
    if not isinstance(rules, dict):
        raise TiersFileError(f"{origin}: rules must be a table [rules], got {_shown(rules)}")
    _unknown(origin, "key {} in [rules]", rules, RULE_KEYS)
    counts = {key: _count(origin, key, value) for key, value in rules.items()}
    return TierRules(tuple(thresholds), **counts)


def load_tiers(path: Path | None) -> TierRules:
    """The rule set in `path`, or the docs/metrics.md defaults when `path` is None."""
    if path is None:
        return DEFAULT_TIERS
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TiersFileError(f"tiers file {path} does not exist") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise TiersFileError(f"tiers file {path}: {exc}") from None
    return _parse(data, str(path), DEFAULT_TIERS)


def _load_default() -> TierRules:
    text = resources.files("tutormax_cli.metrics").joinpath("default_tiers.toml").read_text()
    return _parse(tomllib.loads(text), "default_tiers.toml", None)


DEFAULT_TIERS = _load_default()


def flag_exprs(rules: TierRules) -> dict[str, pl.Expr]:
    """Per metric, an expression giving 1 for green, -1 for red, 0 for none (null metric: 0)."""
    import polars as pl

    exprs = {}
    for th in rules.thresholds:
        col = pl.col(th.metric)
        if th.direction == "higher":
            green, red = col >= th.green, col < th.red
        else:
            green, red = col <= th.green, col > th.red
        exprs[th.metric] = (
            pl.when(green).then(1).when(red).then(-1).otherwise(0).fill_null(0).cast(pl.Int8)
        )
    return exprs


def tier_expr(rules: TierRules) -> pl.Expr:
    """The `performance_tier` of each row from its (already rounded) metric columns."""
    import polars as pl

    flags = list(flag_exprs(rules).values())
    greens = pl.sum_horizontal([(f == 1).cast(pl.Int32) for f in flags])
    reds = pl.sum_horizontal([(f == -1).cast(pl.Int32) for f in flags])
    return (
        pl.when((greens >= rules.exemplary_min_green) & (reds == 0))
        .then(pl.lit("Exemplary"))
        .when(reds >= rules.at_risk_min_red)
        .then(pl.lit("At Risk"))
        .when(reds >= rules.needs_attention_min_red)
        .then(pl.lit("Needs Attention"))
        .when(greens >= rules.strong_min_green)
        .then(pl.lit("Strong"))
        .otherwise(pl.lit("Developing"))
    )
