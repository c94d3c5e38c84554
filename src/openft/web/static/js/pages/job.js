// #/jobs/:id: one fine-tuning job, live. Status, actions (cancel / pause / resume as the status
// allows), progress with step/total and ETA, the error of a failed job with its file, line and
// field, facts and hyperparameters, loss and token-accuracy curves (js/chart.js) with smoothing
// and a log scale (a preference job adds reward margin and reward accuracy), checkpoints with "Try in playground", the results file, and the events.
//
// While the job is not finished the page polls every second: the job, only the metric points
// written since its cursor (GET /v1/fine_tuning/jobs/{id}/metrics?after=...), only the events it
// has not seen, and the checkpoints when an event says one was written. It stops at the end.
//
// Stable hooks for tests: #job-status .badge[data-status] ("pausing" while a pause is pending), #job-cancel, #job-pause, #job-resume,
// #job-error (.error-file, .error-line, .error-field), #job-progress[aria-valuenow],
// #job-progress-text, #job-eta, #job-facts, #job-hyperparameters, #chart-loss, #chart-accuracy,
// #chart-reward_margin, #chart-reward_accuracy (each in #figure-NAME, hidden without data; see
// js/chart.js for el._uplot / el._columns), #chart-smoothing, #chart-log, table#job-checkpoints
// (tr[data-key=checkpoint model], a.try-playground), #try-model, #download-results, ol#job-events.

import { api, qs } from "../api.js";
import { badge, empty, errorBox, every, fmtDuration, fmtNum, fmtTime, h, loading, mount, table, toast } from "../ui.js";
import { appendColumns, chartColumns, chartSpecs, Curves } from "../chart.js";
import { ALLOWED, downloadFile, errorLocation, isTerminal, jobSeconds, modelName, playgroundHref } from "../jobs_view.js";

const POLL_MS = 1000;
const MAX_EVENTS = 500;   // events kept on the page (newest first)

const num4 = (v) => (v === null || v === undefined ? "—" : Number(v).toFixed(4));

