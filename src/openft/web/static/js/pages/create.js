// Create a fine-tuning job (#/jobs/new): training data (JSONL uploaded as it is; CSV/TSV/XLSX/
// Parquet converted after a column-mapping step), the validation report before anything is
// created, an optional validation file or "split off N%", base model, method, hyperparameters
// ("auto" shows what it resolves to), suffix and seed; then POST /v1/fine_tuning/jobs and go to
// the job's page. ?training_file=ID (from the files page) and ?model=ID preselect.

import { api, ApiError, listAll } from "../api.js";
import { fetchReport, modelLabel, renderReport } from "../create-report.js";
import { errorBox, fmtBytes, fmtNum, h, loading, mount } from "../ui.js";

const TABLE_EXT = /\.(csv|tsv|tab|xlsx|xlsm|parquet|pq)$/i;
const HP = [  // [key, label, parse]
  ["n_epochs", "Epochs", (v) => (/^\d+$/.test(v) ? Number(v) : v)],
  ["batch_size", "Batch size", (v) => (/^\d+$/.test(v) ? Number(v) : v)],
  ["learning_rate_multiplier", "Learning rate multiplier", (v) => (v !== "" && !Number.isNaN(Number(v)) ? Number(v) : v)],
  ["beta", "DPO beta", (v) => (v !== "" && !Number.isNaN(Number(v)) ? Number(v) : v)],
];
const METHODS = [  // [value, label, needs preference data]
  ["lora", "Supervised · LoRA", false], ["qlora", "Supervised · QLoRA", false],
  ["full", "Supervised · full fine-tune", false], ["dpo", "DPO (preference pairs) · LoRA", true],
];

// Upload a JSONL file as it is (purpose fine-tune).
function uploadJsonl(file) {
  const form = new FormData();
  form.append("purpose", "fine-tune");
  form.append("file", file, file.name);
  return api("/files", { method: "POST", form });
}

function tableForm(file, fields = {}) {
  const form = new FormData();
  for (const [k, v] of Object.entries(fields)) if (v !== undefined && v !== null && v !== "") form.append(k, v);
  form.append("file", file, file.name);
  return form;
}

// A drop zone with a real, keyboard-reachable file button. onFile(File).
function dropzone(id, text, accept, onFile) {
  const input = h("input", { type: "file", id: `${id}-input`, accept, class: "visually-hidden", tabindex: "-1",
                             onchange: () => { if (input.files[0]) onFile(input.files[0]); input.value = ""; } });
  const zone = h("div", { class: "dropzone", id },
    h("p", {}, text), h("button", { type: "button", class: "primary", id: `${id}-pick`, onclick: () => input.click() }, "Choose a file"),
    input);
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    const f = e.dataTransfer?.files?.[0];
    if (f) onFile(f);
  });
  return zone;
}

