"""The dashboard in a real browser: Debian's Chromium, headless, driven by Playwright (its own
browser download is never used), against a real `tutormax api serve` over a real SQLite file
and Redis, with the real worker. Screenshots at a laptop's and a phone's width are saved under
`bench/out/dashboard/` (or `TUTORMAX_ARTIFACTS`).

Locally the tests skip when Chromium or Playwright is missing; in CI (`CI=true`) they fail."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest
import redis

from tests.api_server import TOKEN, api_server, free_port
from tests.conftest import IN_CI
from tests.dashboard_data import cli, seed_with_history
from tests.helpers import stored_metrics
from tutormax_cli.metrics.windows import WINDOWS
from tutormax_cli.store.db import open_engine

CHROMIUM = os.environ.get("TUTORMAX_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = (
    Path(os.environ.get("TUTORMAX_ARTIFACTS", Path(__file__).parent.parent / "bench" / "out"))
    / "dashboard"
)
WIDTHS = {"laptop": (1280, 900), "phone": (390, 844)}
WAIT_MS = 30_000


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason}: the browser tests must run in CI (.ci/run installs Chromium)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        _unavailable(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package is not installed (pip install -e '.[dev]')")
    with sync_playwright() as pw:
        # root in a container: Chromium's sandbox needs user namespaces it may not have
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory, redis_server_url: str) -> Iterator[str]:
    url = f"sqlite:///{tmp_path_factory.mktemp('dashboard') / 'tutormax.db'}"
    redis.Redis.from_url(redis_server_url).flushdb()
    seed_with_history(url)
    yield url


@pytest.fixture(scope="module")
def served(data: str, redis_server_url: str) -> Iterator[str]:
    with api_server(data, redis_server_url) as base:
        yield base


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(
        viewport={"width": 1280, "height": 900}, timezone_id="America/New_York", locale="en-US"
    )
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert errors == [], errors


def latest(stored: pl.DataFrame, window: str) -> pl.DataFrame:
    rows = stored.filter(pl.col("window") == window)
    return rows.filter(pl.col("metric_date") == pl.col("metric_date").max().over("tutor_id"))


def shown_number(text: str) -> float | None:
    """The value a metric cell shows ("✗ 25 > 15" → 25.0, "1,234" → 1234.0, "—" → None)."""
    found = re.search(r"-?[\d,]+(?:\.\d+)?", text)
    return None if found is None else float(found.group().replace(",", ""))


def test_the_overview_shows_the_table_s_tiers(served: str, data: str, page: Any) -> None:
    page.goto(f"{served}/")
    page.wait_for_selector("#needs table, #needs p", timeout=WAIT_MS)
    page.wait_for_selector(".bar-row", timeout=WAIT_MS)
    shown = page.eval_on_selector_all(
        ".bar-row",
        "rs => rs.map(r => [r.dataset.window, r.dataset.tier,"
        " r.querySelector('.count').textContent])",
    )
    engine = open_engine(data)
    stored = stored_metrics(engine)
    engine.dispose()
    for window in WINDOWS:
        counts = latest(stored, window).group_by("performance_tier").len()
        want = dict(zip(counts["performance_tier"], counts["len"], strict=True))
        got = {tier: int(n) for w, tier, n in shown if w == window}
        assert {t: n for t, n in got.items() if n} == want, window
    month = latest(stored, "30day")
    flagged = month.filter(pl.col("performance_tier").is_in(["At Risk", "Needs Attention"]))
    listed = page.eval_on_selector_all(
        "#needs tr[data-tutor]", "rs => rs.map(r => r.dataset.tutor)"
    )
    assert sorted(listed) == sorted(flagged["tutor_id"])
    # colour is never the only signal: every tier mark carries its name as text
    tiers = page.eval_on_selector_all(".tier", "es => es.map(e => e.textContent.trim())")
    assert tiers and all(t in ("Exemplary", "Strong", "Developing", "Needs Attention", "At Risk")
                         for t in tiers)  # fmt: skip
    # the worker panel and freshness come from /api/status
    page.wait_for_selector("#worker .kv", timeout=WAIT_MS)
    assert page.text_content('[data-key="w:live"]') == "0"
    assert page.locator("#freshness tbody tr").count() == 3
    # times in the viewer's zone, UTC on hover
    first = page.locator("#needs time").first
    title, text = first.get_attribute("title"), first.text_content()
    assert title is not None and title.endswith(" UTC") and text
    instant = datetime.fromisoformat(str(first.get_attribute("datetime")).replace("Z", "+00:00"))
    assert str(instant.astimezone(UTC).hour) in title


def test_the_tutor_page_shows_the_stored_values(served: str, data: str, page: Any) -> None:
    page.goto(f"{served}/tutors/T0001?window=7day")
    page.wait_for_selector('#windows td[data-metric="avg_rating"]', timeout=WAIT_MS)
    engine = open_engine(data)
    stored = stored_metrics(engine).filter(pl.col("tutor_id") == "T0001")
    engine.dispose()
    for window in WINDOWS:
        row = latest(stored, window).to_dicts()[0]
        tier = page.text_content(f'[data-key="tier:{window}"]')
        assert tier is not None and tier.strip() == row["performance_tier"]
        for metric in ("sessions_completed", "avg_rating", "reschedule_rate", "no_show_count",
                       "engagement_score", "learning_objectives_met_pct"):  # fmt: skip
            cell = page.text_content(f'td[data-window="{window}"][data-metric="{metric}"]') or ""
            assert shown_number(cell) == row[metric], (window, metric, cell)
    # a flag is a mark and its rule in text, not only a colour
    for mark, css in (("✗", ".flag-red"), ("✓", ".flag-green")):
        texts = page.eval_on_selector_all(f"#windows td {css}", "es => es.map(e => e.textContent)")
        assert all(t.startswith(mark) and re.search(r"[<>≤≥] ?\d", t) for t in texts), texts
    assert page.input_value("#window") == "7day"
    assert page.locator("#trend figure[data-metric]").count() == 12
    rule = page.text_content('[data-key="explain:rule"]') or ""
    assert "in the 7day window" in rule and "→" in rule
    # keyboard: the window selector changes the trend and explanation, and the URL
    page.focus("#window")
    page.keyboard.press("ArrowDown")  # 7day → 30day
    page.wait_for_function(
        "() => (document.querySelector('[data-key=\"explain:rule\"]') || {}).textContent"
        "?.includes('30day')",
        timeout=WAIT_MS,
    )
    assert page.url.endswith("window=30day")


def test_keyboard_phone_width_dark_mode_and_screenshots(served: str, browser: Any) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for name, (width, height) in WIDTHS.items():
        for scheme in ("light", "dark"):
            context = browser.new_context(
                viewport={"width": width, "height": height}, color_scheme=scheme
            )
            page = context.new_page()
            page.goto(f"{served}/")
            page.wait_for_selector("#needs table", timeout=WAIT_MS)
            page.wait_for_selector("#worker .kv", timeout=WAIT_MS)
            overflow = page.evaluate(
                "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 0, f"the overview is {overflow}px wider than a {width}px screen"
            background = page.evaluate("() => getComputedStyle(document.body).backgroundColor")
            dark = sum(int(c) for c in re.findall(r"\d+", background)[:3]) < 3 * 128
            assert dark == (scheme == "dark"), background
            if scheme == "light":
                page.screenshot(path=str(ARTIFACTS / f"overview-{name}.png"), full_page=True)
                page.goto(f"{served}/tutors/T0001")
                page.wait_for_selector("#explain p", timeout=WAIT_MS)
                overflow = page.evaluate(
                    "() => document.documentElement.scrollWidth"
                    " - document.documentElement.clientWidth"
                )
                assert overflow <= 0, f"the tutor page is {overflow}px wider than {width}px"
                page.screenshot(path=str(ARTIFACTS / f"tutor-{name}.png"), full_page=True)
            context.close()
    for name in WIDTHS:
        assert (ARTIFACTS / f"overview-{name}.png").stat().st_size > 10_000

    # keyboard only: the skip link first, then on to a tutor of the needs-action list
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto(f"{served}/")
    page.wait_for_selector("#needs tr[data-tutor] a", timeout=WAIT_MS)
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.className") == "skip"
    first = page.eval_on_selector("#needs tr[data-tutor]", "r => r.dataset.tutor")
    for _ in range(40):
        page.keyboard.press("Tab")
        if page.evaluate("() => document.activeElement.closest('#needs tr') !== null"):
            break
    else:
        raise AssertionError("Tab never reached the needs-action list")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert page.url.endswith(f"/tutors/{first}?window=30day")
    context.close()


def completion(tutor: str, hours_ago: float) -> dict[str, Any]:
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=hours_ago)
    return {
        "tutor_id": tutor, "student_id": "S00001", "session_number": 3,
        "scheduled_start": start.isoformat(), "actual_start": start.isoformat(),
        "duration_minutes": 50, "subject": "Algebra", "session_type": "1-on-1",
        "tutor_initiated_reschedule": False, "no_show": False, "late_start_minutes": 0,
        "engagement_score": 0.9, "learning_objectives_met": True, "technical_issues": False,
        "feedback": {"overall_rating": 5, "would_recommend": True},
    }  # fmt: skip


def test_a_worker_flush_updates_the_open_pages(
    served: str, data: str, redis_server_url: str, browser: Any
) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tutor, overview = context.new_page(), context.new_page()
    tutor.goto(f"{served}/tutors/T0002")
    overview.goto(f"{served}/")
    cell = 'td[data-window="7day"][data-metric="sessions_completed"]'
    tutor.wait_for_selector(cell, timeout=WAIT_MS)
    for page in (tutor, overview):
        page.wait_for_function("() => document.getElementById('live').textContent === 'live'",
                               timeout=WAIT_MS)  # fmt: skip
        page.evaluate("() => { window.__sameDocument = true; }")
    tutor.evaluate(
        """() => { window.__flashed = [];
        new MutationObserver(ms => ms.forEach(m => { if (m.target.classList?.contains('flash'))
          window.__flashed.push(m.target.dataset.key); }))
        .observe(document.body, {subtree: true, attributes: true, attributeFilter: ['class']}); }"""
    )
    before = shown_number(tutor.text_content(cell) or "")

    with httpx.Client(base_url=served, timeout=30) as http:
        for i in range(2):
            reply = http.post(f"/api/sessions/LIVE-{i}/complete", json=completion("T0002", 2 + i),
                              headers={"Authorization": f"Bearer {TOKEN}"})  # fmt: skip
            assert reply.status_code == 202, reply.text
    with overview.expect_request(lambda r: "/api/tiers" in r.url, timeout=WAIT_MS):
        result = cli(data, "worker", "run", "--burst", "--debounce", "0",
                     redis_url=redis_server_url)  # fmt: skip
        assert result.exit_code == 0, result.output

    engine = open_engine(data)
    stored = stored_metrics(engine).filter(pl.col("tutor_id") == "T0002")
    engine.dispose()
    now = latest(stored, "7day").to_dicts()[0]["sessions_completed"]
    assert before is not None and now == before + 2
    tutor.wait_for_function(
        f"() => document.querySelector('{cell}').textContent.trim().startsWith('{now}')",
        timeout=WAIT_MS,
    )
    tutor.wait_for_function("() => window.__flashed.includes('7day:sessions_completed')",
                            timeout=WAIT_MS)  # fmt: skip
    for page in (tutor, overview):  # updated in place: no reload
        assert page.evaluate("() => window.__sameDocument") is True
    context.close()


def test_the_stale_banner_shows_while_the_server_is_away(
    data: str, redis_server_url: str, browser: Any
) -> None:
    port = free_port()
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    with api_server(data, redis_server_url, port=port) as base:
        page.goto(f"{base}/tutors/T0001")
        page.wait_for_function("() => document.getElementById('live').textContent === 'live'",
                               timeout=WAIT_MS)  # fmt: skip
        assert page.is_hidden("#banner")
    page.wait_for_selector("#banner", state="visible", timeout=WAIT_MS)
    text = page.text_content("#banner") or ""
    assert "stale since" in text and "Reconnecting in" in text
    assert (page.get_attribute("#banner time", "title") or "").endswith(" UTC")
    assert page.text_content("#live") == "disconnected"
    page.screenshot(path=str(ARTIFACTS / "tutor-disconnected.png"))
    # back: the page reconnects by itself (backoff) and the banner goes
    with api_server(data, redis_server_url, port=port):
        page.wait_for_selector("#banner", state="hidden", timeout=90_000)
        assert page.text_content("#live") == "live"
    context.close()
