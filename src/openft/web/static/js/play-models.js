// Which models the key can use, grouped for pickers: base and fine-tuned models (GET /v1/models)
// and the checkpoints of the project's recent jobs (GET /v1/fine_tuning/jobs/{id}/checkpoints,
// ids `ft:...:ckpt-step-N`). Also a <select> builder with those groups.

import { api, qs } from "./api.js";
import { h } from "./ui.js";

const RECENT_JOBS = 10;  // checkpoints are listed for this many of the newest jobs

export async function modelChoices() {
  const [models, jobs] = await Promise.all([
    api("/models"),
    api("/fine_tuning/jobs" + qs({ limit: 50 })).catch(() => ({ data: [] })),
  ]);
  const base = models.data.filter((m) => !m.id.startsWith("ft:"));
  const fineTuned = models.data.filter((m) => m.id.startsWith("ft:"));
  const withCkpts = jobs.data.filter((j) => ["running", "succeeded", "paused", "cancelled", "failed"].includes(j.status))
    .slice(0, RECENT_JOBS);
  const lists = await Promise.all(withCkpts.map((j) =>
    api(`/fine_tuning/jobs/${encodeURIComponent(j.id)}/checkpoints` + qs({ limit: 20 })).then((r) => r.data, () => [])));
  const checkpoints = lists.flat().map((c) => ({ id: c.fine_tuned_model_checkpoint, step: c.step_number, job: c.fine_tuning_job_id }));
  return { base, fineTuned, checkpoints };
}

// A <select> of every choice (grouped), with `selected` chosen; an id not in the lists (an
// older checkpoint named in the URL) is added so that it can still be picked.
export function modelSelect(choices, selected, attrs = {}) {
  const known = new Set([...choices.base, ...choices.fineTuned, ...choices.checkpoints].map((m) => m.id));
  const opt = (id, label) => h("option", { value: id, selected: id === selected }, label || id);
  return h("select", attrs,
    selected && !known.has(selected) && opt(selected),
    h("optgroup", { label: "Base models" }, choices.base.map((m) => opt(m.id))),
    choices.fineTuned.length && h("optgroup", { label: "Fine-tuned" }, choices.fineTuned.map((m) => opt(m.id))),
    choices.checkpoints.length && h("optgroup", { label: "Checkpoints" },
      choices.checkpoints.map((c) => opt(c.id, `${c.id}`))));
}
