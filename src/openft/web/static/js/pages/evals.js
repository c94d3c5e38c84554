// Evaluations (OpenAI's Evals API at /v1/evals):
//   #/evals                    the evals, newest first;
//   #/evals/:eval              its runs in one comparison table (counts, pass rate and mean score
//                              per testing criterion, tokens per model) and per-item answers side
//                              by side across the runs picked, aligned by datasource item;
//   #/evals/:eval/runs/:run    one run: counts, criteria, usage and its output items.
// Runs still queued or in progress are polled until they finish. The metrics per criterion (pass
// rate, mean grader score: accuracy for string checks, BLEU/ROUGE/fuzzy for text similarity) are
// computed here from the runs' output items, which is where the API keeps them.

import { api, listAll } from "../api.js";
import { badge, empty, errorBox, every, fmtNum, fmtTime, h, loading, mount, table } from "../ui.js";

const LIVE = ["queued", "in_progress"];
const MAX_COMPARE = 4;

export async function render(root, params, ctx) {
  if (params.run) return runPage(root, params.eval, params.run, ctx);
  if (params.eval) return evalPage(root, params.eval, ctx);
  return listPage(root, ctx);
}

const enc = encodeURIComponent;
const pct = (x) => (x === null || x === undefined || Number.isNaN(x) ? "—" : `${(x * 100).toFixed(1)}%`);
const score = (x) => (x === null || x === undefined || Number.isNaN(x) ? "—" : x.toFixed(3));

async function listPage(root, ctx) {
  ctx.setTitle("Evaluations");
  mount(root, h("h1", {}, "Evaluations"), loading("Loading evals…"));
  let evals;
  try {
    evals = await listAll("/evals", { order: "desc" }, 1000);
  } catch (err) {
    mount(root, h("h1", {}, "Evaluations"), errorBox(err, () => listPage(root, ctx)));
    return;
  }
  const body = evals.length ? table([
    { label: "Name", value: (e) => h("a", { href: `#/evals/${enc(e.id)}` }, e.name) },
    { label: "Id", value: (e) => h("span", { class: "mono" }, e.id) },
    { label: "Testing criteria", value: (e) => e.testing_criteria.map((c) => `${c.name} (${c.type})`).join(", ") },
    { label: "Created", value: (e) => fmtTime(e.created_at) },
  ], evals, { rowKey: (e) => e.id, onRow: (e) => ctx.navigate(`/evals/${enc(e.id)}`) })
    : empty("No evals yet. Create one with the SDK (client.evals.create) or `openft evals create`.");
  mount(root, h("h1", {}, "Evaluations"), h("div", { id: "ev-list" }, body));
}

// Per-criterion pass rate and mean score of a run, from its output items.
function itemMetrics(items) {
  const out = {};
  for (const it of items) {
    if (it.status === "error") continue;
    for (const r of it.results || []) {
      const m = (out[r.name] ||= { n: 0, passed: 0, sum: 0 });
      m.n++;
      m.passed += r.passed ? 1 : 0;
      m.sum += Number(r.score) || 0;
    }
  }
  for (const m of Object.values(out)) { m.rate = m.n ? m.passed / m.n : null; m.mean = m.n ? m.sum / m.n : null; }
  return out;
}

function done(run) { const c = run.result_counts; return c.passed + c.failed + c.errored; }

function progress(run) {
  const total = run.result_counts.total || 0, n = done(run);
  const p = total ? Math.round((n / total) * 100) : 0;
  return h("div", { class: "ev-progress", dataset: { done: String(n), total: String(total) } },
    h("div", { class: "progress", role: "progressbar", "aria-valuenow": p, "aria-valuemin": 0, "aria-valuemax": 100,
               "aria-label": `${run.name} progress` }, h("div", { style: { width: `${p}%` } })),
    h("div", { class: "hint" }, `${n} / ${total} items`));
}

function tokens(run) {
  const u = run.per_model_usage || [];
  if (!u.length) return "—";
  return h("div", {}, u.map((m) => h("div", { class: "ev-score" },
    `${m.model_name}: ${fmtNum(m.prompt_tokens)} in · ${fmtNum(m.completion_tokens)} out · ${fmtNum(m.invocation_count)} calls`)));
}

