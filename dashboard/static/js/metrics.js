// Metric runs and the latest calculated metrics of the marketplace (/dashboards): the scheduled jobs with
// their last run, and one metric's values as a table and a chart.
import { useState } from "preact/hooks";
import { api } from "./api.js";
import { html, usePoll, Badge, ErrorBox, Empty, ChartView, fmt, when } from "./ui.js";

const LABEL_KEYS = ["asesor_id", "ciudad", "categoria_repuesto", "alcance", "dia_semana", "hora"];

function dimensionLabel(dimensiones) {
  const parts = LABEL_KEYS.filter((key) => dimensiones && dimensiones[key] !== undefined).map((key) => dimensiones[key]);
  return parts.length ? parts.join(" · ") : "total";
}

function RunsTable({ jobs, onTrigger }) {
  return html`<div class="table-wrap"><table>
    <caption class="visually-hidden">Scheduled metric jobs and their last run</caption>
    <thead><tr><th>Job</th><th>Schedule</th><th>Scheduler</th><th>Next run</th><th>Last run</th><th>Period</th>
      <th>Status</th><th class="num">Records read</th><th class="num">Seconds</th><th></th></tr></thead>
    <tbody>${jobs.map((job) => {
      const run = job.lastRun;
      return html`<tr key=${job.id}>
        <td><strong>${job.id}</strong><div class="muted">${job.description}</div></td>
        <td class="mono">${job.schedule} <span class="muted">${job.timeZone}</span></td>
        <td><${Badge} value=${job.schedulerState === "ENABLED" ? "ok" : job.schedulerState} /></td>
        <td>${when(job.nextRun)}</td>
        <td>${run ? when(run.startedAt) : "never"}</td>
        <td>${run ? run.period : "–"}</td>
        <td>${run ? html`<${Badge} value=${run.status} />` : "–"}</td>
        <td class="num">${run ? fmt(run.recordsRead) : "–"}</td>
        <td class="num">${run ? fmt(run.durationS, 1) : "–"}</td>
        <td><button class="secondary" onClick=${() => onTrigger(job.id)} aria-label=${"Run " + job.id + " now"}>Run now</button></td>
      </tr>`;
    })}</tbody></table></div>`;
}

function LastRunMetrics({ jobs }) {
  const rows = jobs.filter((j) => j.lastRun && j.lastRun.metrics).flatMap((j) =>
    Object.entries(j.lastRun.metrics).map(([name, m]) => ({ job: j.id, name, ...m })));
  if (!rows.length) return html`<${Empty}>No run has recorded metrics yet.<//>`;
  return html`<div class="table-wrap"><table>
    <caption class="visually-hidden">Each metric of each job's last run</caption>
    <thead><tr><th>Job</th><th>Metric</th><th>Status</th><th class="num">Records</th><th class="num">ms</th><th>Error</th></tr></thead>
    <tbody>${rows.map((r) => html`<tr key=${r.job + r.name}><td>${r.job}</td><td class="mono">${r.name}</td>
      <td><${Badge} value=${r.status} /></td><td class="num">${fmt(r.records)}</td><td class="num">${fmt(r.durationMs)}</td>
      <td class="wrap">${r.error || ""}</td></tr>`)}</tbody></table></div>`;
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
      <h3 style="margin-top:1rem">Metrics of the last runs</h3>
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
      <div class="grid-2">
        <${ChartView} type="bar" label=${metric + " by dimension"} labels=${top.map((m) => String(dimensionLabel(m.dimensiones)))}
          datasets=${[{ label: metric, data: top.map((m) => Number(m.valor)) }]} options=${{ indexAxis: "y" }} />
        <div class="table-wrap" style="max-height:260px;overflow:auto"><table>
          <caption class="visually-hidden">${metric} of the latest period</caption>
          <thead><tr><th>Dimension</th><th class="num">Value</th><th>Details</th></tr></thead>
          <tbody>${latest.map((m) => html`<tr key=${m.id}><td>${dimensionLabel(m.dimensiones)}</td>
            <td class="num">${fmt(m.valor, 3)}</td>
            <td class="mono wrap">${Object.entries(m.dimensiones || {}).filter(([k]) => !LABEL_KEYS.includes(k))
              .map(([k, v]) => `${k}=${typeof v === "number" ? fmt(v, 3) : v}`).join(", ")}</td></tr>`)}</tbody>
        </table></div>
      </div>
      ${calculated && !latest.length && html`<${Empty}>No calculated values of ${metric} yet.<//>`}
    </section>`;
}
