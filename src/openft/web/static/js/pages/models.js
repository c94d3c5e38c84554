// Models (#/models): base and fine-tuned models with owner, created time and, for base models,
// context length, parameter count, size and whether the model is loaded for serving, loading (its
// stage and seconds so far) or failed (openft's extension fields on GET /v1/models);
// delete a fine-tuned model (after an inline confirmation); export any model as a merged folder,
// GGUF or its LoRA adapter (POST /v1/models/{id}/exports) and follow the exports' progress
// (GET /v1/exports, polled while one runs) to a download (GET /v1/exports/{id}/content).

import { api, apiRaw, qs } from "../api.js";
import { badge, copyButton, empty, errorBox, every, fmtBytes, fmtNum, fmtTime, h, loading, mount, table, toast } from "../ui.js";

export async function render(root, _params, ctx) {
  ctx.setTitle("Models");
  const list = h("div", { id: "md-list" }, loading("Loading models…"));
  const exportsBox = h("div", { id: "md-exports", class: "md-exports" }, loading("Loading exports…"));
  const form = h("div", { id: "md-export-panel" });
  mount(root, h("h1", {}, "Models"), list, form, h("h2", {}, "Exports"), exportsBox);

  let models = [];
  let poll = null;

  async function loadModels() {
    try {
      models = (await api("/models")).data;
    } catch (err) {
      mount(list, errorBox(err, loadModels));
      return;
    }
    if (!models.length) { mount(list, empty("No models yet.")); return; }
    mount(list, table([
      { label: "Model", value: (m) => h("span", { class: "mono md-id" }, m.id, copyButton(m.id)) },
      { label: "Type", value: (m) => (m.id.startsWith("ft:")
        ? h("span", {}, "fine-tuned", h("div", { class: "hint" }, `from ${m.id.split(":")[1]}`)) : "base") },
      { label: "Serving", class: "md-serving", value: (m) => servingCell(m.serving) },
      { label: "Owned by", value: (m) => m.owned_by },
      { label: "Created", class: "md-created", value: (m) => fmtTime(m.created) },
      { label: "Context", class: "num md-context", value: (m) => (m.context_length ? fmtNum(m.context_length) : "—") },
      { label: "Parameters", class: "num md-params", value: (m) => fmtParams(m.parameters) },
      { label: "Size", class: "num md-size", value: (m) => (m.size_bytes ? fmtBytes(m.size_bytes) : "—") },
      { label: "Actions", value: (m) => actions(m) },
    ], models, { rowKey: (m) => m.id }));
  }

  function actions(m) {
    const box = h("div", { class: "row md-actions" },
      h("a", { class: "button md-try", href: `#/playground${qs({ models: m.id })}` }, "Try"),
      h("button", { type: "button", class: "md-export", onclick: () => showExport(m) }, "Export…"));
    if (m.id.startsWith("ft:")) box.append(deleteButton(m));
    return box;
  }

  function deleteButton(m) {
    const holder = h("span", { class: "md-confirm" });
    const ask = h("button", { type: "button", class: "danger md-delete", onclick: () => {
      const yes = h("button", { type: "button", class: "danger md-delete-yes", onclick: async () => {
        yes.disabled = true;
        try {
          await api(`/models/${encodeURIComponent(m.id)}`, { method: "DELETE" });
          toast(`Deleted ${m.id}`);
          await loadModels();
        } catch (err) {
          mount(holder, errorBox(err));
        }
      } }, "Delete for good");
      const no = h("button", { type: "button", class: "md-delete-no", onclick: () => mount(holder, ask) }, "Cancel");
      mount(holder, h("span", { class: "muted" }, "Delete this model?"), yes, no);
      no.focus();
    } }, "Delete");
    holder.append(ask);
    return holder;
  }

  function showExport(m) {
    const fmt = h("select", { id: "md-format" },
      h("option", { value: "gguf" }, "GGUF (llama.cpp, Ollama)"),
      h("option", { value: "merged" }, "Merged Hugging Face folder"),
      m.id.startsWith("ft:") && h("option", { value: "peft" }, "LoRA adapter (PEFT)"));
    const quant = h("select", { id: "md-quant" }, h("option", { value: "q8_0" }, "q8_0"), h("option", { value: "f16" }, "f16"));
    const quantField = h("div", {}, h("label", { for: "md-quant" }, "Quantization"), quant);
    fmt.addEventListener("change", () => { quantField.hidden = fmt.value !== "gguf"; });
    const status = h("div", { "aria-live": "polite" });
    const start = h("button", { type: "submit", class: "primary", id: "md-export-start" }, "Start export");
    mount(form, h("form", { class: "card md-export-form", onsubmit: async (e) => {
      e.preventDefault();
      start.disabled = true;
      try {
        const body = { format: fmt.value, ...(fmt.value === "gguf" ? { quantization: quant.value } : {}) };
        await api(`/models/${encodeURIComponent(m.id)}/exports`, { method: "POST", json: body });
        form.replaceChildren();
        await loadExports();
      } catch (err) {
        mount(status, errorBox(err));
        start.disabled = false;
      }
    } },
      h("div", {}, h("h3", {}, "Export ", h("span", { class: "mono" }, m.id))),
      h("div", {}, h("label", { for: "md-format" }, "Format"), fmt), quantField,
      h("div", { class: "row" }, start, h("button", { type: "button", onclick: () => form.replaceChildren() }, "Cancel")),
      status));
    fmt.focus();
  }

  async function loadExports() {
    let data;
    try {
      data = (await api("/exports")).data;
    } catch (err) {
      mount(exportsBox, errorBox(err, loadExports));
      return;
    }
    if (!data.length) mount(exportsBox, empty("No exports yet. Use “Export…” on a model."));
    else mount(exportsBox, table([
      { label: "Model", value: (e) => h("span", { class: "mono" }, e.model) },
      { label: "Format", value: (e) => e.format + (e.quantization ? ` (${e.quantization})` : "") },
      { label: "Status", value: (e) => badge(e.status) },
      { label: "Progress", value: (e) => progressCell(e) },
      { label: "Created", value: (e) => fmtTime(e.created_at) },
      { label: "Size", class: "num", value: (e) => (e.bytes ? fmtBytes(e.bytes) : "—") },
      { label: "", value: (e) => exportActions(e) },
    ], data, { rowKey: (e) => e.id }));
    const running = data.some((e) => e.status === "queued" || e.status === "running");
    if (running && !poll) poll = every(700, async () => {
      await loadExports();
    });
    if (!running && poll) { poll(); poll = null; }
  }

  function progressCell(e) {
    const pct = Math.round((e.progress || 0) * 100);
    return h("div", { class: "md-progress", dataset: { progress: String(pct) } },
      h("div", { class: "progress", role: "progressbar", "aria-valuenow": pct, "aria-valuemin": 0, "aria-valuemax": 100,
                 "aria-label": `Export ${e.id}` }, h("div", { style: { width: `${pct}%` } })),
      h("div", { class: "hint" }, `${pct}% · ${e.stage || e.status}`),
      e.error && h("div", { class: "ev-fail" }, e.error.message));
  }

  function exportActions(e) {
    const box = h("div", { class: "row" });
    if (e.status === "succeeded") {
      box.append(h("button", { type: "button", class: "md-download", onclick: () => download(e) }, "Download"));
    }
    if (e.status !== "queued" && e.status !== "running") {
      box.append(h("button", { type: "button", class: "link md-export-delete", onclick: async () => {
        try {
          await api(`/exports/${encodeURIComponent(e.id)}`, { method: "DELETE" });
          await loadExports();
        } catch (err) {
          toast(err.message, "error");
        }
      } }, "Delete"));
    }
    return box;
  }

  async function download(e) {
    try {
      const res = await apiRaw(`/exports/${encodeURIComponent(e.id)}/content`);
      const url = URL.createObjectURL(await res.blob());
      const a = h("a", { href: url, download: e.filename, hidden: true });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10_000);
    } catch (err) {
      toast(err.message, "error");
    }
  }

  await Promise.all([loadModels(), loadExports()]);
  return () => { if (poll) poll(); };
}

function fmtParams(n) {
  if (!n) return "—";
  if (n >= 1e9) return `${(n / 1e9).toFixed(1)}B`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)}K`;
  return String(n);
}


// A base model's `serving` (GET /v1/models): loaded, loading (stage and seconds so far), failed.
function servingCell(sv) {
  if (!sv) return "—";
  const label = { not_loaded: "not loaded", loading: "loading", ready: "loaded", failed: "failed" }[sv.state] || sv.state;
  const b = h("span", { class: `badge ${{ ready: "ok", loading: "wait", failed: "bad" }[sv.state] || "muted"}`,
                        dataset: { serving: sv.state } }, label);
  const why = sv.state === "loading" ? `${sv.stage} (stage ${sv.stage_number} of ${sv.stages}), ${Math.round(sv.elapsed_s)} s so far`
    : sv.state === "failed" ? sv.error : "";
  if (why) b.title = why;
  return why && sv.state === "loading" ? h("span", {}, b, " ", h("span", { class: "muted" }, why)) : b;
}