function outputText(item) {
  if (item.status === "error") return item.sample?.error?.message || "error";
  const out = item.sample?.output;
  if (Array.isArray(out) && out.length) return out.map((m) => m.content ?? "").join("\n");
  return item.sample?.output_text ?? "";
}

function inputText(item, fallback = true) {
  const msgs = item.sample?.input;
  if (Array.isArray(msgs) && msgs.length) return msgs.filter((m) => m.role !== "system").map((m) => m.content).join("\n");
  return fallback ? JSON.stringify(item.datasource_item) : "—";
}

function itemBadge(status) {
  const kind = { pass: "ok", fail: "bad", error: "bad" }[status] || "muted";
  return h("span", { class: `badge ${kind}`, dataset: { status } }, status);
}

function resultBadges(item) {
  if (item.status === "error") return h("span", { class: "ev-fail" }, "error");
  return h("div", {}, (item.results || []).map((r) => h("div", { class: "ev-score" },
    h("span", { class: r.passed ? "ev-pass" : "ev-fail" }, r.passed ? "✓" : "✗"), ` ${r.name} ${score(Number(r.score))}`)));
}

async function evalPage(root, evalId, ctx) {
  mount(root, loading("Loading the eval…"));
  let ev;
  try {
    ev = await api(`/evals/${enc(evalId)}`);
  } catch (err) {
    mount(root, h("p", {}, h("a", { href: "#/evals" }, "← Evaluations")), errorBox(err));
    return;
  }
  ctx.setTitle(ev.name);
  const criteria = ev.testing_criteria.map((c) => c.name);
  const runsBox = h("div", { id: "ev-runs" }, loading("Loading runs…"));
  const compareBox = h("div", { id: "ev-compare" });
  const picks = new Set();
  let onlyDiffOn = false;
  const itemsCache = new Map();  // run id -> output items, kept once the run has finished
  let runs = [], last = "";

  async function items(run) {
    if (itemsCache.has(run.id)) return itemsCache.get(run.id);
    const got = await listAll(`/evals/${enc(evalId)}/runs/${enc(run.id)}/output_items`, {}, 5000);
    if (!LIVE.includes(run.status)) itemsCache.set(run.id, got);
    return got;
  }

  // Polled all the time (new runs appear, live ones progress); redrawn only when something changed,
  // so that focus and scroll stay where the user left them.
  async function refresh() {
    let got;
    try {
      got = await listAll(`/evals/${enc(evalId)}/runs`, { order: "asc" }, 200);
    } catch (err) {
      mount(runsBox, errorBox(err, refresh));
      last = "";
      return;
    }
    const seen = JSON.stringify(got);
    if (seen === last) return;
    last = seen;
    runs = got;
    if (!runs.length) {
      mount(runsBox, empty("No runs yet. Start one with client.evals.runs.create or `openft evals run`."));
      compareBox.replaceChildren();
    } else {
      if (!picks.size) runs.filter((r) => r.status === "completed").slice(-MAX_COMPARE).forEach((r) => picks.add(r.id));
      const metrics = new Map(await Promise.all(runs.map(async (r) => [r.id, itemMetrics(await items(r).catch(() => []))])));
      mount(runsBox, comparisonTable(runs, criteria, metrics));
      await renderCompare();
    }
  }

  function comparisonTable(rows, names, metrics) {
    const best = {};
    for (const n of names) {
      const vals = rows.map((r) => metrics.get(r.id)[n]?.mean).filter((x) => x !== null && x !== undefined);
      best[n] = vals.length > 1 ? Math.max(...vals) : null;
    }
    const passRate = (r) => { const c = r.result_counts; return c.passed + c.failed ? c.passed / (c.passed + c.failed) : null; };
    return h("div", { class: "ev-scroll" }, table([
      { label: "Compare", value: (r) => h("input", { type: "checkbox", class: "ev-pick", checked: picks.has(r.id),
          "aria-label": `Compare ${r.name}`,
          onchange: (e) => { if (e.target.checked) picks.add(r.id); else picks.delete(r.id); renderCompare(); } }) },
      { label: "Run", value: (r) => h("a", { href: `#/evals/${enc(evalId)}/runs/${enc(r.id)}`, class: "ev-run-link" }, r.name) },
      { label: "Model", value: (r) => h("span", { class: "mono ev-model" }, r.model || `given samples (${r.data_source?.type})`) },
      { label: "Status", value: (r) => h("div", {}, badge(r.status), LIVE.includes(r.status) && progress(r),
          r.error?.message && h("div", { class: "ev-fail" }, r.error.message)) },
      { label: "Items", class: "num ev-total", value: (r) => fmtNum(r.result_counts.total) },
      { label: "Passed", class: "num ev-passed", value: (r) => fmtNum(r.result_counts.passed) },
      { label: "Failed", class: "num ev-failed", value: (r) => fmtNum(r.result_counts.failed) },
      { label: "Errored", class: "num ev-errored", value: (r) => fmtNum(r.result_counts.errored) },
      { label: "Pass rate", class: "num ev-rate", value: (r) => pct(passRate(r)) },
      ...names.map((n) => ({
        label: n, class: "num ev-crit",
        value: (r) => {
          const c = (r.per_testing_criteria_results || []).find((x) => x.testing_criteria === n) || { passed: 0, failed: 0 };
          const m = metrics.get(r.id)[n];
          return h("div", { dataset: { criterion: n } },
            h("div", { class: "ev-crit-counts" }, `${c.passed} / ${c.passed + c.failed} passed`),
            h("div", { class: `ev-score ev-mean${m && best[n] !== null && m.mean === best[n] ? " ev-best" : ""}` },
              `mean score ${score(m?.mean)}`));
        },
      })),
      { label: "Tokens", value: (r) => tokens(r) },
    ], rows, { rowKey: (r) => r.id }));
  }

  async function renderCompare() {
    const chosen = runs.filter((r) => picks.has(r.id));
    if (chosen.length < 2) {
      mount(compareBox, empty("Tick two or more runs above to see their answers side by side."));
      return;
    }
    mount(compareBox, loading("Loading answers…"));
    let lists;
    try {
      lists = await Promise.all(chosen.map(items));
    } catch (err) {
      mount(compareBox, errorBox(err, renderCompare));
      return;
    }
    const byItem = new Map();
    lists.forEach((list, k) => list.forEach((it) => {
      if (!byItem.has(it.datasource_item_id)) byItem.set(it.datasource_item_id, new Array(chosen.length).fill(null));
      byItem.get(it.datasource_item_id)[k] = it;
    }));
    const rows = [...byItem.entries()].sort((a, b) => a[0] - b[0]);
    const onlyDiff = h("input", { type: "checkbox", id: "ev-only-diff", checked: onlyDiffOn });
    const differs = ([, its]) => new Set(its.map((it) => (it ? `${it.status}|${outputText(it)}` : "missing"))).size > 1;
    const body = h("div", { class: "ev-scroll" });
    const draw = () => {
      const shown = onlyDiff.checked ? rows.filter(differs) : rows;
      mount(body, shown.length ? table([
        { label: "#", class: "num", value: ([id]) => String(id) },
        { label: "Item", value: ([, its]) => h("div", { class: "pg-text" }, inputText(its.find(Boolean))) },
        ...chosen.map((r, k) => ({
          label: r.model ? `${r.name} · ${r.model}` : r.name,
          value: ([, its]) => (its[k] ? h("div", { dataset: { run: r.id } },
            h("div", { class: "pg-text ev-output" }, outputText(its[k])), resultBadges(its[k])) : "—"),
        })),
      ], shown, { rowKey: ([id]) => String(id) }) : empty("Every run gave the same answers."));
      body.firstChild?.classList?.add("ev-items");
    };
    onlyDiff.addEventListener("change", () => { onlyDiffOn = onlyDiff.checked; draw(); });
    draw();
    mount(compareBox, h("div", { class: "row" }, h("label", { class: "inline", for: "ev-only-diff" }, onlyDiff,
      "Only items where the runs differ"),
      h("span", { class: "muted" }, `${rows.length} items, ${rows.filter(differs).length} differ`)), body);
  }

  mount(root,
    h("p", {}, h("a", { href: "#/evals" }, "← Evaluations")),
    h("h1", {}, ev.name),
    h("dl", { class: "facts card" },
      h("dt", {}, "Id"), h("dd", { class: "mono" }, ev.id),
      h("dt", {}, "Created"), h("dd", {}, fmtTime(ev.created_at)),
      h("dt", {}, "Testing criteria"), h("dd", {}, ev.testing_criteria.map((c) =>
        h("div", {}, h("b", {}, c.name), ` · ${c.type}`, c.evaluation_metric ? ` (${c.evaluation_metric})` : "",
          c.operation ? ` (${c.operation})` : "", c.pass_threshold !== undefined ? ` · pass ≥ ${c.pass_threshold}` : "")))),
    h("h2", {}, "Runs"), runsBox,
    h("h2", {}, "Answers side by side"), compareBox);
  await refresh();
  return every(1500, refresh);
}

