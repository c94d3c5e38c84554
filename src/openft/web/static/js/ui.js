// Small DOM helpers shared by every page: an element builder, formatting, status badges, copy
// buttons, and the loading / empty / error states. No framework; no knowledge of the API.

// h("button", {class: "primary", onclick: fn}, "Save") -> HTMLElement. Attributes starting with
// "on" become listeners; `dataset`/`style` objects are merged; null/false children are skipped.
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k === "style" && typeof v === "object") Object.assign(el.style, v);
    else if (k === "class") el.className = v;
    else if (k in el && typeof v !== "string") el[k] = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  append(el, children);
  return el;
}

// Unicode bidirectional controls (U+200E/F, U+202A-E, U+2066-9): a file name with U+202E shows
// "invoice\u202egpj.exe" as "invoiceexe.jpg". Text is shown without them (as openft.names does).
const BIDI = /[\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;
export function plain(text) { return String(text).replace(BIDI, ""); }

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(plain(c)));
  }
}

// Replace an element's content.
export function mount(el, ...children) { el.replaceChildren(); append(el, children); return el; }

export function fmtTime(unix) {
  if (!unix) return "—";
  return new Date(unix * 1000).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined || seconds < 0) return "—";
  seconds = Math.round(seconds);
  const hh = Math.floor(seconds / 3600), mm = Math.floor((seconds % 3600) / 60), ss = seconds % 60;
  if (hh) return `${hh}h ${mm}m`;
  if (mm) return `${mm}m ${ss}s`;
  return `${ss}s`;
}

export function fmtNum(n, digits = 0) {
  if (n === null || n === undefined || Number.isNaN(n)) return "—";
  return Number(n).toLocaleString(undefined, { maximumFractionDigits: digits });
}

export function fmtBytes(n) {
  if (n === null || n === undefined) return "—";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

const STATUS_KIND = {
  succeeded: "ok", completed: "ok", processed: "ok", ready: "ok",
  failed: "bad", error: "bad", cancelled: "muted", canceled: "muted", expired: "muted",
  running: "run", in_progress: "run", validating_files: "wait", queued: "wait", paused: "wait", pausing: "wait",
};

export function badge(status) {
  return h("span", { class: `badge ${STATUS_KIND[status] || "muted"}`, dataset: { status } },
           String(status || "unknown").replace(/_/g, " "));
}

export function copyButton(text, label = "Copy") {
  const b = h("button", { type: "button", class: "copy", title: `Copy ${text}`, "aria-label": `Copy ${text}` }, label);
  b.addEventListener("click", async (e) => {
    e.preventDefault();
    e.stopPropagation();
    try { await navigator.clipboard.writeText(text); } catch { fallbackCopy(text); }
    b.textContent = "Copied";
    setTimeout(() => { b.textContent = label; }, 1200);
  });
  return b;
}

function fallbackCopy(text) {  // clipboard API needs a secure context; localhost over http may lack it
  const t = h("textarea", { style: { position: "fixed", opacity: "0" } }, text);
  document.body.append(t);
  t.select();
  try { document.execCommand("copy"); } finally { t.remove(); }
}

export function loading(what = "Loading…") { return h("p", { class: "state loading", role: "status" }, what); }
export function empty(what, ...actions) { return h("div", { class: "state empty" }, h("p", {}, what), ...actions); }

// An error as one readable block: message, and where (param/code) when the API said.
export function errorBox(err, retry) {
  const where = [err?.param && `field: ${err.param}`, err?.code && `code: ${err.code}`].filter(Boolean).join(" · ");
  return h("div", { class: "state error", role: "alert" },
    h("p", {}, err?.message || String(err)),
    where && h("p", { class: "where" }, where),
    retry && h("button", { type: "button", onclick: retry }, "Try again"));
}

let toastTimer;
export function toast(message, kind = "info") {
  let el = document.getElementById("toast");
  if (!el) { el = h("div", { id: "toast", role: "status", "aria-live": "polite" }); document.body.append(el); }
  el.className = `toast ${kind} show`;
  el.textContent = message;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => el.classList.remove("show"), 4000);
}

// A table from column specs: [{label, value: row => node|string, class}], with an optional
// row click (also reachable with Enter on the focused row).
export function table(columns, rows, { onRow, rowKey } = {}) {
  const body = rows.map((r) => {
    const tr = h("tr", { dataset: rowKey ? { key: rowKey(r) } : {} },
      columns.map((c) => h("td", { class: c.class || null, "data-label": c.label }, c.value(r))));
    if (onRow) {
      tr.tabIndex = 0;
      tr.classList.add("clickable");
      tr.addEventListener("click", (e) => { if (!e.target.closest("button,a,input")) onRow(r, e); });
      tr.addEventListener("keydown", (e) => { if (e.key === "Enter") onRow(r, e); });
    }
    return tr;
  });
  return h("table", { class: "grid" },
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { class: c.class || null, scope: "col" }, c.label)))),
    h("tbody", {}, body));
}

// Page-level polling that stops when the page is left: returns a stop() function.
export function every(ms, fn) {
  let stopped = false, timer;
  const tick = async () => {
    if (stopped) return;
    try { await fn(); } catch (e) { console.warn(e); }
    if (!stopped) timer = setTimeout(tick, ms);
  };
  timer = setTimeout(tick, ms);
  return () => { stopped = true; clearTimeout(timer); };
}
