// Entry point: reads the page's config (inert JSON the server embedded) and draws the page.
import { h, clear } from "./dom.js";
import { transport, ApiError } from "./api.js";
import { playground } from "./playground.js";
import { modelList, history, tokenBar } from "./hub_pages.js";

const config = JSON.parse(document.getElementById("cogkit-config").textContent);
const app = document.getElementById("app");
const api = transport(config);
const PAGES = { playground, models: modelList, predictions: history };

function fail(err) {
  const needsToken = err instanceof ApiError && err.status === 401;
  clear(app).append(h("div", { class: `notice ${needsToken ? "" : "bad"}`, role: "alert", id: "page-error" },
    String(err.message || err)));
}

function draw() {
  Promise.resolve().then(() => PAGES[config.page](app, config, api)).catch(fail);
}

if (config.kind === "hub") {
  const nav = document.getElementById("nav");
  nav.append(h("a", { href: "/" }, "Models"), h("a", { href: "/predictions" }, "Predictions"));
  tokenBar(document.getElementById("token-slot"), draw);
} else {
  document.getElementById("nav").append(h("a", { href: "/openapi.json" }, "OpenAPI schema"));
}
draw();
