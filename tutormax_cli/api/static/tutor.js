// One tutor: the three windows side by side with flags and thresholds, 30-day trend charts
// per metric, and why the chosen window's row has its tier.
"use strict";

(() => {
  const { esc, tierBadge, num, timeEl, age, panel, snapshot, flashChanged, LABELS } = TM;
  const $ = (id) => document.getElementById(id);
  const tutorId = decodeURIComponent(location.pathname.replace(/^\/tutors\//, "").replace(/\/$/, ""));
  const params = new URLSearchParams(location.search);
  if (["7day", "30day", "90day"].includes(params.get("window"))) $("window").value = params.get("window");
  document.title = `tutormax — tutor ${tutorId}`;
  $("where").textContent = `Tutor ${tutorId}`;

  function flagCell(d, metric) {
    const f = d.flags[metric];
    const value = num(d[metric]);
    if (!f || !f.flag) return value;
    const mark = f.flag === "red" ? "✗" : "✓";
    return `<span class="flag-${f.flag}" title="${esc(f.flag)}: ${esc(f.rule)}">${mark} ${value} <span class="muted hide-narrow">${esc(f.rule)}</span></span>`;
  }

  function windowsTable(doc) {
    $("as-of").innerHTML = `· metric date ${esc(doc.metric_date)} · as of ${timeEl(doc.as_of)}`;
    const names = Object.keys(doc.windows);
    const head = names.map((w) => `<th class="num" scope="col">${esc(w)}</th>`).join("");
    const tier = names.map((w) => `<td class="num" data-key="tier:${esc(w)}">${tierBadge(doc.windows[w].performance_tier)}</td>`).join("");
    const rows = Object.entries(LABELS).map(([metric, label]) => {
      const rule = doc.thresholds[metric];
      const cells = names.map((w) => `<td class="num" data-key="${esc(w)}:${metric}" data-metric="${metric}" data-window="${esc(w)}">${flagCell(doc.windows[w], metric)}</td>`).join("");
      const th = rule ? `<span class="flag-green">✓ ${esc(rule.green)}</span> · <span class="flag-red">✗ ${esc(rule.red)}</span>` : `<span class="muted">not flagged</span>`;
      const narrow = rule ? `<span class="show-narrow">${th}</span>` : "";
      return `<tr><th scope="row">${esc(label)}${narrow}</th>${cells}<td class="hide-narrow">${th}</td></tr>`;
    }).join("");
    const ages = names.map((w) => `<td class="num muted">${age(doc.windows[w].age_s)} old</td>`).join("");
    return `<table><thead><tr><th scope="col">metric</th>${head}<th scope="col" class="hide-narrow">thresholds (green · red)</th></tr></thead>
      <tbody><tr><th scope="row">Tier</th>${tier}<td class="hide-narrow"></td></tr>${rows}
      <tr><th scope="row">Row age</th>${ages}<td class="hide-narrow"></td></tr></tbody></table>`;
  }

  function chart(metric, values, dates, rule) {
    const W = 240, H = 90, L = 30, B = 14;
    const present = values.filter((v) => v !== null && v !== undefined);
    const label = LABELS[metric] ?? metric;
    if (!present.length) return `<figure data-metric="${metric}"><figcaption>${esc(label)}</figcaption><p class="muted">no values</p></figure>`;
    const lines = [];
    const parseRule = (r) => (r ? Number(r.replace(/[^\d.\-]/g, "")) : null);
    const g = rule ? parseRule(rule.green) : null, r = rule ? parseRule(rule.red) : null;
    let lo = Math.min(...present, ...(g !== null ? [g] : []), ...(r !== null ? [r] : []));
    let hi = Math.max(...present, ...(g !== null ? [g] : []), ...(r !== null ? [r] : []));
    if (hi === lo) { hi += 1; lo -= 1; }
    const x = (i) => L + (values.length === 1 ? (W - L) / 2 : (i * (W - L - 4)) / (values.length - 1));
    const y = (v) => 4 + (H - B - 8) * (1 - (v - lo) / (hi - lo));
    for (const [v, cls] of [[g, "threshold-green"], [r, "threshold-red"]]) {
      if (v !== null && !Number.isNaN(v)) lines.push(`<line class="${cls}" x1="${L}" x2="${W}" y1="${y(v).toFixed(1)}" y2="${y(v).toFixed(1)}"/>`);
    }
    const paths = TM.pathPoints(values, x, y).map((p) => (p.length === 1
      ? `<circle cx="${p[0].split(",")[0]}" cy="${p[0].split(",")[1]}" r="2" fill="currentColor"/>`
      : `<polyline points="${p.join(" ")}"/>`)).join("");
    const last = values[values.length - 1];
    const summary = `${label}: from ${num(present[0])} to ${num(present[present.length - 1])}, low ${num(Math.min(...present))}, high ${num(Math.max(...present))}, ${dates[0]} to ${dates[dates.length - 1]}`;
    return `<figure data-metric="${metric}"><figcaption>${esc(label)} <span class="muted">latest ${num(last)}</span></figcaption>
      <svg class="chart" role="img" aria-label="${esc(summary)}" viewBox="0 0 ${W} ${H}">
        <line x1="${L}" x2="${W}" y1="${H - B}" y2="${H - B}"/>
        <text x="0" y="10">${esc(num(hi))}</text><text x="0" y="${H - B}">${esc(num(lo))}</text>
        <text x="${L}" y="${H - 2}">${esc(String(dates[0]).slice(5))}</text>
        <text x="${W}" y="${H - 2}" text-anchor="end">${esc(String(dates[dates.length - 1]).slice(5))}</text>
        ${lines.join("")}${paths}</svg></figure>`;
  }

  function trendCharts(doc) {
    const t = doc.trend;
    if (!t.dates.length) return `<p>No daily rows in the ${esc(t.window)} window yet.</p>`;
    return Object.keys(LABELS).map((m) => chart(m, t.metrics[m], t.dates, doc.thresholds[m])).join("")
      + `<p class="note">Dashed lines: the green (long dashes) and red (short dashes) thresholds.</p>`;
  }

  const KINDS = { no_shows: "No-shows", lowest_ratings: "Lowest ratings (≤ 3)",
    reschedules: "Tutor reschedules", failed_first_sessions: "First sessions rated below 4" };

  function explanation(doc) {
    const ex = doc.explain;
    if (!ex) return `<p>No ${esc($("window").value)} row to explain.</p>`;
    const flags = [...ex.red.map((m) => ["red", m]), ...ex.green.map((m) => ["green", m])].map(([c, m]) => {
      const f = ex.flags[m];
      const strong = ex.decisive.includes(m) ? " <b>(decisive)</b>" : "";
      return `<li class="flag-${c}">${c === "red" ? "✗" : "✓"} ${esc(LABELS[m] ?? m)} ${num(f.value)} ${esc(f.rule)}${strong}</li>`;
    }).join("");
    const tables = Object.entries(KINDS).map(([kind, title]) => {
      const rows = ex.sessions[kind];
      if (!rows.length) return "";
      const body = rows.map((r) => `<tr><td>${esc(r.session_id)}</td><td>${timeEl(r.scheduled_start)}</td>
        <td>${esc(r.student_id ?? "—")}</td><td>${esc(r.subject ?? "—")}</td><td class="num">${num(r.overall_rating)}</td>
        <td class="num">${r.late_start_minutes ? `${r.late_start_minutes} min` : ""}</td></tr>`).join("");
      return `<h3>${esc(title)}: ${rows.length} of ${ex.counts[kind]} (${ex.counts.sessions} sessions)</h3>
        <div class="scroll" tabindex="0"><table><thead><tr><th>session</th><th>scheduled</th><th>student</th><th>subject</th>
        <th class="num">rating</th><th class="num">late</th></tr></thead><tbody>${body}</tbody></table></div>`;
    }).join("");
    const differs = ex.stored_tier_differs ? `<p>! The stored tier was computed under other thresholds.</p>` : "";
    return `<p data-key="explain:rule"><b>${tierBadge(ex.tier)} in the ${esc(ex.window)} window:</b> ${esc(ex.rule)}</p>
      ${differs}<ul class="flags">${flags || "<li class='muted'>no flag</li>"}</ul>${tables}`;
  }

  async function refresh() {
    const els = ["windows", "trend", "explain"].map($);
    const before = els.map(snapshot);
    const window = $("window").value;
    const path = `/api/tutors/${encodeURIComponent(tutorId)}/report?window=${encodeURIComponent(window)}`;
    const doc = await panel($("windows"), path, windowsTable);
    if (doc) {
      $("trend").innerHTML = trendCharts(doc);
      $("explain").innerHTML = explanation(doc);
    } else {
      $("trend").innerHTML = ""; $("explain").innerHTML = "";
    }
    els.forEach((el) => el.removeAttribute("aria-busy"));
    els.forEach((el, i) => flashChanged(el, before[i]));
  }

  $("window").addEventListener("change", () => {
    const url = new URL(location.href);
    url.searchParams.set("window", $("window").value);
    history.replaceState(null, "", url);
    refresh();
  });
  refresh();
  const onUpdate = TM.debounce(refresh, 200);
  TM.live(`/ws/tutors/${encodeURIComponent(tutorId)}`, {
    onUpdate,
    onOpen: (wasStale) => { if (wasStale) refresh(); },
  });
})();