export async function render(root, { id }, ctx) {
  ctx.setTitle(`Job ${id}`);
  const path = `/fine_tuning/jobs/${encodeURIComponent(id)}`;
  let job, metrics, events, ckpts;
  root.append(loading("Loading the job…"));
  try {
    [job, metrics, events, ckpts] = await Promise.all([
      api(path), api(`${path}/metrics`), api(`${path}/events?limit=100`), api(`${path}/checkpoints?limit=100`)]);
  } catch (err) {
    mount(root, h("p", {}, h("a", { href: "#/jobs" }, "← All jobs")),
          errorBox(err.status === 404 ? { ...err, message: `No job ${id} in this project.` } : err, () => location.reload()));
    return;
  }
  root.replaceChildren();
  const specs = chartSpecs(metrics.charts);  // the metric names and labels, from the API
  const cols = chartColumns(metrics);
  let cursor = metrics.cursor, totalSteps = metrics.total_steps;
  const seen = new Set(events.data.map((e) => e.id));
  let eventList = events.data.slice();

  // ---- layout --------------------------------------------------------------------------------
  const statusEl = h("span", { id: "job-status" });
  const actions = h("div", { class: "row job-actions" });
  const errorEl = h("div", { id: "job-error-slot" });
  const bar = h("div", {});
  const progress = h("div", { class: "progress", id: "job-progress", role: "progressbar", "aria-label": "Training progress",
                              "aria-valuemin": "0", "aria-valuemax": "100" }, bar);
  const progressText = h("span", { id: "job-progress-text" });
  const eta = h("span", { id: "job-eta", class: "muted" });
  const live = h("p", { id: "job-live", class: "hint", role: "status" });
  const facts = h("dl", { class: "facts", id: "job-facts" });
  const hyper = h("dl", { class: "facts", id: "job-hyperparameters" });
  const smoothing = h("input", { type: "range", id: "chart-smoothing", min: "0", max: "0.99", step: "0.01", value: "0" });
  const smoothingOut = h("output", { for: "chart-smoothing", id: "chart-smoothing-value" }, "0");
  const logBox = h("input", { type: "checkbox", id: "chart-log" });
  const chartEls = specs.map((c) => h("div", { class: "chart-plot", id: `chart-${c.name}`, role: "img",
                                                  "aria-label": `${c.title} by step` }));
  const noMetrics = h("p", { class: "muted", id: "charts-empty" });
  const figures = specs.map((c, i) => h("figure", { class: "chart", id: `figure-${c.name}` },
    h("figcaption", {}, c.title), chartEls[i]));
  const chartsGrid = h("div", { class: "charts" }, figures);
  const controls = h("div", { class: "row chart-controls" },
    h("label", { class: "inline", for: "chart-smoothing" }, "Smoothing"), smoothing, smoothingOut,
    h("label", { class: "inline", for: "chart-log" }, logBox, "Log scale (loss)"));
  const ckptSlot = h("div", { id: "job-checkpoints-slot" });
  const eventsEl = h("ol", { id: "job-events", class: "events", "aria-live": "off" });

  root.append(
    h("p", { class: "crumbs" }, h("a", { href: "#/jobs" }, "← All jobs")),
    h("div", { class: "spread page-head" },
      h("h1", { class: "job-title" }, h("code", {}, id), " ", statusEl),
      actions),
    errorEl,
    h("section", { class: "card job-progress-card", "aria-label": "Progress" },
      h("div", { class: "spread" }, progressText, eta), progress, live),
    h("div", { class: "grid2 job-info" },
      h("section", { class: "card" }, h("h2", {}, "Job"), facts),
      h("section", { class: "card" }, h("h2", {}, "Hyperparameters"), hyper)),
    h("section", { class: "card charts-card", "aria-label": "Training curves" },
      h("div", { class: "spread" }, h("h2", {}, "Training curves"), controls),
      noMetrics,
      chartsGrid),
    h("section", {}, h("h2", {}, "Checkpoints"), ckptSlot),
    h("section", {}, h("h2", {}, "Events"), eventsEl));

  const charts = specs.map((spec, i) => new Curves(chartEls[i], spec));
  const redraw = (opts) => {
    const none = !cols.steps?.length;
    noMetrics.textContent = !none ? "" :
      (isTerminal(job) ? "This job wrote no training metrics." : "Curves appear with the first training step.");
    chartsGrid.style.display = controls.style.display = none && isTerminal(job) ? "none" : "";
    charts.forEach((c, i) => {
      c.set(cols, opts);
      figures[i].style.display = c.spec.optional && !c.active().length ? "none" : "";  // rewards: DPO jobs only
    });
  };
  let smoothTimer;
  smoothing.addEventListener("input", () => {
    smoothingOut.textContent = smoothing.value;
    clearTimeout(smoothTimer);
    smoothTimer = setTimeout(() => redraw({ smoothing: Number(smoothing.value) }), 60);
  });
  logBox.addEventListener("change", () => redraw({ log: logBox.checked }));

  // ---- pieces that change --------------------------------------------------------------------
  function showStatus() {
    mount(statusEl, badge(job.pause_requested ? "pausing" : job.status));  // pausing: until the runner's checkpoint
    ctx.setTitle(`Job ${id} (${job.status.replace(/_/g, " ")})`);
  }

  function showActions() {
    const make = (verb, label, cls) => {
      const b = h("button", { type: "button", id: `job-${verb}`, class: cls, disabled: !ALLOWED[verb].has(job.status),
                              onclick: () => act(verb, b) }, label);
      if (b.disabled) b.title = `Not possible while the job is ${job.status.replace(/_/g, " ")}`;
      return b;
    };
    mount(actions, isTerminal(job) ? null : [make("pause", "Pause"), make("resume", "Resume"), make("cancel", "Cancel", "danger")]);
  }

  async function act(verb, button) {
    if (verb === "cancel" && !window.confirm(`Cancel job ${id}? Training stops and cannot be resumed.`)) return;
    button.disabled = true;
    try {
      job = await api(`${path}/${verb}`, { method: "POST" });
      toast(verb === "pause" && job.status === "running" ? "Pausing: the job saves a checkpoint when its current step ends."
        : `Job ${verb === "cancel" ? "cancelled" : verb === "pause" ? "paused" : "resumed"}.`);
      update();
      if (!stopPoll) { terminalTicks = 0; startPolling(); }
    } catch (err) {
      toast(err.message, "error");
      button.disabled = false;
    }
  }

  function showError() {
    if (job.status !== "failed" || !job.error) { errorEl.replaceChildren(); return; }
    const e = job.error, where = errorLocation(e.message);
    const fileId = e.param && job[e.param];
    mount(errorEl, h("div", { class: "state error job-error", id: "job-error", role: "alert" },
      h("p", { class: "error-message" }, e.message),
      h("dl", { class: "facts" },
        e.code && [h("dt", {}, "Code"), h("dd", { class: "error-code" }, h("code", {}, e.code))],
        e.param && [h("dt", {}, "Parameter"), h("dd", { class: "error-param" }, h("code", {}, e.param),
                                                   fileId ? [" ", h("a", { href: `#/files/${encodeURIComponent(fileId)}` }, fileId)] : null)],
        where?.file && [h("dt", {}, "File"), h("dd", { class: "error-file" }, where.file)],
        where?.line && [h("dt", {}, "Line"), h("dd", { class: "error-line" }, String(where.line))],
        where?.field && [h("dt", {}, "Field"), h("dd", { class: "error-field" }, h("code", {}, where.field))])));
  }

  function showProgress() {
    const step = cols.steps?.length ? cols.steps[cols.steps.length - 1] : 0;
    let pct = totalSteps ? Math.min(100, (100 * step) / totalSteps) : 0;
    if (job.status === "succeeded") pct = 100;
    bar.style.width = `${pct}%`;
    progress.setAttribute("aria-valuenow", String(Math.round(pct)));
    progress.dataset.step = String(step);
    progress.dataset.total = totalSteps ? String(totalSteps) : "";
    progressText.textContent = totalSteps ? `Step ${fmtNum(step)} / ${fmtNum(totalSteps)} (${Math.floor(pct)}%)`
      : (isTerminal(job) ? "No training steps." : "Waiting for the first step…");
    const left = job.estimated_finish ? job.estimated_finish - Date.now() / 1000 : null;
    eta.textContent = isTerminal(job) ? `Took ${fmtDuration(jobSeconds(job))}`
      : left !== null ? `ETA ${fmtDuration(Math.max(0, left))} (${fmtTime(job.estimated_finish)})` : "ETA —";
  }

  function showFacts() {
    const row = (label, value) => [h("dt", {}, label), h("dd", {}, value ?? "—")];
    const results = job.result_files?.[0];
    mount(facts,
      row("Model", h("code", {}, job.model)),
      row("Fine-tuned model", job.fine_tuned_model ? [modelName(job.fine_tuned_model), " ",
        h("a", { id: "try-model", href: playgroundHref(job.fine_tuned_model) }, "Try in playground")] : "—"),
      row("Method", (job.method?.type) || "supervised"),
      row("Suffix", job.suffix || "—"),
      row("Created", fmtTime(job.created_at)),
      row("Finished", fmtTime(job.finished_at)),
      row("Duration", fmtDuration(jobSeconds(job))),
      row("Trained tokens", fmtNum(job.trained_tokens)),
      row("Training file", h("a", { href: `#/files/${encodeURIComponent(job.training_file)}` }, job.training_file)),
      row("Validation file", job.validation_file
        ? h("a", { href: `#/files/${encodeURIComponent(job.validation_file)}` }, job.validation_file) : "—"),
      row("Seed", String(job.seed)),
      row("Results", results ? h("button", { type: "button", id: "download-results", onclick: async (e) => {
        e.target.disabled = true;
        try { await downloadFile(results); } catch (err) { toast(err.message, "error"); } finally { e.target.disabled = false; }
      } }, "Download results") : "—"));
  }

  function showHyperparameters() {
    const type = job.method?.type || "supervised";
    const hp = { ...(job.method?.[type]?.hyperparameters || {}), ...job.hyperparameters };
    const auto = Object.values(hp).some((v) => v === "auto");
    mount(hyper, Object.entries(hp).map(([k, v]) => [h("dt", {}, k), h("dd", { dataset: { key: k } },
      v === "auto" ? h("span", { class: "muted" }, "auto") : h("code", {}, typeof v === "object" ? JSON.stringify(v) : String(v)))]),
      auto ? [h("dt", {}, ""), h("dd", { class: "hint" }, "“auto” values are resolved when training starts.")] : null);
  }

  function showCheckpoints() {
    const rows = ckpts.data.slice().sort((a, b) => a.step_number - b.step_number);
    if (!rows.length) {
      mount(ckptSlot, empty(isTerminal(job) ? "No checkpoints." : "Checkpoints appear as training saves them."));
      return;
    }
    const t = table([
      { label: "Step", class: "num", value: (c) => fmtNum(c.step_number) },
      { label: "Checkpoint model", value: (c) => modelName(c.fine_tuned_model_checkpoint) },
      { label: "Train loss", class: "num m-train-loss", value: (c) => num4(c.metrics.train_loss) },
      { label: "Valid loss", class: "num", value: (c) => num4(c.metrics.full_valid_loss ?? c.metrics.valid_loss) },
      { label: "Train acc.", class: "num", value: (c) => num4(c.metrics.train_mean_token_accuracy) },
      { label: "Valid acc.", class: "num", value: (c) => num4(c.metrics.full_valid_mean_token_accuracy ?? c.metrics.valid_mean_token_accuracy) },
      { label: "Created", value: (c) => fmtTime(c.created_at) },
      { label: "Playground", value: (c) => h("a", { class: "try-playground", href: playgroundHref(c.fine_tuned_model_checkpoint) }, "Try in playground") },
    ], rows, { rowKey: (c) => c.fine_tuned_model_checkpoint });
    t.id = "job-checkpoints";
    mount(ckptSlot, t);
  }

  function showEvents() {
    if (!eventList.length) { mount(eventsEl, h("li", { class: "muted" }, "No events yet.")); return; }
    mount(eventsEl, eventList.map((e) => h("li", { class: `event ${e.level}`, dataset: { id: e.id, type: e.type } },
      h("time", { datetime: new Date(e.created_at * 1000).toISOString() }, fmtTime(e.created_at)),
      e.level !== "info" ? h("span", { class: `level ${e.level}` }, e.level) : null,
      h("span", { class: "msg" }, e.message))));
  }

  function update() {
    showStatus(); showActions(); showError(); showProgress(); showFacts(); showHyperparameters();
  }

  // ---- polling -------------------------------------------------------------------------------
  async function newEvents() {
    const fresh = [];
    let after;
    for (let pages = 0; pages < 10; pages++) {
      const page = await api(`${path}/events${qs({ limit: 100, after })}`);
      const unseen = page.data.filter((e) => !seen.has(e.id));
      fresh.push(...unseen);
      if (unseen.length < page.data.length || !page.has_more) break;
      after = page.last_id;
    }
    return fresh;
  }

  async function tick() {
    let j, m, fresh;
    try {
      [j, m, fresh] = await Promise.all([api(path), api(`${path}/metrics${qs({ after: cursor })}`), newEvents()]);
    } catch (err) {
      live.textContent = `Live updates interrupted (${err.message}); retrying…`;
      live.classList.add("bad");
      return;
    }
    live.classList.remove("bad");
    live.textContent = "Updating live.";
    const statusChanged = j.status !== job.status;
    job = j;
    if (m.steps.length) {
      appendColumns(cols, chartColumns(m));
      if (m.total_steps) totalSteps = m.total_steps;
      redraw();
    }
    cursor = m.cursor;
    if (fresh.length) {
      for (const e of fresh) seen.add(e.id);
      eventList = fresh.concat(eventList).slice(0, MAX_EVENTS);
      showEvents();
    }
    // The status, progress and facts are drawn with the charts they go with, before the
    // checkpoint list is fetched (a page showing new points with the old step count would lie).
    update();
    // A finished job gets one more round: the last points may have been written while the
    // requests above were in flight.
    if (isTerminal(job)) terminalTicks++;
    if (statusChanged || terminalTicks === 2 || fresh.some((e) => e.message.startsWith("Checkpoint created"))) {
      ckpts = await api(`${path}/checkpoints?limit=100`);
      showCheckpoints();
    }
    if (terminalTicks >= 2 && stopPoll) { stopPoll(); stopPoll = null; live.textContent = ""; }
  }

  let stopPoll = null, terminalTicks = 0;
  function startPolling() { stopPoll = every(POLL_MS, tick); }

  update();
  redraw();
  showCheckpoints();
  showEvents();
  if (!isTerminal(job)) { startPolling(); live.textContent = "Updating live."; }
  return () => { if (stopPoll) stopPoll(); clearTimeout(smoothTimer); charts.forEach((c) => c.destroy()); };
}
