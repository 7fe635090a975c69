// Shared pieces of the views: the html tag, polling, progress bars, badges, errors, charts, formatting.
import { h } from "preact";
import { useEffect, useRef, useState, useCallback } from "preact/hooks";
import htm from "htm";
import { Chart, registerables } from "chart.js";
import { pollMs } from "./api.js";

Chart.register(...registerables);
export const html = htm.bind(h);

// Run `load` now and again `intervalMs` after each answer (never closer than pollMs), while the tab is
// visible and `active` holds. Returns [data, error, reload].
export function usePoll(load, deps, { intervalMs = pollMs, active = true } = {}) {
  const [state, setState] = useState({ data: null, error: null });
  const tick = useRef(0);
  const reload = useCallback(async () => {
    const mine = ++tick.current;
    try {
      const data = await load();
      if (mine === tick.current) setState({ data, error: null });
    } catch (error) {
      if (mine === tick.current) setState((old) => ({ data: old.data, error }));
    }
  }, deps);
  // The last answer stays on screen while the next loads (a filter or page change): no blank flash.
  useEffect(() => {
    let stopped = false;
    let timer = null;
    const loop = async () => {
      if (stopped) return;
      if (!document.hidden) await reload();
      if (!stopped && active) timer = setTimeout(loop, Math.max(pollMs, intervalMs));
    };
    loop();
    return () => {
      stopped = true;
      tick.current++;
      clearTimeout(timer);
    };
  }, [...deps, active]);
  return [state.data, state.error, reload];
}

export function ProgressBar({ percent, failed = 0, total = 0, large = false, label }) {
  const value = Math.max(0, Math.min(100, Number(percent) || 0));
  const failedShare = total ? Math.min(100, (100 * failed) / total) : 0;
  return html`<div class=${"progress" + (large ? " large" : "")}>
    <div class=${"bar" + (value >= 100 ? " done" : "")} role="progressbar" aria-label=${label || "progress"}
      aria-valuemin="0" aria-valuemax="100" aria-valuenow=${Math.round(value)}>
      <span style=${`width:${value}%`}></span>
      ${failedShare > 0 && html`<span class="failed" style=${`left:${Math.max(0, value - failedShare)}%;width:${failedShare}%`}></span>`}
    </div>
    <span class="pct">${value.toFixed(value >= 100 || value === 0 ? 0 : 1)}%</span>
  </div>`;
}

export function Badge({ value, tone }) {
  const text = String(value ?? "-");
  return html`<span class=${"badge " + (tone || text.toLowerCase())}>${text}</span>`;
}

export function size(bytes) {
  const n = Number(bytes) || 0;
  if (n < 1e3) return `${n} B`;
  if (n < 1e6) return `${fmt(n / 1e3, 1)} KB`;
  return `${fmt(n / 1e6, 1)} MB`;
}

export function ErrorBox({ error }) {
  if (!error) return null;
  return html`<div class="error" role="alert">
    <strong>${error.message}</strong>
    ${error.details && error.details.length > 0 &&
    html`<ul>${error.details.map((d) => html`<li>${d.field}: ${d.problem}</li>`)}</ul>`}
  </div>`;
}

export function Card({ label, value, title }) {
  return html`<div class="card" title=${title || ""}>
    <div class="label">${label}</div>
    <div class="value">${value ?? "–"}</div>
  </div>`;
}

export function Empty({ children }) {
  return html`<div class="empty">${children}</div>`;
}

const PALETTE = ["#3654d6", "#e0773b", "#14a06a", "#c0398f", "#8a62d8", "#d2a200", "#2b9fc4", "#c02b2b"];
export const color = (index) => PALETTE[index % PALETTE.length];

