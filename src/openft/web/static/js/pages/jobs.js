// #/jobs and #/jobs?status=running: the project's fine-tuning jobs, newest first, one page of
// PAGE at a time from the server (OpenAI's `after`/`limit`, plus openft's `status` filter), so a
// project with thousands of jobs loads one small page. The visible page refreshes itself while
// any job on it is still moving. Rows open #/jobs/:id; "Create" goes to #/jobs/new.
//
// Stable hooks for tests: #jobs-status (filter select), #jobs-create, table#jobs-table with
// tr[data-key=<job id>], td.job-status .badge[data-status], #jobs-next / #jobs-prev, #jobs-page,
// .state.empty#jobs-empty; performance mark "openft:jobs-list" once the first page is shown.

import { api, qs } from "../api.js";
import { badge, empty, errorBox, fmtDuration, fmtNum, fmtTime, h, loading, mount, table, every } from "../ui.js";
import { STATUSES, isTerminal, jobSeconds, modelName } from "../jobs_view.js";

const PAGE = 25;

const COLUMNS = [
  { label: "Status", class: "job-status", value: (j) => badge(j.pause_requested ? "pausing" : j.status) },
  { label: "Job", class: "job-id", value: (j) => h("a", { href: `#/jobs/${encodeURIComponent(j.id)}` }, h("code", {}, j.id)) },
  { label: "Base model", class: "job-model", value: (j) => h("code", {}, j.model) },
  { label: "Suffix", class: "job-suffix", value: (j) => j.suffix || "—" },
  { label: "Created", class: "job-created", value: (j) => fmtTime(j.created_at) },
  { label: "Duration", class: "job-duration num", value: (j) => fmtDuration(jobSeconds(j)) },
  { label: "Trained tokens", class: "job-tokens num", value: (j) => fmtNum(j.trained_tokens) },
  { label: "Fine-tuned model", class: "job-ft-model", value: (j) => modelName(j.fine_tuned_model) },
];

function howToStart() {
  return h("div", { class: "howto" },
    h("p", {}, "Start one here with ", h("strong", {}, "Create"), " (upload a JSONL file, pick a base model), or from code:"),
    h("pre", {}, `from openai import OpenAI
client = OpenAI(base_url="${location.origin}/v1", api_key="sk-…")
f = client.files.create(file=open("train.jsonl", "rb"), purpose="fine-tune")
client.fine_tuning.jobs.create(model="openft-tiny", training_file=f.id)`),
    h("p", {}, "or ", h("code", {}, "openft jobs create --model openft-tiny --training-file train.jsonl"), "."));
}

export async function render(root, _params, ctx) {
  ctx.setTitle("Fine-tuning jobs");
  const status = STATUSES.includes(ctx.query.get("status")) ? ctx.query.get("status") : "";
  const select = h("select", { id: "jobs-status", name: "status", onchange: () => ctx.navigate(
    select.value ? `/jobs?status=${select.value}` : "/jobs") },
    h("option", { value: "" }, "All statuses"),
    STATUSES.map((s) => h("option", { value: s, selected: s === status }, s.replace(/_/g, " "))));
  const body = h("div", { id: "jobs-body", "aria-live": "polite" }, loading("Loading jobs…"));
  const prev = h("button", { type: "button", id: "jobs-prev", disabled: true, onclick: () => go(-1) }, "← Newer");
  const next = h("button", { type: "button", id: "jobs-next", disabled: true, onclick: () => go(+1) }, "Older →");
  const pageNo = h("span", { id: "jobs-page", class: "muted" });
  const pager = h("div", { class: "pager row", hidden: true }, prev, pageNo, next);
  root.append(
    h("div", { class: "spread page-head" },
      h("h1", {}, "Fine-tuning jobs"),
      h("div", { class: "row" },
        h("label", { class: "inline", for: "jobs-status" }, "Status"), select,
        h("a", { class: "button primary", id: "jobs-create", href: "#/jobs/new" }, "Create"))),
    body, pager);

  // cursors[i] is the `after` of page i (undefined for the first page)
  const cursors = [undefined];
  let index = 0, shown = null, stopRefresh = null, seq = 0;

  async function load(i, { quiet = false } = {}) {
    const mySeq = ++seq;
    if (!quiet) mount(body, loading("Loading jobs…"));
    let page;
    try {
      page = await api(`/fine_tuning/jobs${qs({ limit: PAGE, after: cursors[i], status })}`);
    } catch (err) {
      if (mySeq === seq && !quiet) mount(body, errorBox(err, () => load(i)));
      return;
    }
    if (mySeq !== seq) return;
    index = i;
    if (page.has_more) cursors[i + 1] = page.last_id;
    const key = JSON.stringify(page.data);
    if (!quiet || key !== shown) draw(page);
    shown = key;
    prev.disabled = index === 0;
    next.disabled = !page.has_more;
    pager.hidden = index === 0 && !page.has_more;
    pageNo.textContent = `Page ${index + 1}`;
    if (!performance.getEntriesByName("openft:jobs-list").length) performance.mark("openft:jobs-list");
    // keep this page fresh while a job on it can still change
    const moving = page.data.some((j) => !isTerminal(j));
    if (moving && !stopRefresh) stopRefresh = every(3000, () => load(index, { quiet: true }));
    if (!moving && stopRefresh) { stopRefresh(); stopRefresh = null; }
  }

  function draw(page) {
    if (!page.data.length) {
      mount(body, status
        ? empty(`No jobs with status “${status.replace(/_/g, " ")}”.`, h("a", { href: "#/jobs" }, "Show all jobs"))
        : h("div", { id: "jobs-empty" }, empty("No fine-tuning jobs yet.", howToStart())));
      if (status) body.firstChild.id = "jobs-empty";
      return;
    }
    const t = table(COLUMNS, page.data, { rowKey: (j) => j.id,
                                          onRow: (j) => ctx.navigate(`/jobs/${encodeURIComponent(j.id)}`) });
    t.id = "jobs-table";
    t.setAttribute("aria-label", "Fine-tuning jobs, newest first");
    mount(body, t);
  }

  function go(delta) {
    const i = index + delta;
    if (i < 0 || (delta > 0 && cursors[i] === undefined)) return;
    load(i).then(() => (delta > 0 ? next : prev).focus());
  }

  await load(0);
  return () => { seq++; if (stopRefresh) stopRefresh(); };
}
