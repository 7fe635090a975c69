// Gemini Batch Mode jobs paid with credits (issue 14's contract): the balance and its latest ledger entries
// (GET /batch/credits: balance, entries) and the jobs, newest first (GET /batch/history?type=&limit=&cursor=, a
// list, the next page's cursor in X-Next-Cursor), each one's status on demand
// (GET /batch/status/{id}). A deployment without Batch Mode answers 404 or 405: the tab says so.
import { useState } from "preact/hooks";
import { api } from "./api.js";
import { html, usePoll, Badge, Card, ErrorBox, Empty, Table, fmt, when, shortId } from "./ui.js";

const TYPES = ["character", "food", "product", "text"];
const PAGE = 50;

const missing = (error) => error && (error.status === 404 || error.status === 405);
const firstList = (value, names) =>
  Array.isArray(value) ? value : (names.map((n) => value && value[n]).find(Array.isArray) || []);

function JobDetails({ id }) {
  const [job, error] = usePoll(() => api("/batch/status/" + encodeURIComponent(id)), [id], { intervalMs: 5000 });
  if (error) return html`<${ErrorBox} error=${error} />`;
  if (!job) return html`<span class="muted">Loading…</span>`;
  const results = job.results || [];
  return html`<div>
    <p class="tabular">State <span class="mono">${job.state || job.status}</span> · ${fmt(job.successCount)} succeeded, ${fmt(job.failCount)} failed of ${fmt(job.requestCount)} · cost ${fmt(job.creditCost, 1)} credits,
      refunded ${fmt(job.creditsRefunded, 1)}</p>
    <ol>${results.map((url, i) => html`<li key=${i}>${url ? html`<a href=${url} target="_blank" rel="noopener">image ${i + 1}</a>`
      : html`<span class="muted">no image</span>`}</li>`)}</ol>
    ${(job.errors || []).length > 0 && html`<div class="error"><strong>Errors</strong>
      <ul>${job.errors.map((e, i) => html`<li key=${i}>${typeof e === "string" ? e : JSON.stringify(e)}</li>`)}</ul></div>`}
  </div>`;
}

export function BatchModeView() {
  const [type, setType] = useState("");
  const [open, setOpen] = useState(null);
  const [credits, creditsError] = usePoll(() => api("/batch/credits"), [], { intervalMs: 10000 });
  const [older, setOlder] = useState({ rows: [], cursor: undefined }); // pages past the first ("Load more")
  const [history, historyError] = usePoll(async () => {
    const page = await api("/batch/history", { params: { type, limit: PAGE }, withHeaders: true });
    return { rows: page.data, cursor: page.headers.get("X-Next-Cursor") };
  }, [type], { intervalMs: 5000 });
  const loadMore = async () => {
    const cursor = older.cursor === undefined ? history.cursor : older.cursor;
    const page = await api("/batch/history", { params: { type, limit: PAGE, cursor }, withHeaders: true });
    setOlder({ rows: [...older.rows, ...page.data], cursor: page.headers.get("X-Next-Cursor") });
  };
  if (missing(creditsError) && missing(historyError)) {
    return html`<section class="panel"><h1>Batch Mode</h1>
      <p class="notice">Gemini Batch Mode jobs (half-price image and text generation paid with credits) are not
        available on this deployment yet. When they are, this tab shows the credit balance, its ledger and the jobs.</p></section>`;
  }
  const ledger = firstList(credits, ["entries", "ledger"]);
  const first = history ? firstList(history.rows, ["history", "jobs", "items", "data"]) : [];
  const seen = new Set(first.map((j) => j.id));
  const jobs = [...first, ...older.rows.filter((j) => !seen.has(j.id))];
  const more = older.cursor === undefined ? history && history.cursor : older.cursor;
  return html`
    <h1>Batch Mode</h1>
    <div class="cards"><${Card} label="Credit balance" value=${credits ? fmt(credits.balance, 1) : "–"} /></div>
    <${ErrorBox} error=${creditsError && !missing(creditsError) ? creditsError : null} />
    <section class="panel" aria-labelledby="bm-jobs-title">
      <div class="panel-head"><h2 id="bm-jobs-title">Jobs</h2>
        <div class="field"><label for="bm-type">Type</label>
          <select id="bm-type" value=${type} onChange=${(e) => { setType(e.target.value); setOlder({ rows: [], cursor: undefined }); }}>
            <option value="">All types</option>${TYPES.map((t) => html`<option value=${t}>${t}</option>`)}</select></div></div>
      <${ErrorBox} error=${historyError} />
      ${jobs.length ? html`<${Table} caption="Batch Mode jobs, newest first" rows=${jobs} rowKey=${(j) => j.id} columns=${[
          { label: "Job", mono: true, cell: (j) => html`<span title=${j.id}>${shortId(j.id)}</span>` },
          { label: "Type", cell: (j) => j.type },
          { label: "Status", cell: (j) => html`<${Badge} value=${j.status} />` },
          { label: "Rows", num: true, cell: (j) => fmt(j.requestCount) },
          { label: "Succeeded", num: true, cell: (j) => fmt(j.successCount) },
          { label: "Credits", num: true, cell: (j) => fmt(j.creditCost, 1) },
          { label: "Created", cell: (j) => when(j.createdAt) },
          { label: "Details", cell: (j) => html`<button class="secondary" aria-expanded=${open === j.id}
            onClick=${() => setOpen(open === j.id ? null : j.id)}>${open === j.id ? "Hide" : "Details"}</button>` },
        ]} />`
        : html`<${Empty}>${history ? "No Batch Mode jobs yet." : "Loading…"}<//>`}
      ${more && html`<div class="pager"><button class="secondary" onClick=${loadMore}>Load more</button></div>`}
      ${open && html`<${JobDetails} id=${open} />`}
    </section>
    <section class="panel" aria-labelledby="ledger-title"><h2 id="ledger-title">Latest ledger entries</h2>
      ${ledger.length ? html`<${Table} caption="Latest ledger entries" rows=${ledger} columns=${[
          { label: "When", cell: (e) => when(e.createdAt || e.at) },
          { label: "Amount", num: true, cell: (e) => fmt(e.amount, 1) },
          { label: "Kind", cell: (e) => e.kind || "" },
          { label: "Reason", wide: true, cell: (e) => e.reason || "" },
          { label: "Job", mono: true, cell: (e) => (e.jobId ? shortId(e.jobId) : "") },
        ]} />`
        : html`<${Empty}>No ledger entries.<//>`}
    </section>`;
}
