// A training file's validation report (POST /v1/openft/data/files/{id}/report) as one block:
// verdict, errors with line and field, warnings, token statistics, label distribution, what
// "auto" resolves to and the time estimate. Used by the create-job page and the files page.
// Also the base-model picker's option text. Knows nothing about where the report came from.

import { api } from "./api.js";
import { fmtDuration, fmtNum, h } from "./ui.js";

const MAX_ISSUES = 50;

// POST the report request; `method` is the job's method object (or undefined for the default).
export function fetchReport(fileId, { model, method, role = "training", measurePace = false, signal } = {}) {
  return api(`/openft/data/files/${encodeURIComponent(fileId)}/report`, {
    method: "POST", signal, json: { model: model || null, method, role, measure_pace: measurePace } });
}

function stat(name, label, value, hint) {
  return [h("dt", {}, label), h("dd", { dataset: { stat: name } }, value, hint ? h("span", { class: "muted" }, ` ${hint}`) : null)];
}

function issuesTable(issues, id) {
  const shown = issues.slice(0, MAX_ISSUES);
  return h("table", { class: "grid issues", id },
    h("thead", {}, h("tr", {}, ["Line", "Field", "Problem", "Code"].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, shown.map((e) => h("tr", { dataset: { line: e.line ?? "", field: e.field ?? "", code: e.code } },
      h("td", { class: "num", "data-label": "Line" }, e.line ?? "—"),
      h("td", { "data-label": "Field" }, e.field ? h("code", {}, e.field) : "—"),
      h("td", { "data-label": "Problem" }, e.message),
      h("td", { "data-label": "Code" }, h("code", {}, e.code))))));
}

function distRow(label, d) {
  if (!d) return null;
  return h("tr", {}, h("th", { scope: "row" }, label),
    ["min", "median", "mean", "p95", "max"].map((k) => h("td", { class: "num", "data-label": k }, fmtNum(d[k], 1))));
}

function labelBars(labels) {
  const total = Object.values(labels).reduce((a, b) => a + b, 0);
  return h("div", { id: "report-labels", class: "labels" },
    h("h3", {}, "Label distribution"),
    Object.entries(labels).slice(0, 30).map(([lab, n]) => {
      const pct = (100 * n) / total;
      return h("div", { class: "label-row", dataset: { label: lab, count: n } },
        h("span", { class: "label-name", title: lab }, lab),
        h("span", { class: "label-bar", "aria-hidden": "true" }, h("span", { style: { width: `${pct.toFixed(1)}%` } })),
        h("span", { class: "num" }, `${fmtNum(n)} (${pct.toFixed(1)}%)`));
    }));
}

// The report element. opts.onMeasure(): offered when there is no pace yet (runs a short probe).
export function renderReport(rep, { onMeasure } = {}) {
  const s = rep.stats || {};
  const est = rep.estimate || s.estimate || null;
  const nErr = rep.errors.length, nWarn = rep.warnings.length;
  const verdict = rep.ok
    ? h("span", { class: "badge ok", id: "report-verdict", dataset: { ok: "true" } }, "valid")
    : h("span", { class: "badge bad", id: "report-verdict", dataset: { ok: "false" } }, `${nErr} error${nErr === 1 ? "" : "s"}`);
  const head = h("div", { class: "spread" },
    h("div", {}, h("strong", {}, rep.filename), " ", verdict),
    h("span", { class: "muted" }, `${rep.format || "unknown format"} · ${fmtNum(rep.n_examples)} examples`,
      rep.base_model ? ` · tokens counted with ${rep.base_model}` : " · pick a base model for token counts"));
  const parts = [head];
  if (nErr) parts.push(h("h3", {}, "Errors"), issuesTable(rep.errors, "report-errors"),
    nErr >= MAX_ISSUES ? h("p", { class: "hint" }, `First ${MAX_ISSUES} shown.`) : null);
  if (nWarn) parts.push(h("details", { class: "warnings" }, h("summary", {}, `${nWarn} warning${nWarn === 1 ? "" : "s"}`),
    issuesTable(rep.warnings, "report-warnings")));

  const facts = h("dl", { class: "facts", id: "report-stats" },
    stat("n_examples", "Examples", fmtNum(rep.n_examples)),
    s.n_valid_examples !== undefined ? stat("n_valid_examples", "Valid examples", fmtNum(s.n_valid_examples)) : null,
    s.total_tokens !== undefined ? stat("total_tokens", "Tokens per epoch", fmtNum(s.total_tokens)) : null,
    s.total_trained_tokens !== undefined ? stat("total_trained_tokens", "Trained tokens per epoch", fmtNum(s.total_trained_tokens)) : null,
    rep.max_seq_len ? stat("max_seq_len", "Context used", fmtNum(rep.max_seq_len), "tokens") : null,
    s.n_too_long !== undefined ? stat("n_too_long", "Longer than the context", fmtNum(s.n_too_long)) : null,
    s.n_duplicates !== undefined ? stat("n_duplicates", "Duplicates", fmtNum(s.n_duplicates)) : null,
    s.n_missing_system !== undefined ? stat("n_missing_system", "Without a system message", fmtNum(s.n_missing_system)) : null);
  const dists = [distRow("tokens / example", s.tokens_per_example), distRow("trained tokens / example", s.trained_tokens_per_example),
                 distRow("messages / example", s.messages_per_example)].filter(Boolean);
  const statsBlock = h("div", { class: "report-stats" }, h("h3", {}, "Statistics"), facts,
    dists.length ? h("table", { class: "dist", id: "report-dist" },
      h("thead", {}, h("tr", {}, h("th", {}, ""), ["min", "median", "mean", "p95", "max"].map((k) => h("th", { class: "num", scope: "col" }, k)))),
      h("tbody", {}, dists)) : null);
  const hp = rep.hyperparameters;
  const auto = new Set(rep.auto || []);
  const tag = (k) => (auto.has(k) ? "(auto)" : "(set)");
  const plan = h("div", { class: "report-plan", id: "report-auto" }, h("h3", {}, "Training plan"),
    hp ? h("dl", { class: "facts" },
      stat("n_epochs", "Epochs", fmtNum(hp.n_epochs), tag("n_epochs")),
      stat("batch_size", "Batch size", fmtNum(hp.batch_size), tag("batch_size")),
      stat("learning_rate_multiplier", "Learning rate multiplier", String(hp.learning_rate_multiplier), tag("learning_rate_multiplier")),
      stat("method", "Method", `${rep.method}${rep.method === "supervised" ? ` (${hp.method})` : ""}`),
      est ? stat("trained_tokens", "Tokens trained", fmtNum(est.trained_tokens), `over ${est.n_epochs} epoch${est.n_epochs === 1 ? "" : "s"}`) : null,
      est ? stat("estimated_seconds", "Time on this machine", est.estimated_seconds != null ? `≈ ${fmtDuration(est.estimated_seconds)}` : "unknown",
        est.estimated_seconds != null ? `(pace from ${est.pace_source})` : "(no job of this model has run here yet)") : null)
      : h("p", { class: "muted" }, "No valid example: nothing to plan."),
    est && est.estimated_seconds == null && onMeasure && rep.ok
      ? h("button", { type: "button", id: "report-measure", onclick: onMeasure }, "Measure with a short training probe") : null);
  parts.push(h("div", { class: "report-grid" }, statsBlock, plan));
  if (s.labels) parts.push(labelBars(s.labels));
  return h("section", { class: "card report", id: "report", "aria-label": "Validation report", dataset: { ok: String(rep.ok) } }, parts);
}

// "openft-tiny · context 2,048 · 1.2 MB" from a model object (extension fields when the server has them).
export function modelLabel(m) {
  const ctx = m.context_length ? `context ${fmtNum(m.context_length)}` : "context —";
  const size = m.parameters ? `${fmtParams(m.parameters)} params` : m.size_bytes ? fmtSize(m.size_bytes) : "size —";
  return `${m.id} · ${ctx} · ${size}`;
}

function fmtParams(n) {
  if (n >= 1e9) return `${(n / 1e9).toFixed(1)}B`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(0)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(0)}K`;
  return String(n);
}

function fmtSize(b) {
  return b >= 1e9 ? `${(b / 1e9).toFixed(1)} GB` : `${(b / 1e6).toFixed(1)} MB`;
}
