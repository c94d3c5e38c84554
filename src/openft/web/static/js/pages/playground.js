// Playground (#/playground, ?models=a,b preselects panels): one to three models side by side, one
// shared system message, per-panel temperature / max tokens / stop sequences, answers streamed
// token by token from /v1/chat/completions. Sync mode sends one input to every panel (each panel
// keeps its own answers); with sync off each panel has its own input. Stop aborts the streams;
// "Code" shows the panel's exact next request as curl and Python (key as $OPENFT_API_KEY).

import { ApiError, stream } from "../api.js";
import { chatRequest, curlCode, parseStops, pythonCode } from "../play-code.js";
import { modelChoices, modelSelect } from "../play-models.js";
import { copyButton, errorBox, h, loading, mount } from "../ui.js";

const MAX_PANELS = 3;
let panelSeq = 0;

export async function render(root, _params, ctx) {
  ctx.setTitle("Playground");
  mount(root, loading("Loading models…"));
  const choices = await modelChoices();
  const all = [...choices.base, ...choices.fineTuned].map((m) => m.id);
  if (!all.length) { mount(root, errorBox({ message: "This key sees no models." })); return; }
  const wanted = (ctx.query.get("models") || "").split(",").map((s) => s.trim()).filter(Boolean).slice(0, MAX_PANELS);
  const baseUrl = `${location.origin}/v1`;

  const panels = [];
  const system = h("textarea", { id: "pg-system", rows: 2, placeholder: "You are a helpful assistant." });
  const sync = h("input", { id: "pg-sync", type: "checkbox", checked: true });
  const input = h("textarea", { id: "pg-input", rows: 3, placeholder: "Type a message… (Ctrl+Enter sends)" });
  const send = h("button", { id: "pg-send", type: "submit", class: "primary" }, "Send");
  const stop = h("button", { id: "pg-stop", type: "button", disabled: true, onclick: () => panels.forEach((p) => p.abort()) }, "Stop");
  const addBtn = h("button", { id: "pg-add", type: "button", onclick: () => addPanel(all[0]) }, "+ Add model");
  const clear = h("button", { id: "pg-clear", type: "button", onclick: () => panels.forEach((p) => p.clear()) }, "Clear conversation");
  const grid = h("div", { id: "pg-panels", class: "pg-panels" });
  const shared = h("form", { id: "pg-shared", class: "pg-shared card", onsubmit: (e) => { e.preventDefault(); sendAll(); } },
    h("label", { for: "pg-input" }, "Message to every panel"), input,
    h("div", { class: "row pg-actions" }, send, stop));

  function busyChanged() {
    const busy = panels.some((p) => p.busy);
    stop.disabled = !busy;
    send.disabled = busy;
    panels.forEach((p) => p.syncBusy(busy));
  }

  function sendAll() {
    const text = input.value.trim();
    if (!text) { input.focus(); return; }
    input.value = "";
    panels.forEach((p) => p.send(text));
  }

  function layout() {
    shared.hidden = !sync.checked;
    panels.forEach((p) => p.setSync(sync.checked));
    addBtn.disabled = panels.length >= MAX_PANELS;
    panels.forEach((p) => p.setRemovable(panels.length > 1));
    grid.dataset.count = String(panels.length);
  }

  function addPanel(model) {
    if (panels.length >= MAX_PANELS) return;
    const p = new Panel(choices, model, { system: () => system.value, baseUrl, onBusy: busyChanged,
      onRemove: () => { p.abort(); panels.splice(panels.indexOf(p), 1); p.el.remove(); layout(); } });
    panels.push(p);
    grid.append(p.el);
    layout();
  }

  input.addEventListener("keydown", (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); sendAll(); } });
  sync.addEventListener("change", layout);
  system.addEventListener("input", () => panels.forEach((p) => p.refreshCode()));

  mount(root,
    h("div", { class: "spread" }, h("h1", {}, "Playground"),
      h("div", { class: "row" }, h("label", { class: "inline", for: "pg-sync" }, sync, "Sync: one input to every panel"),
        addBtn, clear)),
    h("div", { class: "card pg-system" }, h("label", { for: "pg-system" }, "System message (shared)"), system),
    grid, shared);
  (wanted.length ? wanted : all.slice(0, 2)).forEach((m) => addPanel(m));
  return () => panels.forEach((p) => p.abort());
}

