// Entry point: reads the page's config (inert JSON the server embedded) and draws the page.
import { h, clear } from "./dom.js";
import { transport, token, ApiError } from "./api.js";
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

const NEEDS_TOKEN = "The hub needs your API token (printed by cogkit hub at its first start, and kept in <data-dir>/token): enter it above.";

function draw() {
  if (config.kind === "hub" && !token.get()) return fail(new ApiError(401, NEEDS_TOKEN));
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