async function runPage(root, evalId, runId, ctx) {
  mount(root, loading("Loading the run…"));
  const back = h("p", {}, h("a", { href: `#/evals/${enc(evalId)}` }, "← All runs of this eval"));
  const head = h("div", { id: "ev-run" });
  const itemsBox = h("div", { id: "ev-run-items" });
  const filter = h("select", { id: "ev-status-filter" },
    ["all", "pass", "fail", "error"].map((s) => h("option", { value: s }, s)));
  let stop = null, run;

  async function refresh() {
    try {
      run = await api(`/evals/${enc(evalId)}/runs/${enc(runId)}`);
    } catch (err) {
      mount(head, errorBox(err, refresh));
      return;
    }
    ctx.setTitle(run.name);
    const c = run.result_counts;
    mount(head,
      h("h1", {}, run.name, " ", badge(run.status)),
      h("dl", { class: "facts card" },
        h("dt", {}, "Run"), h("dd", { class: "mono" }, run.id),
        h("dt", {}, "Model"), h("dd", { class: "mono" }, run.model || "— (samples given in the data source)"),
        h("dt", {}, "Data source"), h("dd", {}, run.data_source?.type || "—"),
        h("dt", {}, "Created"), h("dd", {}, fmtTime(run.created_at)),
        h("dt", {}, "Progress"), h("dd", {}, progress(run)),
        h("dt", {}, "Results"), h("dd", { class: "ev-counts" },
          `${c.passed} passed · ${c.failed} failed · ${c.errored} errored of ${c.total}`),
        h("dt", {}, "Tokens"), h("dd", {}, tokens(run))),
      run.error?.message && errorBox(run.error),
      h("h2", {}, "Testing criteria"),
      table([
        { label: "Criterion", value: (x) => x.testing_criteria },
        { label: "Passed", class: "num", value: (x) => fmtNum(x.passed) },
        { label: "Failed", class: "num", value: (x) => fmtNum(x.failed) },
        { label: "Pass rate", class: "num", value: (x) => pct(x.passed + x.failed ? x.passed / (x.passed + x.failed) : null) },
      ], run.per_testing_criteria_results || []));
    await loadItems();
    const live = LIVE.includes(run.status);
    if (live && !stop) stop = every(1500, refresh);
    if (!live && stop) { stop(); stop = null; }
  }

  async function loadItems() {
    let list;
    try {
      list = await listAll(`/evals/${enc(evalId)}/runs/${enc(runId)}/output_items`,
                           filter.value === "all" ? {} : { status: filter.value }, 5000);
    } catch (err) {
      mount(itemsBox, errorBox(err, loadItems));
      return;
    }
    mount(itemsBox, list.length ? h("div", { class: "ev-scroll" }, table([
      { label: "#", class: "num", value: (it) => String(it.datasource_item_id) },
      { label: "Status", value: (it) => itemBadge(it.status) },
      { label: "Prompt", value: (it) => h("div", { class: "pg-text" }, inputText(it, false)) },
      { label: "Item", value: (it) => h("div", { class: "pg-text mono" }, JSON.stringify(it.datasource_item)) },
      { label: "Output", value: (it) => h("div", { class: "pg-text ev-output" }, outputText(it)) },
      { label: "Grades", value: (it) => resultBadges(it) },
    ], list, { rowKey: (it) => String(it.datasource_item_id) }))
      : empty(run && LIVE.includes(run.status) ? "No items graded yet." : "No items."));
    itemsBox.querySelector("table")?.classList.add("ev-items");
  }

  filter.addEventListener("change", loadItems);
  mount(root, back, head, h("div", { class: "spread" }, h("h2", {}, "Output items"),
    h("label", { class: "inline", for: "ev-status-filter" }, "Show", filter)), itemsBox);
  await refresh();
  return () => { if (stop) stop(); };
}

