// Training curves drawn with the vendored uPlot (global `uPlot`): one chart per quantity (loss,
// token accuracy; reward margin and accuracy for preference jobs), x = step. Which columns of
// GET /v1/fine_tuning/jobs/{id}/metrics go into which chart, and their labels, come from that
// answer's `charts` (chartSpecs); knows nothing about fetching them.
//
// For tests and the benchmark, each chart's element keeps its state:
//   el._uplot        the uPlot instance; el._uplot.data = [steps, series 1, ...] as drawn and
//                    el._uplot.series[i].label names series i ("train_loss", "train_loss (smoothed)")
//   el._columns      the raw columns it was given ({steps, <metric>: [...]}), never smoothed
//   window.openftCharts[name] = the chart object (name: "loss", "accuracy", "reward_margin", "reward_accuracy")
// and the first draw with points sets the performance mark "openft:charts".

const COLORS = ["#2f5bd3", "#c2410c", "#1f7a3f"];  // a chart's series in order: training, validation, full validation

// TensorBoard's smoothing: an exponential moving average with debiasing (so the first points are
// not pulled to 0); nulls stay null and do not advance the average. weight in [0, 1).
export function ema(values, weight) {
  const out = new Array(values.length);
  let last = 0, n = 0;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (v === null || v === undefined || !Number.isFinite(v)) { out[i] = null; continue; }
    last = last * weight + (1 - weight) * v;
    n++;
    out[i] = last / (1 - Math.pow(weight, n));
  }
  return out;
}

// Chart specs from the `charts` of GET /v1/fine_tuning/jobs/{id}/metrics, which names the
// columns and labels them (this file keeps no metric name): {name, title, logScaleable, unit,
// optional, series: [{key, label, color, smooth, points}]}. A per-epoch series is drawn as points.
export function chartSpecs(charts) {
  return charts.map((c) => ({
    name: c.name, title: c.title, logScaleable: c.log_scale, unit: c.share, optional: c.optional,
    series: c.series.map((s, i) => ({ key: s.key, label: s.label, color: COLORS[i % COLORS.length],
                                      smooth: !s.per_epoch, points: s.per_epoch })),
  }));
}

// The columns of a metrics answer that its charts name, copied: {steps, <key>: [...]}.
export function chartColumns(answer) {
  const cols = { steps: answer.steps.slice() };
  for (const c of answer.charts) {
    for (const s of c.series) if (Array.isArray(answer[s.key])) cols[s.key] = answer[s.key].slice();
  }
  return cols;
}

// Steps are whole numbers: no 1.25 ticks.
const STEP_INCRS = [1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 2500, 5000, 10000, 20000, 50000, 100000, 200000, 500000];

// A share in [0, 1] (accuracy): padded, never past 0 or 1, and a flat line still has a scale.
function unitRange(u, min, max) {
  if (min === null || max === null || min === max) return [Math.max(0, (min ?? 0) - 0.1), Math.min(1, (max ?? 1) + 0.1)];
  const [lo, hi] = uPlot.rangeNum(min, max, 0.1, true);
  return [Math.max(0, lo), Math.min(1, hi)];
}

function faint(hex, alpha) {
  const n = parseInt(hex.slice(1), 16);
  return `rgba(${(n >> 16) & 255},${(n >> 8) & 255},${n & 255},${alpha})`;
}

function hasAny(values) { return values.some((v) => v !== null && v !== undefined); }

export class Curves {
  // el: the element to draw in; spec: one of chartSpecs(...).
  constructor(el, spec) {
    this.el = el;
    this.spec = spec;
    this.u = null;
    this.layout = "";   // which series exist now; a change rebuilds the uPlot
    this.opts = { smoothing: 0, log: false };
    this.columns = { steps: [] };
    el._chart = this;
    (window.openftCharts ||= {})[spec.name] = this;
    this.resizer = new ResizeObserver(() => {
      if (this.u && this.el.clientWidth) this.u.setSize({ width: this.width(), height: this.height() });
    });
    this.resizer.observe(el);
  }

  width() { return Math.max(200, this.el.clientWidth); }
  height() { return this.el.clientWidth < 500 ? 200 : 260; }