export async function render(root, _params, ctx) {
  ctx.setTitle("New fine-tuning job");
  const st = { train: null, report: null, valid: null, validReport: null, format: null, models: [], seq: 0, abort: null };
  const $ = (sel) => root.querySelector(sel);

  // ---- sections
  const uploadStatus = h("div", { id: "create-upload-status", "aria-live": "polite" });
  const mapping = h("section", { class: "card", id: "create-mapping", hidden: true, "aria-label": "Column mapping" });
  const reportBox = h("div", { id: "create-report", "aria-live": "polite" });
  const validBox = h("div", { id: "create-valid-status", "aria-live": "polite" });
  const formError = h("div", { id: "create-error", "aria-live": "assertive" });
  const modelSelect = h("select", { id: "create-model", name: "model", onchange: () => { remember(); showModelFacts(); refresh(); } });
  const modelFacts = h("p", { class: "hint", id: "create-model-facts" });
  const methodInputs = METHODS.map(([v, label, pref]) => h("label", { class: "inline" },
    h("input", { type: "radio", name: "method", value: v, id: `method-${v}`, checked: v === "lora", disabled: pref,
                 onchange: () => { showHp(); refresh(); } }), label));
  const hpInputs = Object.fromEntries(HP.map(([k]) => [k, h("input", { id: `hp-${k}`, name: k, inputmode: "decimal", placeholder: "auto",
                                                                       autocomplete: "off", oninput: () => refresh(400) })]));
  const hpHints = Object.fromEntries(HP.map(([k]) => [k, h("p", { class: "hint", id: `hp-${k}-auto` })]));
  const suffix = h("input", { id: "create-suffix", name: "suffix", maxlength: 64, placeholder: "e.g. reviews-v1", autocomplete: "off" });
  const seed = h("input", { id: "create-seed", name: "seed", inputmode: "numeric", placeholder: "random", autocomplete: "off" });
  const submit = h("button", { type: "submit", class: "primary", id: "create-submit", hidden: true }, "Create job");
  const existing = h("select", { id: "create-existing", onchange: () => existing.value && useStored(existing.value) },
    h("option", { value: "" }, "— choose —"));

  const form = h("form", { class: "create", id: "create-form", novalidate: true, onsubmit: (e) => { e.preventDefault(); create(); } },
    h("div", { class: "spread" }, h("h1", {}, "New fine-tuning job"), h("a", { href: "#/jobs" }, "Back to jobs")),
    h("section", { class: "card", id: "create-upload", "aria-label": "Training data" },
      h("h2", {}, "1 · Training data"),
      dropzone("create-drop", "Drop a training file here: JSONL (chat, prompt/completion or preference pairs), or a CSV, TSV, XLSX or Parquet table to convert.",
               ".jsonl,.csv,.tsv,.tab,.xlsx,.xlsm,.parquet,.pq", onTrainingFile),
      h("div", { class: "row" }, h("label", { for: "create-existing", class: "inline" }, "or use an uploaded file"), existing),
      uploadStatus),
    mapping,
    reportBox,
    h("section", { class: "card", id: "create-validation", "aria-label": "Validation data" },
      h("h2", {}, "2 · Validation data (optional)"),
      h("div", { class: "row" },
        h("label", { class: "inline", for: "create-split-pct" }, "Split off"),
        h("input", { id: "create-split-pct", type: "number", min: 1, max: 50, value: 20, class: "narrow" }), "%",
        h("button", { type: "button", id: "create-split", onclick: split }, "Split the training file"),
        h("span", { class: "muted" }, "or")),
      dropzone("create-valid-drop", "Drop a validation JSONL file here.", ".jsonl", onValidationFile),
      validBox),
    h("section", { class: "card", id: "create-settings", "aria-label": "Model and settings" },
      h("h2", {}, "3 · Model and settings"),
      h("label", { for: "create-model" }, "Base model"), modelSelect, modelFacts,
      h("fieldset", {}, h("legend", {}, "Method"), h("div", { class: "row" }, methodInputs),
        h("p", { class: "hint", id: "method-hint" }, "DPO needs a preference file ({input, preferred_output, non_preferred_output}).")),
      h("fieldset", {}, h("legend", {}, "Hyperparameters (empty = auto)"),
        h("div", { class: "hp-grid" }, HP.map(([k, label]) => h("div", { class: "hp", dataset: { hp: k } },
          h("label", { for: `hp-${k}` }, label), hpInputs[k], hpHints[k])))),
      h("div", { class: "hp-grid" },
        h("div", {}, h("label", { for: "create-suffix" }, "Suffix"), suffix, h("p", { class: "hint" }, "Part of the model's name: ft:BASE:ORG:SUFFIX:ID")),
        h("div", {}, h("label", { for: "create-seed" }, "Seed"), seed)),
      formError,
      h("div", { class: "row" }, submit, h("span", { class: "muted", id: "create-submit-hint" }, "Upload a valid training file to create the job."))));
  mount(root, form);
  showHp();

  // ---- models and stored files
  try {
    const [models, stored] = await Promise.all([api("/models"), listAll("/files", { purpose: "fine-tune" }, 500)]);
    st.models = models.data;
    const base = st.models.filter((m) => m.owned_by === "system");
    const tuned = st.models.filter((m) => m.owned_by !== "system");
    mount(modelSelect,
      h("optgroup", { label: "Base models" }, base.map((m) => h("option", { value: m.id }, modelLabel(m)))),
      tuned.length ? h("optgroup", { label: "Continue a fine-tuned model (LoRA)" }, tuned.map((m) => h("option", { value: m.id }, m.id))) : null);
    const want = [ctx.query.get("model"), sessionStorage.getItem("openft.lastModel")].find((id) => id && st.models.some((m) => m.id === id));
    if (want) modelSelect.value = want;
    remember();
    showModelFacts();
    existing.append(...stored.map((f) => h("option", { value: f.id }, `${f.filename} · ${fmtBytes(f.bytes)} · ${f.id}`)));
    const pre = ctx.query.get("training_file");
    if (pre) { existing.value = pre; useStored(pre); }
  } catch (err) {
    mount(formError, errorBox(err));
  }

  function remember() { if (modelSelect.value) sessionStorage.setItem("openft.lastModel", modelSelect.value); }

  function showModelFacts(measured) {  // measured: the context length the report read from the model's config
    const m = st.models.find((x) => x.id === modelSelect.value);
    const context = m?.context_length || measured;
    mount(modelFacts, m ? (m.owned_by === "system"
      ? `Context length: ${context ? fmtNum(context) + " tokens" : "—"} · Size: ${m.parameters ? fmtNum(m.parameters) + " parameters" : "—"}${m.size_bytes ? ` (${fmtBytes(m.size_bytes)})` : ""}`
      : `Continues ${m.id} (LoRA only).`) : "");
  }

  function methodValue() { return root.querySelector("input[name=method]:checked")?.value || "lora"; }

  function showHp() {
    const dpo = methodValue() === "dpo";
    root.querySelector("[data-hp=beta]").hidden = !dpo;
  }

  // The job's `method` object from the form (empty inputs stay "auto", i.e. absent).
  function methodObject() {
    const m = methodValue();
    const hp = {};
    for (const [k, , parse] of HP) {
      const v = hpInputs[k].value.trim();
      if (v === "" || (k === "beta" && m !== "dpo")) continue;
      hp[k] = parse(v);
    }
    if (m === "dpo") return { type: "dpo", dpo: { hyperparameters: hp } };
    if (m !== "lora") hp.method = m;
    return { type: "supervised", supervised: { hyperparameters: hp } };
  }

  // ---- training data
  async function onTrainingFile(file) {
    mount(mapping); mapping.hidden = true;
    if (TABLE_EXT.test(file.name)) return inspect(file);
    mount(uploadStatus, loading(`Uploading ${file.name}…`));
    try {
      const f = await uploadJsonl(file);
      setTraining(f, `Uploaded ${f.filename} (${fmtBytes(f.bytes)}) as ${f.id}.`);
    } catch (err) { mount(uploadStatus, errorBox(err)); }
  }

  async function inspect(file) {
    mount(uploadStatus, loading(`Reading the columns of ${file.name}…`));
    let t;
    try {
      t = await api("/openft/data/inspect", { method: "POST", form: tableForm(file) });
    } catch (err) { mount(uploadStatus, errorBox(err)); return; }
    mount(uploadStatus, h("p", {}, `${file.name}: ${t.format.toUpperCase()} table, ${fmtNum(t.n_rows)} rows, ${t.columns.length} columns. Map its columns, then convert.`));
    const guess = t.guessed_mapping || {};
    const selects = t.columns.map((c, i) => h("select", { id: `map-${i}`, dataset: { column: c } },
      h("option", { value: "" }, "ignore"), t.roles.map((r) => h("option", { value: r, selected: guess[c] === r }, r))));
    const system = h("input", { id: "create-system", placeholder: "optional: added to every example", class: "wide" });
    const status = h("div", { id: "create-convert-status", "aria-live": "polite" });
    mapping.hidden = false;
    mount(mapping, h("h2", {}, "Map the columns"),
      h("p", { class: "hint" }, t.guessed_mapping ? "Pre-filled from the column names; adjust as needed." : t.guess_error),
      t.error ? errorBox({ message: `Line ${t.error.line}: ${t.error.message}`, code: t.error.code }) : null,
      h("div", { class: "hp-grid", id: "create-map" }, t.columns.map((c, i) => h("div", { class: "map-col" },
        h("label", { for: `map-${i}` }, c), selects[i]))),
      h("h3", {}, `First ${t.rows.length} rows`),
      h("div", { class: "scroll-x" }, h("table", { class: "grid sample", id: "create-sample" },
        h("thead", {}, h("tr", {}, t.columns.map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, t.rows.map((r) => h("tr", {}, t.columns.map((c) => h("td", { "data-label": c }, r[c]))))))),
      h("label", { for: "create-system" }, "System prompt"), system,
      h("div", { class: "row" }, h("button", { type: "button", class: "primary", id: "create-convert", onclick: convert }, "Convert to JSONL"), status));
    async function convert() {
      const map = {};
      selects.forEach((s) => { if (s.value) map[s.dataset.column] = s.value; });
      mount(status, loading("Converting…"));
      try {
        const r = await api("/openft/data/convert", { method: "POST", form: tableForm(file, { mapping: JSON.stringify(map), system: system.value.trim(), sheet: t.sheets?.[0] }) });
        mount(status, h("span", { class: "muted" }, `${fmtNum(r.n_written)} examples written`));
        setTraining(r.file, `Converted ${file.name} to ${r.file.filename}: ${fmtNum(r.n_written)} examples (${r.file.id}).`);
      } catch (err) { mount(status, errorBox(err)); }
    }
  }

  function useStored(fid) {
    api(`/files/${encodeURIComponent(fid)}`).then((f) => setTraining(f, `Using ${f.filename} (${f.id}).`),
                                                 (err) => mount(uploadStatus, errorBox(err)));
  }

  function setTraining(f, message) {
    st.train = f;
    if (![...existing.options].some((o) => o.value === f.id)) {  // new files join the "uploaded file" list
      existing.append(h("option", { value: f.id }, `${f.filename} · ${fmtBytes(f.bytes)} · ${f.id}`));
    }
    mount(uploadStatus, h("p", { class: "ok-line", id: "create-training-file", dataset: { file: f.id } }, message));
    refresh();
  }

  // ---- the report, fetched again when the file, model, method or hyperparameters change
  let timer;
  function refresh(delay = 0, measurePace = false) {
    clearTimeout(timer);
    timer = setTimeout(() => loadReport(measurePace), delay);
  }

  async function loadReport(measurePace) {
    updateSubmit();
    if (!st.train) return;
    const seq = ++st.seq;
    st.abort?.abort();
    st.abort = new AbortController();
    const opts = { model: modelSelect.value, method: methodObject(), signal: st.abort.signal };
    mount(reportBox, loading(measurePace ? "Measuring this machine's pace with a short training run…" : "Validating…"));
    st.report = null;
    updateSubmit();
    try {
      const rep = await fetchReport(st.train.id, { ...opts, measurePace });
      const vrep = st.valid ? await fetchReport(st.valid.id, { ...opts, role: "validation" }) : null;
      if (seq !== st.seq) return;
      st.report = rep;
      st.validReport = vrep;
      st.format = rep.format;
      allowDpo(rep.format === "preference");
      mount(reportBox, renderReport(rep, { onMeasure: () => refresh(0, true) }));
      showAuto(rep);
      [...Object.values(hpInputs), modelSelect].forEach((el) => el.removeAttribute("aria-invalid"));  // the report took them
      if (rep.context_length) showModelFacts(rep.context_length);
      showValid();
    } catch (err) {
      if (err.name === "AbortError" || seq !== st.seq) return;
      mount(reportBox, errorBox(err));
      markField(err);
    }
    updateSubmit();
  }

  function allowDpo(pref) {
    const dpo = $("#method-dpo");
    if (dpo.disabled === !pref) return;
    dpo.disabled = !pref;
    if (pref && methodValue() === "lora") { dpo.checked = true; showHp(); refresh(); }
    if (!pref && dpo.checked) { $("#method-lora").checked = true; showHp(); refresh(); }
  }

  function showAuto(rep) {
    for (const [k] of HP) {
      const v = rep.hyperparameters?.[k];
      mount(hpHints[k], v === undefined ? "" : (rep.auto || []).includes(k) ? `auto → ${v}` : `set: ${v}`);
    }
  }

  function updateSubmit() {
    const ok = !!(st.report?.ok && (!st.valid || st.validReport?.ok));
    submit.hidden = !ok;
    $("#create-submit-hint").textContent = ok ? "" : st.report && !st.report.ok
      ? "Fix the errors in the training file first." : st.validReport && !st.validReport.ok
      ? "Fix the errors in the validation file first." : "Upload a valid training file to create the job.";
  }

  // ---- validation data
  async function split() {
    if (!st.train) { mount(validBox, errorBox({ message: "Choose a training file first." })); return; }
    const pct = Number($("#create-split-pct").value);
    mount(validBox, loading(`Splitting off ${pct}%…`));
    try {
      const r = await api(`/openft/data/files/${encodeURIComponent(st.train.id)}/split`, { method: "POST", json: { valid: pct / 100 } });
      st.valid = r.validation_file;
      setTraining(r.training_file, `Training part: ${r.training_file.filename}, ${fmtNum(r.n_train)} examples (${r.training_file.id}); `
        + `${fmtNum(r.n_valid)} for validation${r.n_duplicates ? `, ${fmtNum(r.n_duplicates)} duplicates removed` : ""}.`);
      mount(validBox, h("p", { id: "create-split-result", dataset: { train: r.n_train, valid: r.n_valid } },
        `Split ${r.n_read} examples: ${r.n_train} training, ${r.n_valid} validation${r.stratified_by ? " (stratified by label)" : ""}.`));
    } catch (err) { mount(validBox, errorBox(err)); }
  }

  async function onValidationFile(file) {
    mount(validBox, loading(`Uploading ${file.name}…`));
    try {
      st.valid = await uploadJsonl(file);
      refresh();
    } catch (err) { mount(validBox, errorBox(err)); }
  }

  function showValid() {
    if (!st.valid || !st.validReport) return;
    const r = st.validReport;
    const old = $("#create-valid-file");
    const el = h("div", { id: "create-valid-file", dataset: { file: st.valid.id, ok: String(r.ok) } },
      h("p", {}, `Validation file: ${st.valid.filename} (${st.valid.id}), ${fmtNum(r.n_examples)} examples `,
        h("span", { class: `badge ${r.ok ? "ok" : "bad"}` }, r.ok ? "valid" : `${r.errors.length} errors`),
        " ", h("button", { type: "button", class: "link", onclick: () => { st.valid = null; st.validReport = null; el.remove(); updateSubmit(); } }, "Remove")),
      r.ok ? null : renderReport(r));
    if (old) old.replaceWith(el); else validBox.append(el);
  }

  // ---- create
  const FIELDS = { model: "#create-model", suffix: "#create-suffix", seed: "#create-seed", training_file: "#create-drop-pick",
                   validation_file: "#create-valid-drop-pick" };

  function markField(err) {
    root.querySelectorAll("[aria-invalid]").forEach((e) => e.removeAttribute("aria-invalid"));
    const p = err instanceof ApiError ? err.param || "" : "";
    const hp = HP.find(([k]) => p.endsWith(`.${k}`) || p === k);
    const el = hp ? hpInputs[hp[0]] : FIELDS[p] ? $(FIELDS[p]) : null;
    if (el) { el.setAttribute("aria-invalid", "true"); el.focus(); }
  }

  async function create() {
    mount(formError);
    const body = { model: modelSelect.value, training_file: st.train?.id, method: methodObject() };
    if (st.valid) body.validation_file = st.valid.id;
    if (suffix.value.trim()) body.suffix = suffix.value.trim();
    const sd = seed.value.trim();
    if (sd) body.seed = /^\d+$/.test(sd) ? Number(sd) : sd;
    submit.disabled = true;
    try {
      const job = await api("/fine_tuning/jobs", { method: "POST", json: body });
      ctx.navigate(`/jobs/${job.id}`);
    } catch (err) {
      mount(formError, errorBox(err));
      markField(err);
    } finally { submit.disabled = false; }
  }

  return () => { clearTimeout(timer); st.abort?.abort(); };
}
