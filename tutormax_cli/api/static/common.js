// tutormax dashboard: what both pages share. Plain ES2020, no build step, no dependencies.
"use strict";

const TM = (() => {
  const TIERS = ["Exemplary", "Strong", "Developing", "Needs Attention", "At Risk"];
  const LABELS = {
    sessions_scheduled: "Sessions scheduled", sessions_completed: "Sessions completed",
    avg_rating: "Average rating", first_sessions_count: "First sessions",
    first_session_success_rate: "First-session success %", reschedule_count: "Tutor reschedules",
    reschedule_rate: "Reschedule rate %", no_show_count: "No-shows", no_show_rate: "No-show rate %",
    engagement_score: "Engagement score", learning_objectives_met_pct: "Objectives met %",
    response_time_avg_minutes: "Avg response (min)",
  };

  const esc = (v) => String(v ?? "").replace(/[&<>"']/g,
    (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
  const slug = (tier) => String(tier ?? "none").replace(/\s+/g, "-");
  const tierBadge = (tier) => tier
    ? `<span class="tier tier-${slug(tier)}">${esc(tier)}</span>` : `<span class="muted">—</span>`;
  const num = (v) => {
    if (v === null || v === undefined) return "—";
    if (typeof v !== "number") return esc(v);
    return Number.isInteger(v) ? v.toLocaleString() : v.toLocaleString(undefined, { maximumFractionDigits: 2 });
  };

  // Times: the viewer's zone in the text, UTC on hover (title) and in the datetime attribute.
  const parse = (iso) => (iso ? new Date(/[zZ]|[+-]\d\d:?\d\d$/.test(iso) ? iso : iso + "Z") : null);
  const utcText = (d) => d.toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
  const local = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });
  const timeEl = (iso) => {
    const d = parse(iso);
    if (!d || Number.isNaN(d.getTime())) return `<span class="muted">—</span>`;
    return `<time datetime="${esc(d.toISOString())}" title="${esc(utcText(d))}">${esc(local.format(d))}</time>`;
  };
  const age = (seconds) => {
    if (seconds === null || seconds === undefined) return "—";
    const s = Math.max(0, Math.round(seconds));
    if (s < 90) return `${s} s`;
    if (s < 5400) return `${Math.round(s / 60)} min`;
    if (s < 172800) return `${(s / 3600).toFixed(1)} h`;
    return `${(s / 86400).toFixed(1)} d`;
  };

  async function getJSON(path) {
    const reply = await fetch(path, { headers: { Accept: "application/json" } });
    const body = await reply.json().catch(() => ({}));
    if (!reply.ok) {
      const detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail ?? "");
      throw new Error(`${path}: ${reply.status} ${detail}`);
    }
    return body;
  }

  // A panel: render(data) into el; on error say so in the panel, keep the rest of the page.
  async function panel(el, path, render) {
    try {
      const data = await getJSON(path);
      el.innerHTML = render(data);
      el.removeAttribute("aria-busy");
      return data;
    } catch (err) {
      el.innerHTML = `<p class="error">Cannot read ${esc(err.message)}</p>`;
      return null;
    }
  }

  // Flash once each element whose data-key's rendered text changed since the last render.
  function flashChanged(root, before) {
    for (const el of root.querySelectorAll("[data-key]")) {
      const old = before.get(el.dataset.key);
      if (old !== undefined && old !== el.textContent) {
        el.classList.remove("flash");
        void el.offsetWidth; // restart the animation
        el.classList.add("flash");
        el.addEventListener("animationend", () => el.classList.remove("flash"), { once: true });
      }
    }
  }
  const snapshot = (root) => new Map([...root.querySelectorAll("[data-key]")].map((el) => [el.dataset.key, el.textContent]));

  // Sparkline / chart: hand-drawn SVG; nulls break the line.
  function pathPoints(values, x, y) {
    const runs = [[]];
    values.forEach((v, i) => {
      if (v === null || v === undefined) { if (runs[runs.length - 1].length) runs.push([]); return; }
      runs[runs.length - 1].push(`${x(i).toFixed(1)},${y(v).toFixed(1)}`);
    });
    return runs.filter((r) => r.length);
  }
  function sparkline(values, { width = 120, height = 26, min, max, label = "", levels = 0 } = {}) {
    const present = values.filter((v) => v !== null && v !== undefined);
    if (!present.length) return `<span class="muted">no history</span>`;
    const lo = min ?? Math.min(...present), hi = max ?? Math.max(...present);
    const pad = 3;
    const x = (i) => (values.length === 1 ? width / 2 : (i * width) / (values.length - 1));
    const y = (v) => (hi === lo ? height / 2 : pad + (height - 2 * pad) * (1 - (v - lo) / (hi - lo)));
    // faint lines at each level (e.g. each tier), so a flat line still says where it is
    const grid = Array.from({ length: levels }, (_, i) => {
      const v = lo + (i * (hi - lo)) / Math.max(levels - 1, 1);
      return `<line class="grid" x1="0" x2="${width}" y1="${y(v).toFixed(1)}" y2="${y(v).toFixed(1)}"/>`;
    }).join("");
    const lines = pathPoints(values, x, y).map((p) => (p.length === 1
      ? `<circle cx="${p[0].split(",")[0]}" cy="${p[0].split(",")[1]}" r="1.8" fill="currentColor"/>`
      : `<polyline points="${p.join(" ")}"/>`)).join("");
    let end = "";
    for (let i = values.length - 1; i >= 0; i -= 1) {
      if (values[i] !== null && values[i] !== undefined) {
        end = `<circle cx="${x(i).toFixed(1)}" cy="${y(values[i]).toFixed(1)}" r="2.4" fill="currentColor"/>`;
        break;
      }
    }
    return `<svg class="spark" role="img" aria-label="${esc(label)}" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}"><title>${esc(label)}</title>${grid}${lines}${end}</svg>`;
  }

  // The live feed: reconnect with backoff (1 s doubling to 30 s, jittered), a banner while
  // disconnected, and onOpen/onUpdate callbacks. No polling: updates arrive as the worker commits.
  function live(path, { onUpdate, onOpen }) {
    const banner = document.getElementById("banner");
    const badge = document.getElementById("live");
    let delay = 1000, staleSince = null, timer = null, countdown = null, socket = null;
    const setBadge = (state, text) => { badge.dataset.state = state; badge.textContent = text; };
    function showBanner(retryAt) {
      const render = () => {
        const left = Math.max(0, Math.round((retryAt - Date.now()) / 1000));
        banner.innerHTML = `Live updates disconnected — the page is stale since ${timeEl(staleSince.toISOString())}. `
          + `Reconnecting in ${left} s…`;
      };
      render();
      banner.hidden = false;
      clearInterval(countdown);
      countdown = setInterval(render, 1000);
    }
    function connect() {
      const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}${path}`;
      socket = new WebSocket(url);
      socket.onmessage = (event) => {
        let msg;
        try { msg = JSON.parse(event.data); } catch { return; }
        if (msg.type === "subscribed") {
          delay = 1000;
          const wasStale = staleSince !== null;
          staleSince = null;
          banner.hidden = true;
          clearInterval(countdown);
          setBadge("live", "live");
          onOpen(wasStale);
        } else if (msg.type === "metrics.updated") {
          onUpdate(msg);
        }
      };
      socket.onclose = () => {
        if (staleSince === null) staleSince = new Date();
        setBadge("down", "disconnected");
        const wait = Math.min(delay, 30000) * (0.8 + Math.random() * 0.4);
        delay = Math.min(delay * 2, 30000);
        showBanner(Date.now() + wait);
        clearTimeout(timer);
        timer = setTimeout(connect, wait);
      };
    }
    setBadge("connecting", "connecting…");
    connect();
    return { close: () => { clearTimeout(timer); if (socket) { socket.onclose = null; socket.close(); } } };
  }

  // Coalesce bursts (a worker flush publishes one update per tutor) into one refresh.
  function debounce(fn, ms) {
    let t = null;
    return (...args) => { clearTimeout(t); t = setTimeout(() => fn(...args), ms); };
  }

  return { TIERS, LABELS, esc, slug, tierBadge, num, timeEl, age, parse, getJSON, panel,
    flashChanged, snapshot, sparkline, pathPoints, live, debounce };
})();
