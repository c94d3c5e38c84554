// Pieces of the jobs pages that are not about one page's layout: what a status allows, a job's
// duration, the location (file, line, field) inside a validation error message, and a file
// download through the API with the user's key. No DOM beyond what it returns.

import { apiRaw, api } from "./api.js";
import { copyButton, h } from "./ui.js";

export const STATUSES = ["validating_files", "queued", "running", "paused", "succeeded", "failed", "cancelled"];
export const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);

// What the API's verbs accept (openft.jobs.state.CAN); pause of a running job is a request the
// runner honours at its next checkpoint.
export const ALLOWED = {
  cancel: new Set(["validating_files", "queued", "running", "paused"]),
  pause: new Set(["queued", "running"]),
  resume: new Set(["paused"]),
};

export function isTerminal(job) { return TERMINAL.has(job.status); }

// Seconds from creation to the end (or to now while the job is not finished).
export function jobSeconds(job, now = Date.now() / 1000) {
  if (!job.created_at) return null;
  if (job.finished_at) return job.finished_at - job.created_at;
  return isTerminal(job) ? null : now - job.created_at;
}

// "The training file file-x is invalid: train.jsonl:3 [messages[1].content]: ..." ->
// {file: "train.jsonl", line: 3, field: "messages[1].content"} (openft.data's DataIssue text).
export function errorLocation(message) {
  // the field may hold brackets itself (messages[1].role): it ends at "]:"
  const m = /([^\s:()]+):(\d+)(?: \[(.+?)\](?=:))?/.exec(message || "");
  if (!m) {
    const f = /\[(.+?)\]:/.exec(message || "");
    return f ? { file: null, line: null, field: f[1] } : null;
  }
  return { file: m[1], line: Number(m[2]), field: m[3] || null };
}

// Save a file of the API (GET /v1/files/{id}/content) to disk under its own name.
export async function downloadFile(fileId) {
  const [meta, res] = await Promise.all([api(`/files/${encodeURIComponent(fileId)}`).catch(() => null),
                                         apiRaw(`/files/${encodeURIComponent(fileId)}/content`)]);
  const blob = await res.blob();
  const url = URL.createObjectURL(blob);
  const a = h("a", { href: url, download: meta?.filename || `${fileId}.csv`, style: { display: "none" } });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 30_000);
}

export function playgroundHref(model) { return `#/playground?models=${encodeURIComponent(model)}`; }

// A model name in monospace with a copy button.
export function modelName(name) {
  if (!name) return "—";
  return h("span", { class: "model-name" }, h("code", {}, name), copyButton(name));
}
