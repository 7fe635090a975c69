// The dashboard's shell: sign-in with an API key, tabs, and a hash router over the views.
import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import { api, apiKey, basePath, forgetKey, saveKey, whenUnauthorized } from "./api.js";
import { html, ErrorBox } from "./ui.js";
import { JobsView, JobView } from "./jobs.js";
import { SubmitView } from "./submit.js";
import { ImagesView } from "./images.js";
import { MetricsView } from "./metrics.js";
import { ReportsView } from "./reports.js";
import { AnalyticsView } from "./analytics.js";
import { BatchModeView } from "./batchmode.js";

const TABS = [
  ["jobs", "Jobs"],
  ["submit", "New batch"],
  ["images", "Image queue"],
  ["metrics", "Metrics"],
  ["reports", "Reports"],
  ["analytics", "Analytics"],
  ["batch-mode", "Batch Mode"],
];

function route() {
  const parts = location.hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
  return { tab: parts[0] || "jobs", id: parts[1] || null };
}

function SignIn({ onSignedIn, reason }) {
  const [key, setKey] = useState("");
  const [error, setError] = useState(reason || null);
  const [busy, setBusy] = useState(false);
  const submit = async (event) => {
    event.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await api("/batch/jobs", { key: key.trim(), params: { limit: 1 } });
      saveKey(key.trim());
      onSignedIn();
    } catch (failure) {
      setError(failure.status === 401 ? { message: "That API key was not accepted." } : failure);
    } finally {
      setBusy(false);
    }
  };
  return html`<main><section class="panel signin" aria-labelledby="signin-title">
    <h1 id="signin-title"><img src=${basePath + "/assets/favicon.svg"} alt="" width="24" height="24" /> Batch platform</h1>
    <p class="muted">Sign in with your API key. It stays in this browser tab's session storage and is sent only
      to the platform's API.</p>
    <form onSubmit=${submit}>
      <label for="api-key">API key</label>
      <input id="api-key" name="api-key" type="password" autocomplete="off" required value=${key}
        onInput=${(e) => setKey(e.target.value)} />
      <${ErrorBox} error=${error} />
      <p><button type="submit" disabled=${busy || !key.trim()}>${busy ? "Checking…" : "Sign in"}</button></p>
    </form>
  </section></main>`;
}

function Shell({ onSignOut }) {
  const [where, setWhere] = useState(route());
  useEffect(() => {
    const changed = () => setWhere(route());
    addEventListener("hashchange", changed);
    return () => removeEventListener("hashchange", changed);
  }, []);
  useEffect(() => {
    const name = TABS.find(([tab]) => tab === where.tab);
    document.title = `${where.id ? "Job " + where.id : name ? name[1] : "Dashboard"} · Batch platform`;
  }, [where.tab, where.id]);
  const { tab, id } = where;
  let view;
  if (tab === "jobs" && id) view = html`<${JobView} batchId=${id} key=${id} />`;
  else if (tab === "jobs") view = html`<${JobsView} />`;
  else if (tab === "submit") view = html`<${SubmitView} />`;
  else if (tab === "images") view = html`<${ImagesView} />`;
  else if (tab === "metrics") view = html`<${MetricsView} />`;
  else if (tab === "reports") view = html`<${ReportsView} />`;
  else if (tab === "analytics") view = html`<${AnalyticsView} />`;
  else if (tab === "batch-mode") view = html`<${BatchModeView} />`;
  else view = html`<section class="panel"><h1>Not found</h1><p><a href="#/jobs">Back to jobs</a></p></section>`;
  return html`
    <header class="topbar">
      <div class="brand"><img src=${basePath + "/assets/favicon.svg"} alt="" /> Batch platform</div>
      <nav class="tabs" aria-label="Sections">
        ${TABS.map(([name, title]) => html`<a href=${"#/" + name} aria-current=${tab === name ? "page" : null}>${title}</a>`)}
      </nav>
      <div class="whoami"><button class="secondary" onClick=${onSignOut}>Sign out</button></div>
    </header>
    <main id="main">${view}</main>`;
}

function App() {
  const [signedIn, setSignedIn] = useState(!!apiKey());
  const [reason, setReason] = useState(null);
  useEffect(() => {
    whenUnauthorized(() => {
      forgetKey();
      setReason({ message: "Your API key is no longer accepted: sign in again." });
      setSignedIn(false);
    });
  }, []);
  if (!signedIn) return html`<${SignIn} reason=${reason} onSignedIn=${() => { setReason(null); setSignedIn(true); }} />`;
  return html`<${Shell} onSignOut=${() => { forgetKey(); setSignedIn(false); }} />`;
}

render(html`<${App} />`, document.getElementById("app"));
