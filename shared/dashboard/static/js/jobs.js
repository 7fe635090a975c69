// Jobs of every kind (GET /batch/jobs) with live progress, and one job's page (GET /batch/status/{id}):
// its progress, results page by page, errors and cancel.
import { useRef, useState } from "preact/hooks";
import { api } from "./api.js";
import { html, usePoll, ProgressBar, Badge, ErrorBox, Empty, Card, Pager, fmt, usd, when, shortId } from "./ui.js";

export const KINDS = ["generate", "embeddings", "analyze", "report", "images", "metrics", "batchmode"];
export const STATUSES = ["queued", "running", "completed", "failed", "cancelled"];
const LIVE = new Set(["queued", "running"]);
const PAGE = 50;
const FINAL_READS = 30;

export function JobsTable({ jobs, caption }) {
  if (!jobs.length) return html`<${Empty}>No jobs match.<//>`;
  return html`<div class="table-wrap"><table class="stack">
    <caption class="visually-hidden">${caption}</caption>
    <thead><tr><th>Job</th><th>Kind</th><th>Status</th><th>Progress</th><th class="num">Done</th>
      <th class="num">Failed</th><th>Created</th><th>Finished</th></tr></thead>
    <tbody>${jobs.map((job) => {
      if (!job.progress) {
    // A kind with a status of its own (Batch Mode: state, counts, image URLs): its tab shows it in full.
    return html`<p><a href="#/jobs">← Jobs</a></p>
      <section class="panel" aria-labelledby="job-title">
        <div class="panel-head"><h1 id="job-title">Job <span class="mono">${batchId}</span></h1>
          <${Badge} value=${job.status} /></div>
        <p class="tabular">${job.state || ""} · ${fmt(job.successCount)} succeeded, ${fmt(job.failCount)} failed of
          ${fmt(job.requestCount)}</p>
        <p><a href="#/batch-mode">Open the Batch Mode tab</a> for its images, credits and refunds.</p>
      </section>`;
  }
  const p = job.progress;
      return html`<tr key=${job.batchId} data-batch-id=${job.batchId}>
      <td class="mono" data-label="Job"><a href=${"#/jobs/" + encodeURIComponent(job.batchId)} title=${job.batchId}>${shortId(job.batchId)}</a></td>
      <td data-label="Kind">${job.kind}</td>
      <td data-label="Status"><${Badge} value=${job.status} /></td>
      <td class="wide" data-label="Progress"><${ProgressBar} percent=${p.percent} failed=${p.failed} total=${p.total} label=${"progress of " + job.batchId} /></td>
      <td class="num" data-label="Done">${fmt(p.finished)} / ${fmt(p.total)}</td>
      <td class="num" data-label="Failed">${fmt(p.failed)}</td>
      <td data-label="Created">${when(job.createdAt)}</td>
      <td data-label="Finished">${job.finishedAt ? when(job.finishedAt) : "–"}</td>
    </tr>`;
    })}</tbody>
  </table></div>`;
}

