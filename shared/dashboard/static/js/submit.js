// Submit a generation batch from the page: prompts one per line (POST /batch/generate, without waiting),
// then follow it on its job page.
import { useState } from "preact/hooks";
import { api } from "./api.js";
import { html, ErrorBox } from "./ui.js";

const MAX_LINES = 1000;
const MODELS = ["gemini-2.5-flash", "gemini-2.5-flash-lite", "gemini-2.5-pro"];

export function SubmitView() {
  const [prompts, setPrompts] = useState("");
  const [model, setModel] = useState(MODELS[0]);
  const [concurrency, setConcurrency] = useState("");
  const [systemInstruction, setSystemInstruction] = useState("");
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const lines = prompts.split("\n").map((line) => line.trim()).filter(Boolean);
  const submit = async (event) => {
    event.preventDefault();
    if (!lines.length) return setError({ message: "Write at least one prompt, one per line." });
    if (lines.length > MAX_LINES) return setError({ message: `At most ${MAX_LINES} prompts from this form.` });
    setBusy(true);
    setError(null);
    try {
      const requests = lines.map((prompt) => {
        const request = { prompt, model };
        if (systemInstruction.trim()) request.systemInstruction = systemInstruction.trim();
        return request;
      });
      const options = { wait: false };
      if (concurrency) options.concurrency = Number(concurrency);
      const answer = await api("/batch/generate", { method: "POST", body: { requests, options } });
      location.hash = "#/jobs/" + encodeURIComponent(answer.batchId);
    } catch (failure) {
      setError(failure);
    } finally {
      setBusy(false);
    }
  };
  return html`<section class="panel" aria-labelledby="submit-title">
    <h1 id="submit-title">New generation batch</h1>
    <p class="muted">One request per line. The batch runs in the background; its page shows the progress live.</p>
    <form onSubmit=${submit}>
      <label for="prompts">Prompts, one per line</label>
      <textarea id="prompts" name="prompts" required value=${prompts} onInput=${(e) => setPrompts(e.target.value)}
        placeholder=${"Summarise: brake pads for a 2014 Golf\nTranslate to German: oil filter"}></textarea>
      <p class="muted tabular" aria-live="polite">${lines.length} prompt${lines.length === 1 ? "" : "s"}</p>
      <div class="row">
        <div class="field"><label for="model">Model</label>
          <select id="model" value=${model} onChange=${(e) => setModel(e.target.value)}>
            ${MODELS.map((m) => html`<option value=${m}>${m}</option>`)}
          </select></div>
        <div class="field"><label for="concurrency">Concurrency (optional)</label>
          <input id="concurrency" type="number" min="1" max="100" inputmode="numeric" value=${concurrency}
            onInput=${(e) => setConcurrency(e.target.value)} /></div>
        <div class="field grow"><label for="system-instruction">System instruction (optional)</label>
          <input id="system-instruction" value=${systemInstruction} onInput=${(e) => setSystemInstruction(e.target.value)} /></div>
      </div>
      <${ErrorBox} error=${error} />
      <p><button type="submit" disabled=${busy}>${busy ? "Submitting…" : "Submit batch"}</button></p>
    </form>
  </section>`;
}
