// Usage analytics: calls, latency percentiles, tokens and cost by model over time (GET /analytics/metrics
// for each period of the range, per model), the insights (GET /analytics/insights), and the live figures of
// the SSE stream (GET /analytics/stream).
import { useEffect, useState } from "preact/hooks";
import { api, streamEvents } from "./api.js";
import { html, usePoll, Card, ChartView, ErrorBox, Empty, ProgressBar, Badge, fmt, usd } from "./ui.js";

const RANGES = {
  hour: { label: "Last hour", steps: 12, stepMs: 5 * 60e3 },
  day: { label: "Last 24 hours", steps: 24, stepMs: 3600e3 },
  week: { label: "Last 7 days", steps: 14, stepMs: 12 * 3600e3 },
};
const PARALLEL = 4; // requests in flight at once: the series costs steps x (1 + models) reads
const REFRESH_MS = 30000;
const LIVE_POINTS = 60;

async function pool(tasks, size) {
  const results = new Array(tasks.length);
  let next = 0;
  const worker = async () => {
    while (next < tasks.length) {
      const index = next++;
      results[index] = await tasks[index]();
    }
  };
  await Promise.all(Array.from({ length: Math.min(size, tasks.length) }, worker));
  return results;
}

function label(date, range) {
  return range === "week"
    ? date.toLocaleString(undefined, { weekday: "short", hour: "2-digit" })
    : date.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
}

async function loadSeries(range) {
  const { steps, stepMs } = RANGES[range];
  const end = Math.ceil(Date.now() / stepMs) * stepMs;
  const starts = Array.from({ length: steps }, (_, i) => end - (steps - i) * stepMs);
  const to = new Date(Math.min(end, Date.now())).toISOString();
  const from = new Date(starts[0]).toISOString();
  const whole = await api("/analytics/metrics", { params: { from, to } });
  const models = Object.keys(whole.metrics.requests.byModel).sort();
  const windows = starts.map((start) => ({
    from: new Date(start).toISOString(),
    to: new Date(Math.min(start + stepMs, Date.now())).toISOString(),
  }));
  const tasks = windows.flatMap((w) => [
    () => api("/analytics/metrics", { params: w }),
    ...models.map((model) => () => api("/analytics/metrics", { params: { ...w, model } })),
  ]);
  const answers = await pool(tasks, PARALLEL);
  const per = 1 + models.length;
  const buckets = windows.map((w, i) => ({
    at: new Date(starts[i]),
    all: answers[i * per].metrics,
    byModel: Object.fromEntries(models.map((m, k) => [m, answers[i * per + 1 + k].metrics])),
  }));
  return { whole: whole.metrics, models, buckets, range };
}

function Live() {
  const [snapshot, setSnapshot] = useState(null);
  const [connected, setConnected] = useState(false);
  const [points, setPoints] = useState([]);
  useEffect(() => {
    const controller = new AbortController();
    streamEvents("/analytics/stream", {
      signal: controller.signal,
      onState: (on) => setConnected(on),
      onEvent: (_type, data) => {
        const realtime = data.realtime || data;
        setSnapshot(realtime);
        setPoints((old) => [...old, { at: new Date(), realtime }].slice(-LIVE_POINTS));
      },
    });
    return () => controller.abort();
  }, []);
  const minute = snapshot ? snapshot.lastMinute : {};
  const inFlight = snapshot ? snapshot.inFlight.list : [];
  return html`<section class="panel" aria-labelledby="live-title">
    <div class="panel-head"><h2 id="live-title"><span class=${"live-dot" + (connected ? " on" : "")} aria-hidden="true"></span>Live</h2>
      <span class="muted" role="status">${connected ? "connected to the stream" : "connecting…"}</span></div>
    <div class="cards">
      <${Card} label="Calls, last minute" value=${fmt(minute.requests)} />
      <${Card} label="Calls per second" value=${fmt(minute.callsPerSecond, 2)} />
      <${Card} label="Error rate" value=${minute.errorRate === undefined ? "–" : fmt(minute.errorRate, 1) + "%"} />
      <${Card} label="p95 latency" value=${minute.p95ResponseTime === undefined ? "–" : fmt(minute.p95ResponseTime) + " ms"} />
      <${Card} label="Tokens per second" value=${fmt(minute.tokensPerSecond, 1)} />
      <${Card} label="Batches in flight" value=${snapshot ? fmt(snapshot.inFlight.batches) : "–"} />
    </div>
    <div class="grid-2">
      <${ChartView} type="line" label="Calls per second, live" yTitle="calls/s"
        labels=${points.map((p) => p.at.toLocaleTimeString())}
        datasets=${[
          { label: "last minute", data: points.map((p) => p.realtime.lastMinute.callsPerSecond) },
          { label: "last 5 minutes", data: points.map((p) => p.realtime.last5Minutes.callsPerSecond) },
        ]} />
      <div class="table-wrap scroll-box">
        ${inFlight.length ? html`<table><caption class="visually-hidden">Batches in flight</caption>
          <thead><tr><th>Batch</th><th>Kind</th><th>Progress</th></tr></thead>
          <tbody>${inFlight.map((b) => html`<tr key=${b.batchId}><td class="mono"><a href=${"#/jobs/" + encodeURIComponent(b.batchId)}>${b.batchId.slice(0, 10)}</a></td>
            <td>${b.kind}</td><td><${ProgressBar} percent=${b.percent} total=${b.total} label=${"progress of " + b.batchId} /></td></tr>`)}</tbody></table>`
          : html`<${Empty}>No batch in flight.<//>`}
      </div>
    </div>
  </section>`;
}

function Insights() {
  const [data, error] = usePoll(() => api("/analytics/insights"), [], { intervalMs: 60000 });
  if (error) return html`<${ErrorBox} error=${error} />`;
  if (!data) return html`<${Empty}>Loading insights…<//>`;
  const { performance, usage, errors } = data.insights;
  return html`<div>
    <div class=${"insight " + performance.status}>
      <h3>Performance <${Badge} value=${performance.status} /></h3>
      <p>${performance.message}</p>
      ${performance.recommendations.length > 0 && html`<ul>${performance.recommendations.map((r) => html`<li>${r}</li>`)}</ul>`}
    </div>
    <div class="insight">
      <h3>Usage: ${usage.trend}</h3>
      <p class="tabular">${fmt(usage.calls)} calls (previous window ${fmt(usage.previousCalls)}).
        Peak hours (UTC): ${usage.peakHours.length ? usage.peakHours.join(", ") : "none"}.
        ${usage.savings && html` Savings: ${usd(usage.savings.totalUsd)} (cache ${usd(usage.savings.cacheUsd)}, Batch Mode ${usd(usage.savings.batchModeUsd)}).`}</p>
      ${usage.costOptimization.length > 0 && html`<ul>${usage.costOptimization.map((r) => html`<li>${r}</li>`)}</ul>`}
    </div>
    <div class="insight">
      <h3>Errors</h3>
      <p>Most common: ${errors.mostCommon || "none"} · frequency ${errors.frequency}
        ${errors.retries && html` · ${fmt(errors.retries.absorbedByRetries)} of ${fmt(errors.retries.failedCalls)} failed calls absorbed by retries`}</p>
      ${errors.suggestions.length > 0 && html`<ul>${errors.suggestions.map((r) => html`<li>${r}</li>`)}</ul>`}
    </div>
  </div>`;
}

