// Metric runs and the latest calculated metrics of the marketplace (/dashboards): the scheduled jobs with
// their last run, and one metric's values as a table and a chart.
import { useState } from "preact/hooks";
import { api } from "./api.js";
import { html, usePoll, Badge, ErrorBox, Empty, ChartView, Table, fmt, when } from "./ui.js";

const LABEL_KEYS = ["asesor_id", "ciudad", "categoria_repuesto", "alcance", "dia_semana", "hora"];

function dimensionLabel(dimensiones) {
  const parts = LABEL_KEYS.filter((key) => dimensiones && dimensiones[key] !== undefined).map((key) => dimensiones[key]);
  return parts.length ? parts.join(" · ") : "total";
}

function RunsTable({ jobs, onTrigger }) {
  const run = (job) => job.lastRun || {};
  return html`<${Table} caption="Scheduled metric jobs and their last run" rows=${jobs} rowKey=${(j) => j.id} columns=${[
    { label: "Job", cell: (j) => html`<strong>${j.id}</strong><div class="muted">${j.description}</div>` },
    { label: "Schedule", mono: true, cell: (j) => html`${j.schedule} <span class="muted">${j.timeZone}</span>` },
    { label: "Scheduler", cell: (j) => html`<${Badge} value=${j.schedulerState} tone=${j.schedulerState === "ENABLED" ? "ok" : "failed"} />` },
    { label: "Next run", cell: (j) => when(j.nextRun) },
    { label: "Last run", cell: (j) => (j.lastRun ? when(run(j).startedAt) : "never") },
    { label: "Period", cell: (j) => run(j).period || "–" },
    { label: "Status", cell: (j) => (j.lastRun ? html`<${Badge} value=${run(j).status} />` : "–") },
    { label: "Records read", num: true, cell: (j) => fmt(run(j).recordsRead) },
    { label: "Seconds", num: true, cell: (j) => fmt(run(j).durationS, 1) },
    { label: "Run", cell: (j) => html`<button class="secondary" onClick=${() => onTrigger(j.id)}
      aria-label=${"Run " + j.id + " now"}>Run now</button>` },
  ]} />`;
}

function LastRunMetrics({ jobs }) {
  const rows = jobs.filter((j) => j.lastRun && j.lastRun.metrics).flatMap((j) =>
    Object.entries(j.lastRun.metrics).map(([name, m]) => ({ job: j.id, name, ...m })));
  if (!rows.length) return html`<${Empty}>No run has recorded metrics yet.<//>`;
  return html`<${Table} caption="Each metric of each job's last run" rows=${rows} rowKey=${(r) => r.job + r.name} columns=${[
    { label: "Job", cell: (r) => r.job },
    { label: "Metric", mono: true, cell: (r) => r.name },
    { label: "Status", cell: (r) => html`<${Badge} value=${r.status} />` },
    { label: "Records", num: true, cell: (r) => fmt(r.records) },
    { label: "ms", num: true, cell: (r) => fmt(r.durationMs) },
    { label: "Error", wide: true, cell: (r) => r.error || "" },
  ]} />`;
}

export function MetricsView() {
  const [metric, setMetric] = useState("ranking_asesores_diario");
  const [notice, setNotice] = useState(null);
  const [actionError, setActionError] = useState(null);
  const [status, statusError, reloadStatus] = usePoll(() => api("/dashboards/batch-jobs/status"), [], { intervalMs: 5000 });
  const [calculated, calculatedError] = usePoll(
    () => api("/dashboards/metrics/calculated", { params: { nombre_metrica: metric, limit: 200 } }),
    [metric],
    { intervalMs: 15000 },
  );
  const trigger = async (jobId) => {
    setActionError(null);
    setNotice(null);
    try {
      const answer = await api("/dashboards/batch-jobs/trigger/" + encodeURIComponent(jobId), { method: "POST" });
      setNotice(`${jobId}: ${answer.action} (${answer.run.runId})`);
      reloadStatus();
    } catch (failure) {
      setActionError(failure);
    }
  };
  const jobs = status ? status.jobs : [];
  const names = [...new Set(jobs.flatMap((j) => j.metrics))];
  const all = calculated ? calculated.metricas : [];
  // The latest period of the metric: the list is newest period first.
  const latest = all.length ? all.filter((m) => m.periodo_inicio === all[0].periodo_inicio) : [];
  const top = [...latest].sort((a, b) => Number(b.valor) - Number(a.valor)).slice(0, 20);
  return html`
    <h1>Metrics</h1>
    <section class="panel" aria-labelledby="runs-title">
      <div class="panel-head"><h2 id="runs-title">Scheduled jobs and their runs</h2></div>
      <${ErrorBox} error=${actionError || statusError} />
      ${notice && html`<p class="notice" role="status">${notice}</p>`}
      ${status ? html`<${RunsTable} jobs=${jobs} onTrigger=${trigger} />` : html`<${Empty}>Loading…<//>`}
      <h3 class="spaced">Metrics of the last runs</h3>
      <${LastRunMetrics} jobs=${jobs} />
    </section>
    <section class="panel" aria-labelledby="calculated-title">
      <div class="panel-head"><h2 id="calculated-title">Latest calculated metrics</h2>
        <div class="field"><label for="metric-name">Metric</label>
          <select id="metric-name" value=${metric} onChange=${(e) => setMetric(e.target.value)}>
            ${(names.length ? names : [metric]).map((n) => html`<option value=${n}>${n}</option>`)}
          </select></div></div>
      <${ErrorBox} error=${calculatedError} />
      ${latest.length ? html`<p class="muted">${latest[0].descripcion} · period ${latest[0].periodo_inicio} to
        ${latest[0].periodo_fin} · unit ${latest[0].unidad}</p>` : ""}
      ${latest.length ? html`<div class="grid-2">
        <${ChartView} type="bar" label=${metric + " by dimension"} labels=${top.map((m) => String(dimensionLabel(m.dimensiones)))}
          datasets=${[{ label: metric, data: top.map((m) => Number(m.valor)) }]} options=${{ indexAxis: "y" }} />
        <div class="table-wrap scroll-box">
          <${Table} caption=${metric + " of the latest period"} rows=${latest} rowKey=${(m) => m.id} columns=${[
            { label: "Dimension", cell: (m) => dimensionLabel(m.dimensiones) },
            { label: "Value", num: true, cell: (m) => fmt(m.valor, 3) },
            { label: "Details", mono: true, wide: true, cell: (m) => Object.entries(m.dimensiones || {})
              .filter(([k]) => !LABEL_KEYS.includes(k))
              .map(([k, v]) => `${k}=${typeof v === "number" ? fmt(v, 3) : v}`).join(", ") },
          ]} />
        </div>
      </div>` : html`<${Empty}>${calculated ? `No calculated values of ${metric} yet.` : "Loading…"}<//>`}
    </section>`;
}