class Panel {
  constructor(choices, model, { system, baseUrl, onBusy, onRemove }) {
    const n = ++panelSeq;
    this.messages = [];         // this panel's conversation: user turns and its own answers
    this.busy = false;
    this.controller = null;
    this.system = system;
    this.baseUrl = baseUrl;
    this.onBusy = onBusy;
    const id = (s) => `pg-${s}-${n}`;
    this.select = modelSelect(choices, model, { id: id("model"), class: "pg-model" });
    this.temperature = h("input", { id: id("temp"), class: "pg-temp", type: "number", min: 0, max: 2, step: 0.1, value: "0.7" });
    this.maxTokens = h("input", { id: id("max"), class: "pg-max", type: "number", min: 1, step: 1, value: "64" });
    this.stop = h("input", { id: id("stop"), class: "pg-stops", type: "text", placeholder: "e.g. \\n, END" });
    this.log = h("div", { class: "pg-messages", "aria-live": "polite" });
    this.status = h("div", { class: "pg-status" });
    this.input = h("textarea", { id: id("input"), class: "pg-panel-input", rows: 2, placeholder: "Message this model…" });
    this.sendBtn = h("button", { type: "submit", class: "primary pg-panel-send" }, "Send");
    this.form = h("form", { class: "pg-own", hidden: true, onsubmit: (e) => { e.preventDefault(); this.sendOwn(); } },
      h("label", { for: id("input") }, "Message"), this.input, h("div", { class: "row pg-actions" }, this.sendBtn,
        h("button", { type: "button", onclick: () => this.abort() }, "Stop")));
    this.input.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); this.sendOwn(); }
    });
    this.removeBtn = h("button", { type: "button", class: "link pg-remove", onclick: onRemove,
                                   "aria-label": "Remove this panel" }, "Remove");
    this.code = h("div", { class: "pg-code", hidden: true });
    this.codeBtn = h("button", { type: "button", class: "pg-code-btn", "aria-expanded": "false",
                                 onclick: () => this.toggleCode() }, "Copy as code");
    this.el = h("section", { class: "pg-panel card", dataset: { panel: String(n) }, "aria-label": "Model panel" },
      h("div", { class: "pg-head" }, h("label", { for: id("model"), class: "sr" }, "Model"), this.select, this.removeBtn),
      h("div", { class: "pg-params" },
        h("div", {}, h("label", { for: id("temp") }, "Temperature"), this.temperature),
        h("div", {}, h("label", { for: id("max") }, "Max tokens"), this.maxTokens),
        h("div", { class: "pg-stop-field" }, h("label", { for: id("stop") }, "Stop sequences"), this.stop)),
      this.log, this.status, this.form,
      h("div", { class: "row" }, this.codeBtn), this.code);
    for (const el of [this.select, this.temperature, this.maxTokens, this.stop]) el.addEventListener("input", () => this.refreshCode());
  }

  params() {
    return { temperature: this.temperature.value, maxTokens: this.maxTokens.value, stop: parseStops(this.stop.value) };
  }

  request(extra = []) { return chatRequest(this.select.value, this.system(), [...this.messages, ...extra], this.params()); }

  setSync(on) { this.form.hidden = on; }
  setRemovable(on) { this.removeBtn.hidden = !on; }
  syncBusy() { this.sendBtn.disabled = this.busy; }

  clear() { this.abort(); this.messages = []; this.log.replaceChildren(); this.status.replaceChildren(); this.refreshCode(); }

  sendOwn() {
    const text = this.input.value.trim();
    if (!text) { this.input.focus(); return; }
    this.input.value = "";
    this.send(text);
  }

  bubble(role, text) {
    const body = h("div", { class: "pg-text" }, text);
    const el = h("div", { class: `pg-msg ${role}` }, h("div", { class: "pg-role" }, role), body);
    this.log.append(el);
    return { el, body };
  }

  async send(text) {
    if (this.busy) return;
    const body = this.request([{ role: "user", content: text }]);
    this.messages.push({ role: "user", content: text });
    const asked = this.bubble("user", text);
    const answer = this.bubble("assistant", "");
    answer.el.classList.add("streaming");
    this.status.replaceChildren();
    this.busy = true;
    this.onBusy();
    this.controller = new AbortController();
    const started = performance.now();
    let out = "", chunks = 0, finish = null, usage = null, stopped = false;
    try {
      await stream("/chat/completions", { ...body, stream_options: { include_usage: true } }, (ev) => {
        if (ev.usage) usage = ev.usage;
        const c = ev.choices?.[0];
        if (!c) return;
        if (c.delta?.content) {
          out += c.delta.content;
          chunks++;
          answer.body.textContent = out;
          answer.el.dataset.chunks = String(chunks);
          this.log.scrollTop = this.log.scrollHeight;
        }
        if (c.finish_reason) finish = c.finish_reason;
      }, this.controller.signal);
    } catch (err) {
      if (err.name === "AbortError") stopped = true;
      else {
        this.status.append(errorBox(err instanceof ApiError ? err : { message: String(err.message || err) }));
        if (!out) { answer.el.remove(); this.messages.pop(); asked.el.classList.add("failed"); }
      }
    } finally {
      answer.el.classList.remove("streaming");
      if (out || stopped) {
        this.messages.push({ role: "assistant", content: out });
        answer.el.classList.add("done");
        const secs = (performance.now() - started) / 1000;
        const tokens = usage?.completion_tokens ?? chunks;
        answer.el.append(h("div", { class: "pg-meta muted" },
          stopped ? "stopped" : `${finish || "stop"}`, ` · ${tokens} tokens · ${secs.toFixed(1)} s`,
          secs > 0 ? ` · ${(tokens / secs).toFixed(1)} tok/s` : ""));
      }
      this.busy = false;
      this.controller = null;
      this.onBusy();
      this.refreshCode();
    }
  }

  abort() { if (this.controller) this.controller.abort(); }

  toggleCode() {
    const open = this.code.hidden;
    this.code.hidden = !open;
    this.codeBtn.setAttribute("aria-expanded", String(open));
    this.refreshCode();
  }

  refreshCode() {
    if (this.code.hidden) return;
    const body = this.request(this.input.value.trim() ? [{ role: "user", content: this.input.value.trim() }] : []);
    const curl = curlCode(this.baseUrl, body), python = pythonCode(this.baseUrl, body);
    mount(this.code,
      h("div", { class: "spread" }, h("h3", {}, "curl"), copyButton(curl, "Copy curl")), h("pre", { class: "pg-curl" }, curl),
      h("div", { class: "spread" }, h("h3", {}, "Python (openai SDK)"), copyButton(python, "Copy Python")),
      h("pre", { class: "pg-python" }, python));
  }
}
