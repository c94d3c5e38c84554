// The dashboard's frame: sign-in, the navigation bar and a hash router that loads one page
// module at a time. A page module exports `render(root, params, ctx)` and may return a cleanup
// function (stop polling, abort streams) that runs when the user leaves the page.
// Everything the dashboard shows comes from /v1 through js/api.js, with the user's key.

import { api, ApiError, auth, setUnauthorizedHandler } from "./api.js";
import { errorBox, h, loading, mount, plain } from "./ui.js";

// [pattern, page module, nav section]; the first match wins. `:name` captures one segment.
const ROUTES = [
  ["/jobs/new", "create", "jobs"],
  ["/jobs/:id", "job", "jobs"],
  ["/jobs", "jobs", "jobs"],
  ["/playground", "playground", "playground"],
  ["/files/:id", "files", "files"],
  ["/files", "files", "files"],
  ["/models", "models", "models"],
  ["/evals/:eval/runs/:run", "evals", "evals"],
  ["/evals/:eval", "evals", "evals"],
  ["/evals", "evals", "evals"],
];

const NAV = [
  ["jobs", "Fine-tuning", "#/jobs"],
  ["playground", "Playground", "#/playground"],
  ["files", "Files", "#/files"],
  ["models", "Models", "#/models"],
  ["evals", "Evaluations", "#/evals"],
];

const app = document.getElementById("app");
let cleanup = null;
let renderSeq = 0;

export function navigate(path) { location.hash = `#${path}`; }

function parseHash() {
  const raw = location.hash.replace(/^#/, "") || "/jobs";
  const [path, query = ""] = raw.split("?");
  return { path: path.replace(/\/+$/, "") || "/jobs", query: new URLSearchParams(query) };
}

function match(path) {
  for (const [pattern, page, section] of ROUTES) {
    const want = pattern.split("/"), got = path.split("/");
    if (want.length !== got.length) continue;
    const params = {};
    if (want.every((w, i) => (w.startsWith(":") ? ((params[w.slice(1)] = decodeURIComponent(got[i])), true) : w === got[i]))) {
      return { page, section, params };
    }
  }
  return null;
}

function signIn(message) {
  document.title = "Sign in · openft";
  const input = h("input", { id: "api-key", type: "password", name: "api-key", autocomplete: "current-password",
                             placeholder: "sk-…", required: true, "aria-describedby": "signin-help" });
  const status = h("div", { id: "signin-status", "aria-live": "assertive" }, message && errorBox({ message }));
  const button = h("button", { type: "submit", class: "primary" }, "Sign in");
  const form = h("form", { class: "signin card", onsubmit: async (e) => {
    e.preventDefault();
    const key = input.value.trim();
    if (!key) return;
    button.disabled = true;
    mount(status, loading("Checking the key…"));
    try {
      await api("/models?limit=1", { key });
      auth.set(key);
      route();
    } catch (err) {
      const msg = err instanceof ApiError && err.status === 401
        ? `That API key was not accepted: ${err.message}` : err.message;
      mount(status, errorBox({ message: msg }));
      input.select();
    } finally {
      button.disabled = false;
    }
  } },
    h("h1", {}, "openft"),
    h("p", { class: "muted", id: "signin-help" },
      "Sign in with an API key. `openft serve` prints the admin key at first start and writes it to ",
      h("code", {}, "openft-data/admin_key"), "; `openft keys create --project NAME` makes one per project."),
    h("label", { for: "api-key" }, "API key"), input, button, status);
  mount(app, h("main", { id: "main", class: "signin-page" }, form));
  input.focus();
}

function frame(section) {
  const nav = h("nav", { class: "topnav", "aria-label": "Main" },
    h("a", { class: "brand", href: "#/jobs" }, "openft"),
    h("div", { class: "navlinks" }, NAV.map(([id, label, href]) =>
      h("a", { href, class: id === section ? "active" : null, "aria-current": id === section ? "page" : null }, label))),
    h("button", { type: "button", class: "link signout", onclick: () => { auth.clear(); signIn(); } }, "Sign out"));
  const main = h("main", { id: "main", tabindex: "-1" });
  mount(app, h("header", {}, nav), main);
  return main;
}

async function route() {
  const seq = ++renderSeq;
  if (cleanup) { try { cleanup(); } catch (e) { console.warn(e); } cleanup = null; }
  if (!auth.key) return signIn();
  const { path, query } = parseHash();
  const m = match(path);
  const main = frame(m?.section);
  if (!m) { mount(main, errorBox({ message: `No page at ${path}.` })); return; }
  mount(main, loading());
  try {
    const mod = await import(`./pages/${m.page}.js`);
    if (seq !== renderSeq) return;  // the user moved on while the module loaded
    main.replaceChildren();
    const ctx = { navigate, query, setTitle: (t) => { document.title = `${plain(t)} · openft`; } };
    ctx.setTitle(m.section ? NAV.find((n) => n[0] === m.section)[1] : "openft");
    const done = await mod.render(main, m.params, ctx);
    if (seq !== renderSeq) { if (typeof done === "function") done(); return; }
    cleanup = typeof done === "function" ? done : null;
  } catch (err) {
    if (seq === renderSeq) mount(main, errorBox(err, route));
  }
}

setUnauthorizedHandler((err) => { auth.clear(); signIn(`Your key is no longer accepted: ${err.message}`); });
window.addEventListener("hashchange", route);
route();