export function AnalyticsView() {
  const [range, setRange] = useState("hour");
  const [series, error] = usePoll(() => loadSeries(range), [range], { intervalMs: REFRESH_MS });
  const current = series;
  const labels = current ? current.buckets.map((b) => label(b.at, current.range)) : [];
  const models = current ? current.models : [];
  const perModel = (pick) => models.map((m) => ({ label: m, data: current.buckets.map((b) => pick(b.byModel[m])) }));
  const whole = current ? current.whole : null;
  return html`
    <div class="panel-head"><h1>Analytics</h1>
      <div class="field"><label for="range">Range</label>
        <select id="range" value=${range} onChange=${(e) => setRange(e.target.value)}>
          ${Object.entries(RANGES).map(([key, r]) => html`<option value=${key}>${r.label}</option>`)}
        </select></div></div>
    <${ErrorBox} error=${error} />
    <div class="cards">
      <${Card} label="Calls" value=${whole && fmt(whole.requests.total)} />
      <${Card} label="Success rate" value=${whole && fmt(whole.requests.successRate, 1) + "%"} />
      <${Card} label="p50 latency" value=${whole && fmt(whole.performance.p50ResponseTime) + " ms"} />
      <${Card} label="p95 latency" value=${whole && fmt(whole.performance.p95ResponseTime) + " ms"} />
      <${Card} label="Tokens" value=${whole && fmt(whole.usage.totalTokens)} />
      <${Card} label="Cost" value=${whole && usd(whole.usage.estimatedCost)} />
      <${Card} label="Cache hit rate" value=${whole && fmt(whole.cache.hitRate, 1) + "%"} />
    </div>
    <div class="grid-2">
      <section class="panel" aria-labelledby="calls-chart"><h2 id="calls-chart">Calls by model</h2>
        <${ChartView} type="bar" stacked label="Calls by model over time" labels=${labels}
          datasets=${current ? perModel((m) => m.requests.total) : []} /></section>
      <section class="panel" aria-labelledby="latency-chart"><h2 id="latency-chart">Latency percentiles (ms)</h2>
        <${ChartView} type="line" label="Latency percentiles over time" yTitle="ms" labels=${labels}
          datasets=${current ? [
            { label: "p50", data: current.buckets.map((b) => b.all.performance.p50ResponseTime) },
            { label: "p95", data: current.buckets.map((b) => b.all.performance.p95ResponseTime) },
            { label: "p99", data: current.buckets.map((b) => b.all.performance.p99ResponseTime) },
          ] : []} /></section>
      <section class="panel" aria-labelledby="tokens-chart"><h2 id="tokens-chart">Tokens by model</h2>
        <${ChartView} type="bar" stacked label="Tokens by model over time" labels=${labels}
          datasets=${current ? perModel((m) => m.usage.totalTokens) : []} /></section>
      <section class="panel" aria-labelledby="cost-chart"><h2 id="cost-chart">Cost by model (USD)</h2>
        <${ChartView} type="bar" stacked label="Cost by model over time" yTitle="USD" labels=${labels}
          datasets=${current ? perModel((m) => m.usage.estimatedCost) : []} /></section>
    </div>
    ${!current && !error && html`<${Empty}>Loading analytics…<//>`}
    <${Live} />
    <section class="panel" aria-labelledby="insights-title"><h2 id="insights-title">Insights</h2><${Insights} /></section>`;
}