  // The series shown: a metric without any value is left out (e.g. no validation file).
  active() {
    const out = [];
    for (const s of this.spec.series) {
      const values = this.columns[s.key] || [];
      if (!hasAny(values)) continue;
      out.push({ ...s, values });
      if (s.smooth && this.opts.smoothing > 0) out.push({ ...s, smoothed: true, values: ema(values, this.opts.smoothing) });
    }
    return out;
  }

  // Replace all columns ({steps, key: [...]}), or change smoothing/log, and redraw.
  set(columns, opts) {
    if (columns) this.columns = columns;
    if (opts) this.opts = { ...this.opts, ...opts };
    this.draw();
  }

  draw() {
    const active = this.active();
    this.el._columns = this.columns;
    const data = [this.columns.steps, ...active.map((s) => s.values)];
    const layout = JSON.stringify([active.map((s) => s.key + (s.smoothed ? "~" : "")), this.opts.log && this.spec.logScaleable]);
    if (!active.length) { this.destroyPlot(); this.el.replaceChildren(); this.el.classList.add("nodata"); return; }
    this.el.classList.remove("nodata");
    if (this.u && layout === this.layout) { this.u.setData(data); this.after(); return; }
    this.destroyPlot();
    this.el.replaceChildren();
    this.layout = layout;
    const smoothing = this.opts.smoothing > 0;
    const series = [{ label: "step" }, ...active.map((s) => {
      const base = { label: s.smoothed ? `${s.key} (smoothed)` : s.key, scale: "y", spanGaps: true,
                     value: (u, v) => (v === null || v === undefined ? "—" : v.toFixed(4)) };
      if (s.points) return { ...base, stroke: s.color, fill: s.color, width: 0, paths: () => null,
                             points: { show: true, space: 0, size: 8, fill: s.color, stroke: s.color } };
      const dim = s.smooth && smoothing && !s.smoothed;
      return { ...base, stroke: dim ? faint(s.color, 0.3) : s.color, width: s.smoothed ? 2 : (dim ? 1 : 1.5),
               points: { show: false } };
    })];
    const log = this.opts.log && this.spec.logScaleable;
    const u = new uPlot({
      width: this.width(), height: this.height(),
      scales: { x: { time: false }, y: log ? { distr: 3 } : { auto: true, range: this.spec.unit ? unitRange : undefined } },
      axes: [{ label: "step", size: 40, incrs: STEP_INCRS }, { size: 56 }],
      legend: { live: true },
      cursor: { drag: { x: true, y: false } },
      series,
      hooks: { draw: [() => this.drawn()] },
    }, data, this.el);
    // Readable names in the legend; the series' own label stays the metric key (tests use it).
    const names = u.root.querySelectorAll(".u-legend .u-series .u-label");
    active.forEach((s, i) => { if (names[i + 1]) names[i + 1].textContent = s.smoothed ? `${s.label} (smoothed)` : s.label; });
    this.u = u;
    this.el._uplot = u;
    this.after();
  }

  after() { this.el.dataset.points = String(this.columns.steps.length); }

  drawn() {
    if (this.columns.steps.length && !performance.getEntriesByName("openft:charts").length) performance.mark("openft:charts");
    this.el.dataset.drawnAt = String(performance.now());
  }

  destroyPlot() { if (this.u) { this.u.destroy(); this.u = null; this.el._uplot = null; } }

  destroy() {
    this.resizer.disconnect();
    this.destroyPlot();
    if (window.openftCharts?.[this.spec.name] === this) delete window.openftCharts[this.spec.name];
  }
}

// Append a later answer of the metrics endpoint to columns held by the page (in place). A step
// that is not after the last one held (a resumed job repeats steps) drops the held points from
// that step on. Returns whether anything changed.
export function appendColumns(held, more) {
  if (!more.steps.length) return false;
  const first = more.steps[0];
  let cut = held.steps.length;
  while (cut > 0 && held.steps[cut - 1] >= first) cut--;
  for (const key of Object.keys(more)) {
    if (!Array.isArray(more[key])) continue;
    if (!held[key]) held[key] = new Array(held.steps.length).fill(null);
    held[key].length = cut;
  }
  for (const key of Object.keys(held)) {
    if (!Array.isArray(held[key])) continue;
    held[key].length = cut;
    const add = more[key] || new Array(more.steps.length).fill(null);
    for (const v of add) held[key].push(v);
  }
  return true;
}
