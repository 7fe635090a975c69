// The image queue (/articulos): counts by state, the items in progress, the history with retry, and adding
// articles to the queue.
import { useState } from "preact/hooks";
import { api } from "./api.js";
import { html, usePoll, Badge, Card, ErrorBox, Empty, Pager, Table, fmt, when } from "./ui.js";

const STATES = ["pending", "processing", "completed", "failed"];
const LIMIT = 20;

function AddForm({ onAdded }) {
  const [ids, setIds] = useState("");
  const [prioridad, setPrioridad] = useState("0");
  const [result, setResult] = useState(null);
  const [error, setError] = useState(null);
  const submit = async (event) => {
    event.preventDefault();
    setError(null);
    setResult(null);
    const articuloIds = ids.split(/[\s,]+/).filter(Boolean).map(Number);
    try {
      const answer = await api("/articulos/batch-process-images", {
        method: "POST", body: { articuloIds, prioridad: Number(prioridad) || 0 },
      });
      setResult(answer.data);
      onAdded();
    } catch (failure) {
      setError(failure);
    }
  };
  return html`<form onSubmit=${submit} class="row" aria-label="Add articles to the queue">
    <div class="field grow"><label for="articulo-ids">Article ids (comma or space separated)</label>
      <input id="articulo-ids" required value=${ids} onInput=${(e) => setIds(e.target.value)} placeholder="1, 2, 3" /></div>
    <div class="field"><label for="prioridad">Priority (-1000..1000)</label>
      <input id="prioridad" type="number" min="-1000" max="1000" value=${prioridad} onInput=${(e) => setPrioridad(e.target.value)} /></div>
    <button type="submit">Add to queue</button>
    <div class="full">
      <${ErrorBox} error=${error} />
      ${result && html`<p class="notice">Added ${result.agregados}, skipped ${result.omitidos}
        ${result.detalles.omitidos.length > 0 && html`: ${result.detalles.omitidos.map((o) => `#${o.articuloId} (${o.motivo})`).join(", ")}`}</p>`}
    </div>
  </form>`;
}

export function ImagesView() {
  const [estado, setEstado] = useState("");
  const [offset, setOffset] = useState(0);
  const [actionError, setActionError] = useState(null);
  const [status, statusError, reloadStatus] = usePoll(() => api("/articulos/processing-queue/status"), []);
  const [history, historyError, reloadHistory] = usePoll(
    () => api("/articulos/processing-queue/history", { params: { limit: LIMIT, offset, estado } }),
    [offset, estado],
    { intervalMs: 3000 },
  );
  const retry = async (id) => {
    setActionError(null);
    try {
      await api(`/articulos/processing-queue/${encodeURIComponent(id)}/retry`, { method: "POST" });
      reloadStatus();
      reloadHistory();
    } catch (failure) {
      setActionError(failure);
    }
  };
  const stats = status ? status.data.stats : {};
  const current = status ? status.data.articulosActuales : [];
  const rows = history ? history.data.historial : [];
  return html`
    <h1>Image queue</h1>
    <div class="cards" aria-live="polite">
      <${Card} label="Pending" value=${fmt(stats.pendientes)} />
      <${Card} label="Processing" value=${fmt(stats.procesando)} />
      <${Card} label="Completed" value=${fmt(stats.completados)} />
      <${Card} label="Failed" value=${fmt(stats.fallidos)} />
      <${Card} label="Total" value=${fmt(stats.total)} />
    </div>
    <section class="panel" aria-labelledby="add-title"><h2 id="add-title">Add articles</h2>
      <${AddForm} onAdded=${() => { reloadStatus(); reloadHistory(); }} /></section>
    <section class="panel" aria-labelledby="current-title">
      <h2 id="current-title">In progress</h2>
      <${ErrorBox} error=${statusError} />
      ${current.length ? html`<${Table} caption="Items in progress" rows=${current} rowKey=${(i) => i.id} columns=${[
          { label: "Queue id", mono: true, cell: (i) => i.id },
          { label: "Article", num: true, cell: (i) => i.articulo_id },
          { label: "Name", cell: (i) => i.articulo_nombre },
          { label: "Started", cell: (i) => when(i.started_at) },
          { label: "Seconds", num: true, cell: (i) => fmt(i.segundos_procesando, 1) },
          { label: "Attempts", num: true, cell: (i) => i.intentos },
        ]} />`
        : html`<${Empty}>Nothing is being processed right now.<//>`}
    </section>
    <section class="panel" aria-labelledby="history-title">
      <div class="panel-head"><h2 id="history-title">History</h2>
        <div class="field"><label for="estado-filter">State</label>
          <select id="estado-filter" value=${estado} onChange=${(e) => { setEstado(e.target.value); setOffset(0); }}>
            <option value="">All states</option>${STATES.map((s) => html`<option value=${s}>${s}</option>`)}
          </select></div></div>
      <${ErrorBox} error=${actionError || historyError} />
      <${Table} caption="Queue history, newest first" rows=${rows} rowKey=${(i) => i.id}
        rowClass=${(i) => (i.estado === "failed" ? "failed" : "")} columns=${[
          { label: "Queue id", mono: true, cell: (i) => i.id },
          { label: "Article", num: true, cell: (i) => i.articulo_id },
          { label: "Name", cell: (i) => i.articulo_nombre },
          { label: "State", cell: (i) => html`<${Badge} value=${i.estado} />` },
          { label: "Priority", num: true, cell: (i) => i.prioridad },
          { label: "Attempts", num: true, cell: (i) => `${i.intentos} / ${i.max_intentos}` },
          { label: "Created", cell: (i) => when(i.created_at) },
          { label: "Seconds", num: true, cell: (i) => fmt(i.duracion_segundos) },
          { label: "Error", wide: true, cell: (i) => i.error_message || "" },
          { label: "Retry", cell: (i) => i.estado === "failed" && html`<button class="secondary" onClick=${() => retry(i.id)}
            aria-label=${"Retry queue item " + i.id}>Retry</button>` },
        ]} />
      ${history && !rows.length && html`<${Empty}>No items.<//>`}
      <${Pager} offset=${offset} limit=${LIMIT} total=${null} count=${rows.length} label="history"
        next=${rows.length === LIMIT ? offset + LIMIT : null} onPage=${setOffset} />
    </section>`;
}