export function JobsView() {
  const [kind, setKind] = useState("");
  const [status, setStatus] = useState("");
  const [pages, setPages] = useState([]); // older pages loaded with "Load more" (not polled)
  const [cursor, setCursor] = useState(null);
  const [first, error] = usePoll(
    () => api("/batch/jobs", { params: { kind, status, limit: PAGE } }),
    [kind, status],
  );
  const loadMore = async () => {
    const next = cursor || (first && first.nextCursor);
    if (!next) return;
    const page = await api("/batch/jobs", { params: { kind, status, limit: PAGE, cursor: next } });
    setPages([...pages, ...page.jobs]);
    setCursor(page.nextCursor || "");
  };
  const change = (setter) => (event) => {
    setter(event.target.value);
    setPages([]);
    setCursor(null);
  };
  const seen = new Set((first ? first.jobs : []).map((j) => j.batchId));
  const jobs = first ? [...first.jobs, ...pages.filter((j) => !seen.has(j.batchId))] : [];
  const more = cursor === null ? first && first.nextCursor : cursor;
  return html`<section class="panel" aria-labelledby="jobs-title">
    <div class="panel-head">
      <h1 id="jobs-title">Jobs</h1>
      <div class="row">
        <div class="field"><label for="kind-filter">Kind</label>
          <select id="kind-filter" value=${kind} onChange=${change(setKind)}>
            <option value="">All kinds</option>${KINDS.map((k) => html`<option value=${k}>${k}</option>`)}
          </select></div>
        <div class="field"><label for="status-filter">Status</label>
          <select id="status-filter" value=${status} onChange=${change(setStatus)}>
            <option value="">All statuses</option>${STATUSES.map((s) => html`<option value=${s}>${s}</option>`)}
          </select></div>
        <a class="button" href="#/submit">New batch</a>
      </div>
    </div>
    <${ErrorBox} error=${error} />
    ${first ? html`<${JobsTable} jobs=${jobs} caption="Jobs of every kind, newest first" />` : !error && html`<${Empty}>Loading jobs…<//>`}
    ${more && html`<div class="pager"><button class="secondary" onClick=${loadMore}>Load more</button></div>`}
  </section>`;
}

function ResultCell({ result }) {
  const { index, customId, status, success, error, tokensUsed, processingTime, attempts, ...rest } = result;
  const body = rest.response ?? rest.analysis ?? rest.matches ?? rest;
  const text = typeof body === "string" ? body : JSON.stringify(body, null, 1);
  if (error) return html`<span class="mono">${error.code}</span>: ${error.message}`;
  if (!text || text === "{}") return html`<span class="muted">–</span>`;
  if (text.length <= 160) return html`<span>${text}</span>`;
  return html`<details><summary>${text.slice(0, 120)}…</summary><pre>${text}</pre></details>`;
}

export function JobView({ batchId }) {
  const [offset, setOffset] = useState(0);
  const [onlyErrors, setOnlyErrors] = useState(false);
  const [cancelError, setCancelError] = useState(null);
  const [cancelling, setCancelling] = useState(false);
  const [live, setLive] = useState(true);
  const finalReads = useRef(0);
  const limit = 20;
  const [job, error, reload] = usePoll(
    async () => {
      const data = await api("/batch/status/" + encodeURIComponent(batchId), { params: { offset, limit } });
      // A job just stopped is fanned in a moment later (its results file, pending requests marked cancelled):
      // keep reading until then, for at most FINAL_READS polls.
      finalReads.current = LIVE.has(data.status) ? 0 : finalReads.current + 1;
      setLive(LIVE.has(data.status) || (!data.resultsUrl && finalReads.current < FINAL_READS));
      return data;
    },
    [batchId, offset],
    { active: live },
  );
  const cancel = async () => {
    if (!confirm("Cancel this job? Requests in flight finish; finished results are kept.")) return;
    setCancelling(true);
    setCancelError(null);
    try {
      await api("/batch/" + encodeURIComponent(batchId), { method: "DELETE" });
      await reload();
    } catch (failure) {
      setCancelError(failure);
    } finally {
      setCancelling(false);
    }
  };
  if (!job) {
    return html`<section class="panel"><p><a href="#/jobs">← Jobs</a></p>
      ${error ? html`<${ErrorBox} error=${error} />` : html`<${Empty}>Loading job…<//>`}</section>`;
  }
  if (!job.progress) {
    // A kind with a status of its own (Batch Mode: state, counts, image URLs): its tab shows it in full.
    return html`<p><a href="#/jobs">← Jobs</a></p>
      <section class="panel" aria-labelledby="job-title">
        <div class="panel-head"><h1 id="job-title">Job <span class="mono">${batchId}</span></h1>
          <${Badge} value=${job.status} /></div>
        <p class="tabular">${job.state || ""} · ${fmt(job.successCount)} succeeded, ${fmt(job.failCount)} failed of
          ${fmt(job.requestCount)}</p>
        <p><a href="#/batch-mode">Open the Batch Mode tab</a> for its images, credits and refunds.</p>
      </section>`;
  }
  const p = job.progress;
  // Every engine kind answers with result objects; a kind with a contract of its own (Batch Mode lists image
  // URLs) shows its own fields in its tab.
  const all = (job.results || []).filter((r) => r && typeof r === "object");
  const results = onlyErrors ? all.filter((r) => r.status === "failed") : all;
  const pagination = job.pagination || { total: all.length, nextOffset: null };
  return html`
    <p><a href="#/jobs">← Jobs</a></p>
    <section class="panel" aria-labelledby="job-title">
      <div class="panel-head">
        <h1 id="job-title">Job <span class="mono">${job.batchId}</span></h1>
        <div class="row">
          <${Badge} value=${job.status} />
          ${LIVE.has(job.status) && html`<button class="danger" onClick=${cancel} disabled=${cancelling}>
            ${cancelling ? "Cancelling…" : "Cancel job"}</button>`}
          ${job.resultsUrl && html`<a class="button secondary" href=${job.resultsUrl} download>Download results (JSONL)</a>`}
        </div>
      </div>
      <${ErrorBox} error=${cancelError || error} />
      <${ProgressBar} large percent=${p.percent} failed=${p.failed} total=${p.total} label="job progress" />
      <div class="cards spaced">
        <${Card} label="Kind" value=${job.kind} />
        <${Card} label="Finished" value=${`${fmt(p.finished)} / ${fmt(p.total)}`} />
        <${Card} label="Successful" value=${fmt(p.successful)} />
        <${Card} label="Failed" value=${fmt(p.failed)} />
        <${Card} label="Pending" value=${fmt(p.pending)} />
        <${Card} label="Tokens" value=${fmt(job.tokens && job.tokens.total)} />
        <${Card} label="Cost" value=${usd(job.costUsd)} />
        <${Card} label="Created" value=${when(job.createdAt)} />
      </div>
      ${job.stopReason && html`<p class="notice">Stopped: ${job.stopReason}</p>`}
    </section>
    <section class="panel" aria-labelledby="results-title">
      <div class="panel-head">
        <h2 id="results-title">Results</h2>
        <label class="check">
          <input type="checkbox" checked=${onlyErrors} onChange=${(e) => setOnlyErrors(e.target.checked)} />
          Only errors on this page</label>
      </div>
      <div class="table-wrap"><table class="stack">
        <caption class="visually-hidden">Results of the job, in request order</caption>
        <thead><tr><th class="num">#</th><th>Custom id</th><th>Status</th><th>Result or error</th>
          <th class="num">Tokens</th><th class="num">ms</th><th class="num">Attempts</th></tr></thead>
        <tbody>${results.map((r) => html`<tr key=${r.index} class=${r.status === "failed" ? "failed" : ""}>
          <td class="num" data-label="#">${r.index}</td><td class="mono" data-label="Custom id">${r.customId || "–"}</td>
          <td data-label="Status"><${Badge} value=${r.status} /></td>
          <td class="wrap wide" data-label="Result or error"><${ResultCell} result=${r} /></td>
          <td class="num" data-label="Tokens">${fmt(r.tokensUsed)}</td><td class="num" data-label="ms">${fmt(r.processingTime)}</td>
          <td class="num" data-label="Attempts">${fmt(r.attempts)}</td></tr>`)}</tbody>
      </table></div>
      ${!results.length && html`<${Empty}>${onlyErrors ? "No errors on this page." : "No results yet."}<//>`}
      <${Pager} offset=${offset} limit=${limit} total=${pagination.total} next=${pagination.nextOffset}
        onPage=${(o) => { setOffset(o); setLive(true); }} />
    </section>`;
}
