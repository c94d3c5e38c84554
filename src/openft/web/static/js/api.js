// The dashboard's only way to the server: fetch() on /v1 with the API key kept in this tab's
// sessionStorage. Knows nothing about pages; every error becomes an ApiError carrying OpenAI's
// error fields (message, param, code) so pages can show what and where.

const KEY = "openft.key";

export const auth = {
  get key() { return sessionStorage.getItem(KEY); },
  set(key) { sessionStorage.setItem(KEY, key); },
  clear() { sessionStorage.removeItem(KEY); },
};

export class ApiError extends Error {
  constructor(status, error) {
    super(error?.message || `HTTP ${status}`);
    this.status = status;            // 0: the server could not be reached
    this.param = error?.param ?? null;
    this.code = error?.code ?? null;
    this.type = error?.type ?? null;
  }
}

// Called when any request answers 401: the app signs out and shows the sign-in page.
let onUnauthorized = () => {};
export function setUnauthorizedHandler(fn) { onUnauthorized = fn; }

export function qs(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v === undefined || v === null || v === "") continue;
    q.append(k, String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : "";
}

async function send(path, { method = "GET", json, form, signal, key } = {}) {
  const headers = { Authorization: `Bearer ${key ?? auth.key ?? ""}` };
  let body;
  if (json !== undefined) { headers["Content-Type"] = "application/json"; body = JSON.stringify(json); }
  if (form !== undefined) body = form;  // FormData: the browser sets the multipart boundary
  let res;
  try {
    res = await fetch(`/v1${path}`, { method, headers, body, signal });
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError(0, { message: "Cannot reach the openft server. Is `openft serve` running?" });
  }
  if (!res.ok) {
    let err = null;
    try { err = (await res.json()).error; } catch { /* not JSON */ }
    const e = new ApiError(res.status, err || { message: `${res.status} ${res.statusText}` });
    if (res.status === 401 && key === undefined) onUnauthorized(e);
    throw e;
  }
  return res;
}

// JSON request: api("/fine_tuning/jobs"), api("/files", {method: "POST", form}).
export async function api(path, opts = {}) {
  const res = await send(path, opts);
  if (res.status === 204) return null;
  const type = res.headers.get("content-type") || "";
  return type.includes("json") ? res.json() : res.text();
}

// The raw Response (downloads, streams).
export function apiRaw(path, opts = {}) { return send(path, opts); }

// Every page of a cursor-paginated list (OpenAI's `after` + `has_more`), up to `max` items.
export async function listAll(path, params = {}, max = 10000) {
  const out = [];
  let after;
  for (;;) {
    const page = await api(path + qs({ limit: 100, ...params, after }));
    out.push(...page.data);
    if (!page.has_more || out.length >= max || !page.data.length) return out;
    after = page.last_id ?? page.data[page.data.length - 1].id;
  }
}

// POST a streaming request and call onEvent(obj) for each `data:` line until [DONE].
// Errors sent in-band (OpenAI's shape) are thrown as ApiError.
export async function stream(path, json, onEvent, signal) {
  const res = await send(path, { method: "POST", json: { ...json, stream: true }, signal });
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      for (const line of block.split("\n")) {
        if (!line.startsWith("data:")) continue;
        const data = line.slice(5).trim();
        if (data === "[DONE]") return;
        const obj = JSON.parse(data);
        if (obj.error) throw new ApiError(500, obj.error);
        onEvent(obj);
      }
    }
  }
}
