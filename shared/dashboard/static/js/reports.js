// Reports (/reports): the tenant's report jobs with live progress (GET /batch/jobs?kind=report), each one's
// status and download link (GET /reports/status/{id}, which mints a fresh link on each read), active jobs
// and cache figures, and a small form to queue a report from JSON.
import { useState } from "preact/hooks";
import { api } from "./api.js";
import { html, usePoll, Badge, Card, ErrorBox, Empty, ProgressBar, Table, fmt, size, when, shortId } from "./ui.js";

const TYPES = ["FacturacionMasiva", "VentasPorCiudad"];

function DownloadCell({ jobId, status }) {
  const [report, setReport] = useState(null);
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  if (status !== "completed") return html`<span class="muted">–</span>`;
  const load = async () => {
    setBusy(true);
    setError(null);
    try {
      setReport(await api("/reports/status/" + encodeURIComponent(jobId)));
    } catch (failure) {
      setError(failure);
    } finally {
      setBusy(false);
    }
  };
  if (error) return html`<span class="error">${error.message}</span>`;
  if (!report) return html`<button class="secondary" onClick=${load} disabled=${busy}
    aria-label=${"Get the download link of report " + jobId}>${busy ? "…" : "Get link"}</button>`;
  if (!report.downloadUrl) return html`<span>${report.message}</span>`;
  return html`<a class="button" href=${report.downloadUrl} download=${report.fileName || true}>
    ${report.fileName} (${size(report.fileSizeBytes)})</a>`;
}

function QueueForm({ onQueued }) {
  const [reportType, setReportType] = useState(TYPES[0]);
  const [userName, setUserName] = useState("");
  const [jsonData, setJsonData] = useState("[]");
  const [error, setError] = useState(null);
  const [queued, setQueued] = useState(null);
  const submit = async (event) => {
    event.preventDefault();
    setError(null);
    try {
      const answer = await api("/reports/queue-json", {
        method: "POST", body: { reportType, userName, jsonData, isLargeDataset: false },
      });
      setQueued(answer.jobId);
      onQueued();
    } catch (failure) {
      setError(failure);
    }
  };
  return html`<form onSubmit=${submit}>
    <div class="row">
      <div class="field"><label for="report-type">Report type</label>
        <select id="report-type" value=${reportType} onChange=${(e) => setReportType(e.target.value)}>
          ${TYPES.map((t) => html`<option value=${t}>${t}</option>`)}</select></div>
      <div class="field grow"><label for="user-name">User name</label>
        <input id="user-name" required type="email" value=${userName} onInput=${(e) => setUserName(e.target.value)} /></div>
    </div>
    <label for="json-data" class="spaced">Invoices (JSON, up to the request limit; larger files through upload sessions)</label>
    <textarea id="json-data" value=${jsonData} onInput=${(e) => setJsonData(e.target.value)}></textarea>
    <${ErrorBox} error=${error} />
    ${queued && html`<p class="notice" role="status">Queued report <span class="mono">${queued}</span>.</p>`}
    <p><button type="submit">Queue report</button></p>
  </form>`;
}

export function ReportsView() {
  const [jobs, jobsError, reloadJobs] = usePoll(() => api("/batch/jobs", { params: { kind: "report", limit: 50 } }), []);
  const [cache] = usePoll(() => api("/reports/cache-stats"), [], { intervalMs: 10000 });
  const rows = jobs ? jobs.jobs : [];
  return html`
    <h1>Reports</h1>
    <div class="cards">
      <${Card} label="Reports" value=${jobs ? fmt(rows.length) + (jobs.nextCursor ? "+" : "") : "–"} />
      <${Card} label="In progress" value=${fmt(rows.filter((r) => r.status === "queued" || r.status === "running").length)} />
      <${Card} label="Cache entries" value=${cache && fmt(cache.entries)} />
      <${Card} label="Cache hit rate" value=${cache && fmt(cache.hitRate, 1) + "%"} />
    </div>
    <section class="panel" aria-labelledby="reports-title">
      <h2 id="reports-title">Report jobs</h2>
      <${ErrorBox} error=${jobsError} />
      ${rows.length ? html`<${Table} caption="Report jobs, newest first, with download links" rows=${rows}
        rowKey=${(j) => j.batchId} columns=${[
          { label: "Job", mono: true, cell: (j) => html`<a href=${"#/jobs/" + encodeURIComponent(j.batchId)} title=${j.batchId}>${shortId(j.batchId)}</a>` },
          { label: "Status", cell: (j) => html`<${Badge} value=${j.status} />` },
          { label: "Progress", wide: true, cell: (j) => html`<${ProgressBar} percent=${j.progress.percent} failed=${j.progress.failed}
            total=${j.progress.total} label=${"progress of report " + j.batchId} />` },
          { label: "Created", cell: (j) => when(j.createdAt) },
          { label: "Finished", cell: (j) => (j.finishedAt ? when(j.finishedAt) : "–") },
          { label: "Download", wide: true, cell: (j) => html`<${DownloadCell} jobId=${j.batchId} status=${j.status} />` },
        ]} />` : html`<${Empty}>${jobs ? "No reports yet." : "Loading…"}<//>`}
    </section>
    <section class="panel" aria-labelledby="queue-title"><h2 id="queue-title">New report from JSON</h2>
      <${QueueForm} onQueued=${reloadJobs} /></section>`;
}
