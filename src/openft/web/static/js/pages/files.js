// Files (#/files): every file of the project, newest first; one file (#/files/:id): its facts,
// download, delete (with a confirmation step) and, for fine-tuning files, the validation report
// against a chosen base model (the data endpoint the create-job page uses).

import { api, apiRaw, listAll } from "../api.js";
import { fetchReport, modelLabel, renderReport } from "../create-report.js";
import { copyButton, empty, errorBox, fmtBytes, fmtTime, h, loading, mount, table, toast } from "../ui.js";

export async function render(root, params, ctx) {
  return params.id ? renderFile(root, params.id, ctx) : renderList(root, ctx);
}

async function renderList(root, ctx) {
  ctx.setTitle("Files");
  const body = h("div", { id: "files-list" }, loading("Loading files…"));
  mount(root, h("div", { class: "spread" }, h("h1", {}, "Files"),
    h("a", { class: "button primary", href: "#/jobs/new", id: "files-new-job" }, "Upload for a new job")), body);
  let files;
  try {
    files = await listAll("/files");
  } catch (err) {
    mount(body, errorBox(err, () => renderList(root, ctx)));
    return;
  }
  if (!files.length) {
    mount(body, empty("No files yet. Upload a training file when you create a fine-tuning job.",
      h("a", { href: "#/jobs/new" }, "Create a fine-tuning job")));
    return;
  }
  mount(body, table([
    { label: "Name", value: (f) => h("a", { href: `#/files/${encodeURIComponent(f.id)}`, class: "file-name" }, f.filename) },
    { label: "Purpose", value: (f) => h("code", { class: "purpose" }, f.purpose) },
    { label: "Size", class: "num", value: (f) => fmtBytes(f.bytes) },
    { label: "Created", value: (f) => fmtTime(f.created_at) },
    { label: "ID", value: (f) => h("span", { class: "nowrap" }, h("code", {}, f.id), copyButton(f.id)) },
  ], files, { rowKey: (f) => f.id, onRow: (f) => ctx.navigate(`/files/${encodeURIComponent(f.id)}`) }));
  body.querySelector("table").id = "files-table";
}

async function renderFile(root, fid, ctx) {
  ctx.setTitle("File");
  mount(root, loading("Loading the file…"));
  let f;
  try {
    f = await api(`/files/${encodeURIComponent(fid)}`);
  } catch (err) {
    mount(root, h("p", {}, h("a", { href: "#/files" }, "← Files")), errorBox(err, () => renderFile(root, fid, ctx)));
    return;
  }
  ctx.setTitle(f.filename);
  const status = h("div", { id: "file-status", "aria-live": "polite" });
  const confirmBox = h("div", { id: "file-delete-confirm", class: "confirm", hidden: true },
    h("p", {}, `Delete ${f.filename}? Jobs that used it keep their results; the file itself cannot be recovered.`),
    h("div", { class: "row" },
      h("button", { type: "button", class: "danger", id: "file-delete-yes", onclick: remove }, "Delete the file"),
      h("button", { type: "button", id: "file-delete-no", onclick: () => { confirmBox.hidden = true; delBtn.focus(); } }, "Cancel")));
  const delBtn = h("button", { type: "button", class: "danger", id: "file-delete",
                               onclick: () => { confirmBox.hidden = false; confirmBox.querySelector("#file-delete-no").focus(); } }, "Delete…");
  const reportArea = h("section", { id: "file-report", "aria-label": "Validation report" });
  mount(root,
    h("p", {}, h("a", { href: "#/files" }, "← Files")),
    h("div", { class: "spread" }, h("h1", { id: "file-title" }, f.filename),
      h("div", { class: "row" },
        h("button", { type: "button", id: "file-download", onclick: download }, "Download"),
        f.purpose === "fine-tune" ? h("a", { class: "button", id: "file-use", href: `#/jobs/new?training_file=${encodeURIComponent(f.id)}` }, "Use for a new job") : null,
        delBtn)),
    confirmBox, status,
    h("div", { class: "card" }, h("dl", { class: "facts", id: "file-facts" },
      h("dt", {}, "ID"), h("dd", {}, h("code", {}, f.id), copyButton(f.id)),
      h("dt", {}, "Purpose"), h("dd", {}, f.purpose),
      h("dt", {}, "Size"), h("dd", { dataset: { bytes: f.bytes } }, `${fmtBytes(f.bytes)} (${f.bytes.toLocaleString()} bytes)`),
      h("dt", {}, "Created"), h("dd", {}, fmtTime(f.created_at)),
      h("dt", {}, "Status"), h("dd", {}, f.status || "—"),
      f.expires_at ? [h("dt", {}, "Expires"), h("dd", {}, fmtTime(f.expires_at))] : null)),
    reportArea);

  async function download() {
    mount(status, loading("Downloading…"));
    try {
      const res = await apiRaw(`/files/${encodeURIComponent(f.id)}/content`);
      const url = URL.createObjectURL(await res.blob());
      const a = h("a", { href: url, download: f.filename, hidden: true });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10_000);
      mount(status);
    } catch (err) { mount(status, errorBox(err)); }
  }

  async function remove() {
    mount(status, loading("Deleting…"));
    try {
      await api(`/files/${encodeURIComponent(f.id)}`, { method: "DELETE" });
      toast(`Deleted ${f.filename}`);
      ctx.navigate("/files");
    } catch (err) { mount(status, errorBox(err)); }
  }

  if (f.purpose !== "fine-tune") {
    mount(reportArea, h("p", { class: "muted" }, `Validation reports are for fine-tuning files; this one's purpose is ${f.purpose}.`));
    return;
  }
  let models = [];
  try { models = (await api("/models")).data.filter((m) => m.owned_by === "system"); } catch { /* the report still runs */ }
  const pick = h("select", { id: "file-report-model", onchange: load },
    h("option", { value: "" }, "no model (format checks only)"), models.map((m) => h("option", { value: m.id }, modelLabel(m))));
  const role = h("select", { id: "file-report-role", onchange: load },
    h("option", { value: "training" }, "as a training file"), h("option", { value: "validation" }, "as a validation file"));
  const want = ctx.query.get("model");
  const last = sessionStorage.getItem("openft.lastModel");  // the create page remembers the model chosen there
  pick.value = [want, last].find((id) => id && models.some((m) => m.id === id)) || models[0]?.id || "";
  const out = h("div", { id: "file-report-body", "aria-live": "polite" });
  mount(reportArea, h("h2", {}, "Validation report"),
    h("div", { class: "row" }, h("label", { for: "file-report-model", class: "inline" }, "Tokens counted with"), pick,
      h("label", { for: "file-report-role", class: "inline" }, "checked"), role), out);
  let seq = 0;
  async function load() {
    const mine = ++seq;
    const use = root.querySelector("#file-use");  // carries the model chosen here to the create page
    if (use) use.href = `#/jobs/new?training_file=${encodeURIComponent(f.id)}${pick.value ? `&model=${encodeURIComponent(pick.value)}` : ""}`;
    mount(out, loading("Validating…"));
    try {
      const rep = await fetchReport(f.id, { model: pick.value, role: role.value });
      if (mine === seq) mount(out, renderReport(rep));
    } catch (err) { if (mine === seq) mount(out, errorBox(err, load)); }
  }
  load();
}