// A Chart.js chart in a box of fixed height: created once, its data replaced in place (no animation), so a
// refresh never re-lays out the page. `data-total` carries the sum of its values (for tests and screen
// readers' summary in the label).
export function ChartView({ type, labels, datasets, label, stacked = false, yTitle, options = {} }) {
  const canvas = useRef(null);
  const chart = useRef(null);
  const total = datasets.reduce((sum, d) => sum + d.data.reduce((a, b) => a + (Number(b) || 0), 0), 0);
  useEffect(() => {
    chart.current = new Chart(canvas.current, {
      type,
      data: { labels: [], datasets: [] },
      options: {
        responsive: true,
        maintainAspectRatio: false,
        animation: false,
        interaction: { mode: "index", intersect: false },
        plugins: { legend: { position: "bottom", labels: { boxWidth: 12 } } },
        scales: type === "doughnut" ? {} : {
          x: { stacked, ticks: { maxRotation: 0, autoSkipPadding: 12 } },
          y: { stacked, beginAtZero: true, title: { display: !!yTitle, text: yTitle || "" } },
        },
        ...options,
      },
    });
    return () => chart.current.destroy();
  }, [type, stacked]);
  useEffect(() => {
    const c = chart.current;
    c.data.labels = labels;
    c.data.datasets = datasets.map((d, i) => ({
      borderColor: color(i), backgroundColor: type === "line" ? color(i) + "33" : color(i),
      pointRadius: 2, borderWidth: 2, tension: 0.25, ...d,
    }));
    c.update("none");
  }, [JSON.stringify(labels), JSON.stringify(datasets)]);
  return html`<div class="chart-box">
    <canvas ref=${canvas} role="img" aria-label=${`${label}: ${fmt(total)} in total`} data-total=${total}></canvas>
  </div>`;
}

export function fmt(value, digits = 0) {
  if (value === null || value === undefined || value === "") return "–";
  const n = Number(value);
  if (!Number.isFinite(n)) return String(value);
  return n.toLocaleString(undefined, { maximumFractionDigits: digits, minimumFractionDigits: 0 });
}

export function usd(value) {
  const n = Number(value) || 0;
  return "$" + n.toLocaleString(undefined, { minimumFractionDigits: n < 1 ? 4 : 2, maximumFractionDigits: n < 1 ? 6 : 2 });
}

export function when(value) {
  if (!value) return "–";
  const date = new Date(value);
  if (Number.isNaN(date.getTime())) return String(value);
  const seconds = Math.round((Date.now() - date.getTime()) / 1000);
  const ago = Math.abs(seconds) < 60 ? `${seconds}s` : Math.abs(seconds) < 3600 ? `${Math.round(seconds / 60)} min`
    : Math.abs(seconds) < 86400 ? `${Math.round(seconds / 3600)} h` : `${Math.round(seconds / 86400)} d`;
  return html`<time datetime=${date.toISOString()} title=${date.toLocaleString()}>${seconds >= 0 ? ago + " ago" : "in " + ago.replace("-", "")}</time>`;
}

export function shortId(id) {
  const text = String(id || "");
  return text.length > 14 ? text.slice(0, 8) + "…" + text.slice(-4) : text;
}

export function Pager({ offset, limit, total, count, next, onPage, label = "results" }) {
  const shown = count ?? Math.min(limit, Math.max(0, (total ?? 0) - offset));
  const range = shown ? `${offset + 1}–${offset + shown}` : "none";
  return html`<nav class="pager" aria-label=${"pages of " + label}>
    <span class="muted tabular">${range}${total != null ? ` of ${fmt(total)}` : ""}</span>
    <button class="secondary" disabled=${offset <= 0} onClick=${() => onPage(Math.max(0, offset - limit))}>Previous</button>
    <button class="secondary" disabled=${next == null} onClick=${() => onPage(next)}>Next</button>
  </nav>`;
}

// A table that reads well on a phone: each column is {label, cell: (row) => content, num?, wide?, mono?};
// on a narrow screen each row becomes a small card of labelled fields (CSS `table.stack`).
export function Table({ caption, columns, rows, rowKey, rowClass }) {
  return html`<div class="table-wrap"><table class="stack">
    <caption class="visually-hidden">${caption}</caption>
    <thead><tr>${columns.map((c) => html`<th class=${c.num ? "num" : ""} scope="col">${c.label}</th>`)}</tr></thead>
    <tbody>${rows.map((row, i) => html`<tr key=${rowKey ? rowKey(row) : i} class=${rowClass ? rowClass(row) : ""}>
      ${columns.map((c) => html`<td data-label=${c.label}
        class=${[c.num && "num", c.wide && "wide wrap", c.mono && "mono"].filter(Boolean).join(" ")}>${c.cell(row)}</td>`)}
    </tr>`)}</tbody>
  </table></div>`;
}
