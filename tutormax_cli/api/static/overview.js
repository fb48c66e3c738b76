// The overview: tiers, needs action, recent changes, worker health and freshness.
"use strict";

(() => {
  const { esc, tierBadge, num, timeEl, age, sparkline, panel, snapshot, flashChanged, LABELS, TIERS } = TM;
  const $ = (id) => document.getElementById(id);
  let lastStatus = null, statusAt = 0;

  function tierFigure(doc) {
    const top = Math.max(1, ...doc.tiers.map((t) => t.tutors));
    const since = doc.compared_with ? `vs ${esc(doc.compared_with)}` : "no history 7 days back";
    const rows = doc.tiers.map((t) => {
      const change = t.change === null ? "—" : t.change > 0 ? `+${t.change}` : t.change < 0 ? `−${-t.change}` : "±0";
      const said = t.change === null ? "no earlier count" : `${t.earlier} seven days earlier`;
      return `<div class="bar-row" data-window="${esc(doc.window)}" data-tier="${esc(t.tier)}">
        ${tierBadge(t.tier)}
        <div class="bar" aria-hidden="true"><span class="fill-${TM.slug(t.tier)}" style="width:${(100 * t.tutors / top).toFixed(1)}%"></span></div>
        <span class="num count" data-key="tier:${esc(doc.window)}:${esc(t.tier)}" title="${esc(t.share_pct)} % of ${doc.tutors}">${t.tutors}</span>
        <span class="change" title="${esc(said)}" data-key="change:${esc(doc.window)}:${esc(t.tier)}">${change}</span>
      </div>`;
    }).join("");
    return `<figure aria-label="${esc(doc.window)} window">
      <figcaption>${esc(doc.window)} <span class="muted">· ${doc.tutors} tutors · ${esc(doc.metric_date ?? "no rows")} ${since}</span></figcaption>
      ${rows}</figure>`;
  }

  function tierTrendLabel(tiers) {
    const known = tiers.filter(Boolean);
    if (!known.length) return "no tier history";
    return known[0] === known[known.length - 1] ? `${known[0]} throughout the last 30 days`
      : `from ${known[0]} to ${known[known.length - 1]} over the last 30 days`;
  }

  function needsTable(doc) {
    $("needs-count").textContent = doc.count > doc.tutors.length
      ? `${doc.tutors.length} of ${doc.count} shown` : `${doc.count} tutor${doc.count === 1 ? "" : "s"}`;
    if (!doc.tutors.length) return `<p>No tutor is At Risk or Needs Attention in the ${esc(doc.window)} window.</p>`;
    const rows = doc.tutors.map((t) => {
      const flags = t.red.map((m) => {
        const f = t.flags[m];
        return `<li class="flag-red">✗ ${esc(LABELS[m] ?? m)} ${num(f.value)} <span class="muted">(${esc(f.rule)})</span></li>`;
      }).join("") || `<li class="muted">no red flag under the current thresholds</li>`;
      // tier rank, best at the top of the sparkline
      const ranks = t.trend.tiers.map((x) => (x === null ? null : TIERS.length - 1 - TIERS.indexOf(x)));
      const label = tierTrendLabel(t.trend.tiers);
      return `<tr data-tutor="${esc(t.tutor_id)}" data-key="need:${esc(t.tutor_id)}">
        <td><a href="/tutors/${encodeURIComponent(t.tutor_id)}?window=${encodeURIComponent(doc.window)}">${esc(t.tutor_id)}</a></td>
        <td>${tierBadge(t.performance_tier)}</td>
        <td class="flags-cell"><ul class="flags">${flags}</ul></td>
        <td class="trend tier-${TM.slug(t.performance_tier)}">${sparkline(ranks, { min: 0, max: TIERS.length - 1, label, levels: TIERS.length })}<span class="visually-hidden">${esc(label)}</span></td>
        <td class="hide-narrow">${timeEl(t.calculation_date)}</td>
      </tr>`;
    }).join("");
    return `<table class="stack"><thead><tr><th>Tutor</th><th>Tier</th><th>Red flags (threshold)</th>
      <th>Tier, 30 days</th><th class="hide-narrow">Computed</th></tr></thead><tbody>${rows}</tbody></table>`;
  }

  function changesList(doc) {
    if (!doc.changes.length) return `<p>No tier changed in the last ${esc(doc.days ?? "")} metric dates.</p>
      <p class="note">Read from ${esc(doc.source)}.</p>`;
    const items = doc.changes.map((c) => `<li class="${c.direction === "up" ? "up" : "down"}" data-key="change:${esc(c.tutor_id)}:${esc(c.window)}:${esc(c.as_of)}">
      <a href="/tutors/${encodeURIComponent(c.tutor_id)}">${esc(c.tutor_id)}</a>
      <span class="muted">${esc(c.window)}</span> ${tierBadge(c.from)} → ${tierBadge(c.to)}
      <span class="muted">${c.direction === "up" ? "(better)" : "(worse)"} · ${timeEl(c.as_of)}</span></li>`).join("");
    return `<ol class="changes">${items}</ol><p class="note">Newest first, read from ${esc(doc.source)}.</p>`;
  }

  function workerPanel(doc) {
    const s = doc.streams[0];
    const cell = (value, label, bad, key) => `<div class="${bad ? "bad" : "ok"}"><b data-key="${key}">${value}</b><span>${label}${bad ? " — attention" : ""}</span></div>`;
    const dl = doc.dead_letter;
    const groups = doc.streams.map((g) => `<tr><td>${esc(g.stream)}<br><span class="muted">${esc(g.group)}</span></td>
      <td class="num">${g.workers}</td><td class="num">${num(g.lag)}</td><td class="num">${num(g.pending)}</td>
      <td class="num">${age(g.oldest_pending_age_s)}</td></tr>`).join("");
    const verdict = doc.healthy ? `<p class="flag-green">✓ Healthy</p>` : `<p class="flag-red">✗ Unhealthy</p>`;
    const notes = [...doc.problems.map((p) => `<li class="flag-red">✗ ${esc(p)}</li>`),
      ...doc.warnings.map((w) => `<li>! ${esc(w)}</li>`)].join("");
    return `${verdict}<div class="kv">
      ${cell(num(s.lag), "lag (entries not yet read)", s.lag > 0 && !s.workers, "w:lag")}
      ${cell(num(s.pending), "pending (read, not acknowledged)", s.pending > 0 && !s.workers, "w:pending")}
      ${cell(age(s.oldest_pending_age_s), "oldest pending", (s.oldest_pending_age_s ?? 0) > 300, "w:oldest")}
      ${cell(String(s.workers), "live consumers", s.workers === 0, "w:live")}
      ${cell(num(dl.length), `dead letters (${dl.last_hour} in the last hour)`, dl.last_hour > 0, "w:dead")}
    </div>
    ${notes ? `<ul>${notes}</ul>` : ""}
    <details><summary>Every group</summary><div class="scroll"><table><thead><tr><th>stream / group</th>
      <th class="num">live</th><th class="num">lag</th><th class="num">pending</th><th class="num">oldest</th></tr></thead>
      <tbody>${groups}</tbody></table></div></details>`;
  }

  function freshnessTable(doc) {
    if (!doc.freshness) return `<p class="error">The database could not be read.</p>`;
    const elapsed = (Date.now() - statusAt) / 1000;
    const rows = Object.entries(doc.freshness).map(([w, f]) => `<tr>
      <td>${esc(w)}</td><td class="num">${f.tutors}</td>
      <td class="num" data-key="fresh:${esc(w)}:newest">${f.newest_age_s === null ? "—" : age(f.newest_age_s + elapsed)}</td>
      <td class="hide-narrow">${timeEl(f.newest)}</td>
      <td class="num">${f.oldest_age_s === null ? "—" : age(f.oldest_age_s + elapsed)}</td>
      <td class="hide-narrow">${timeEl(f.oldest)}</td></tr>`).join("");
    return `<table><thead><tr><th>window</th><th class="num">tutors</th><th class="num">newest age</th>
      <th class="hide-narrow">newest</th><th class="num">oldest age</th><th class="hide-narrow">oldest</th></tr></thead>
      <tbody>${rows}</tbody></table>`;
  }

  async function refreshStatus() {
    const before = snapshot($("worker"));
    const doc = await panel($("worker"), "/api/status", workerPanel);
    if (doc) { lastStatus = doc; statusAt = Date.now(); $("freshness").innerHTML = freshnessTable(doc); }
    else $("freshness").innerHTML = `<p class="error">Worker status unavailable.</p>`;
    $("freshness").removeAttribute("aria-busy");
    flashChanged($("worker"), before);
  }

  async function refreshMetrics() {
    const els = ["tiers", "needs", "changes"].map($);
    const before = els.map(snapshot);
    const window = $("needs-window").value;
    await Promise.all([
      panel($("tiers"), "/api/tiers", (d) => d.windows.map(tierFigure).join("")),
      panel($("needs"), `/api/needs-action?window=${encodeURIComponent(window)}`, needsTable),
      panel($("changes"), "/api/tier-changes?limit=20", changesList),
    ]);
    els.forEach((el, i) => flashChanged(el, before[i]));
  }

  const onUpdates = TM.debounce(() => { refreshMetrics(); refreshStatus(); }, 300);
  $("needs-window").addEventListener("change", refreshMetrics);
  $("find").addEventListener("submit", () => {
    const id = $("find-id").value.trim();
    if (id) location.href = `/tutors/${encodeURIComponent(id)}`;
  });
  refreshMetrics();
  refreshStatus();
  // Worker health is not metric data and has no feed of its own: re-read it every 15 s, and
  // re-render the ages every 5 s from the last reading.
  setInterval(refreshStatus, 15000);
  setInterval(() => { if (lastStatus) $("freshness").innerHTML = freshnessTable(lastStatus); }, 5000);
  TM.live("/ws/tutors", {
    onUpdate: onUpdates,
    onOpen: (wasStale) => { if (wasStale) onUpdates(); },
  });
})();
