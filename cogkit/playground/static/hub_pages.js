// The hub's own pages: the token bar, the model list and the prediction history. They are
// shells that read the v1 API with the token kept in this browser, so nothing listed here
// is ever rendered for a request without the token.
import { h, clear } from "./dom.js";
import { token, ApiError } from "./api.js";
import { isUrl, mediaOf } from "./render.js";

export function tokenBar(slot, onChange) {
  const input = h("input", { type: "password", id: "token", autocomplete: "off", placeholder: "API token", "aria-label": "API token" });
  const save = h("button", { type: "submit" }, "Save token");
  const forget = h("button", { type: "button", onclick: () => { token.set(""); draw(); onChange(); } }, "Forget token");
  const saved = h("span", { class: "progress-label", id: "token-state" });
  const form = h("form", { onsubmit: (e) => { e.preventDefault(); token.set(input.value.trim()); input.value = ""; draw(); onChange(); } });
  function draw() {
    clear(form);
    if (token.get()) form.append(saved, forget);
    else form.append(input, save);
    saved.textContent = "token saved in this browser";
  }
  draw();
  slot.append(form);
}

function when(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return isNaN(d) ? iso : d.toLocaleString();
}

function thumbnail(output) {
  const first = Array.isArray(output) ? output[0] : output;
  return isUrl(first) && mediaOf(first) === "image" ? h("img", { src: first, alt: "output" }) : "";
}

export async function modelList(app, config, transport) {
  const list = h("ul", { class: "cards", id: "models" });
  const pager = h("div", { class: "pager" });
  clear(app).append(h("h1", {}, "Models"), h("p", { class: "sub" }, "Each runs in its own cogkit serve process, started on first use."), list, pager);
  async function load(url) {
    const r = await transport.api(url);
    if (!r.ok) throw new ApiError(r.status, `GET ${url}: ${r.status}`);
    const page = await r.json();
    clear(list);
    for (const m of page.results) {
      const ref = `${m.owner}/${m.name}`;
      list.append(h("li", {}, h("a", { href: `/${ref}` }, ref),
        m.description ? h("p", { class: "help" }, m.description) : null,
        h("p", { class: "help" }, m.latest_version ? `version ${m.latest_version.id.slice(0, 12)}` : "no version", ` · ${m.run_count} runs`)));
    }
    if (!page.results.length) list.append(h("li", {}, "No models yet: start the hub with --model OWNER/NAME=PATH."));
    clear(pager);
    if (page.previous) pager.append(h("button", { type: "button", onclick: () => load(page.previous) }, "Previous"));
    if (page.next) pager.append(h("button", { type: "button", onclick: () => load(page.next) }, "Next"));
  }
  await load("/models");
}

export async function history(app, config, transport) {
  const body = h("tbody");
  const pager = h("nav", { class: "pager", "aria-label": "Pages" });
  clear(app).append(h("h1", {}, "Predictions"),
    h("table", { id: "predictions" },
      h("thead", {}, h("tr", {}, ["Prediction", "Model", "Status", "Created", "Time", "Output"].map((c) => h("th", { scope: "col" }, c)))),
      body),
    pager);
  async function load(url, push) {
    const r = await transport.api(url);
    if (!r.ok) throw new ApiError(r.status, `GET ${url}: ${r.status}`);
    const page = await r.json();
    clear(body);
    for (const p of page.results) {
      const t = p.metrics && typeof p.metrics.predict_time === "number" ? `${p.metrics.predict_time.toFixed(2)} s` : "";
      body.append(h("tr", {},
        h("td", {}, h("a", { href: p.urls.web }, p.id)),
        h("td", {}, h("a", { href: `/${p.model}` }, p.model)),
        h("td", {}, h("span", { class: `status ${p.status}` }, p.status)),
        h("td", {}, when(p.created_at)),
        h("td", {}, t),
        h("td", { class: "thumb" }, thumbnail(p.output))));
    }
    if (!page.results.length) body.append(h("tr", {}, h("td", { colspan: 6 }, "No predictions yet.")));
    clear(pager);
    const link = (label, next) => h("button", { type: "button", onclick: () => load(next, true) }, label);
    if (page.previous) pager.append(link("Newer", page.previous));
    if (page.next) pager.append(link("Older", page.next));
    if (push) history_push(url);
  }
  const cursor = new URLSearchParams(location.search).get("cursor");
  await load(cursor ? `/predictions?cursor=${encodeURIComponent(cursor)}` : "/predictions", false);
}

function history_push(url) {
  const cursor = new URL(url, location.origin).searchParams.get("cursor");
  window.history.pushState(null, "", cursor ? `/predictions?cursor=${encodeURIComponent(cursor)}` : "/predictions");
}
