"""A tiers file is checked whole: every key the format does not have, and every value a rule
cannot use, is one line naming the file and the key, never a silently unchanged rule."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from tutormax_cli.cli.app import app
from tutormax_cli.errors import TiersFileError
from tutormax_cli.metrics.tiers import DEFAULT_TIERS, RULE_KEYS, TierRules, load_tiers

RULES = ", ".join(RULE_KEYS)

REFUSED = [
    (
        "singular table",
        "[threshold.avg_rating]\ngreen = 4.0\nred = 3.0\n",
        "unknown table [threshold] (expected [thresholds.<metric>], [rules])",
    ),
    (
        "unknown top-level key",
        "green = 4.0\n",
        "unknown key green (expected [thresholds.<metric>], [rules])",
    ),
    (
        "unknown threshold key",
        "[thresholds.avg_rating]\ngreen = 4.5\nred = 3.5\ngren = 4.0\n",
        "unknown key gren in [thresholds.avg_rating] (expected direction, green, red)",
    ),
    (
        "metric not a table",
        "[thresholds]\navg_rating = 4.5\n",
        "thresholds.avg_rating must be a table [thresholds.avg_rating], got 4.5",
    ),
    (
        "unknown rule",
        "[rules]\nexemplary_min_grn = 3\n",
        f"unknown key exemplary_min_grn in [rules] (expected {RULES})",
    ),
    ("rules not a table", "rules = 3\n", "rules must be a table [rules], got 3"),
    (
        "negative count",
        "[rules]\nexemplary_min_green = -5\n",
        "[rules] exemplary_min_green must be a whole number ≥ 0, got -5",
    ),
    (
        "fractional count",
        "[rules]\nexemplary_min_green = 2.7\n",
        "[rules] exemplary_min_green must be a whole number ≥ 0, got 2.7",
    ),
    (
        "text count",
        '[rules]\nat_risk_min_red = "five"\n',
        '[rules] at_risk_min_red must be a whole number ≥ 0, got "five"',
    ),
    (
        "boolean count",
        "[rules]\nstrong_min_green = true\n",
        "[rules] strong_min_green must be a whole number ≥ 0, got true",
    ),
    (
        "nan threshold",
        "[thresholds.avg_rating]\ngreen = nan\nred = 3.5\n",
        "thresholds.avg_rating.green must be a finite number, got nan",
    ),
    (
        "infinite threshold",
        "[thresholds.avg_rating]\ngreen = 4.5\nred = -inf\n",
        "thresholds.avg_rating.red must be a finite number, got -inf",
    ),
    (
        "boolean threshold",
        "[thresholds.no_show_count]\ngreen = false\nred = 3\n",
        "thresholds.no_show_count.green must be a number, got false",
    ),
    (
        "quoted threshold",
        '[thresholds.avg_rating]\ngreen = "nan"\nred = 3.5\n',
        'thresholds.avg_rating.green must be a number, got "nan"',
    ),
]


@pytest.mark.parametrize(("text", "message"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_a_tiers_file_the_rules_cannot_use_is_refused_naming_the_key(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "t7.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(TiersFileError) as info:
        load_tiers(path)
    assert str(info.value) == f"{path}: {message}"


def test_a_whole_float_count_is_that_count(tmp_path: Path) -> None:
    """`2.0` is the whole number it spells; only a fraction is refused (never truncated)."""
    path = tmp_path / "t.toml"
    path.write_text("[rules]\nexemplary_min_green = 2.0\n", encoding="utf-8")
    rules = load_tiers(path)
    assert rules.exemplary_min_green == 2 and isinstance(rules.exemplary_min_green, int)
    assert rules.thresholds == DEFAULT_TIERS.thresholds


def test_rule_keys_are_the_counts_of_tier_rules() -> None:
    """`[rules]` accepts exactly what `TierRules` has, so the two cannot drift."""
    defaults = TierRules(DEFAULT_TIERS.thresholds)
    assert {key: getattr(defaults, key) for key in RULE_KEYS} == {
        "exemplary_min_green": 5,
        "at_risk_min_red": 3,
        "needs_attention_min_red": 1,
        "strong_min_green": 3,
    }


@pytest.mark.parametrize("command", [["tiers", "simulate"], ["recompute", "--dry-run", "--tiers"]])
def test_commands_taking_a_tiers_file_refuse_a_typo_before_reading_anything(
    tmp_path: Path, command: list[str]
) -> None:
    """`tiers simulate` with `[threshold.…]` used to say "No tutor would change tier." (exit 0);
    the file is refused before the database (here: none) is opened."""
    path = tmp_path / "t7.toml"
    path.write_text("[threshold.avg_rating]\ngreen = 4.0\nred = 3.0\n", encoding="utf-8")
    url = f"sqlite:///{tmp_path / 'tutormax.db'}"
    result = CliRunner().invoke(app, ["--database-url", url, *command, str(path)])
    assert result.exit_code == 1, result.output
    assert result.output == (
        f"Error: {path}: unknown table [threshold] (expected [thresholds.<metric>], [rules])\n"
    )
