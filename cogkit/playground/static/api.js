// How the playground talks to its server. Two transports with one interface:
//   schema()            -> {openapi, component, title, version}
//   run(input, on)      -> {cancel()}; on.start(id) on.log(text) on.output(chunk) on.done(body)
//                          on.invalid([{field, message}]) on.error(message)
// "cog": cogkit serve's Cog API; the playground's own POST /playground/predictions answers
// with the server-sent events of the prediction whether or not the model streams.
// "hub": Replicate's v1 API with the user's token; events from urls.stream.
import { FileRef, SecretRef } from "./form.js";

const TOKEN_KEY = "cogkit.hub.token";

export const token = {
  get: () => localStorage.getItem(TOKEN_KEY) || "",
  set: (value) => (value ? localStorage.setItem(TOKEN_KEY, value) : localStorage.removeItem(TOKEN_KEY)),
};

// The input as the API takes it: picked files as data URLs, secrets as typed.
export function wireInput(input) {
  const out = {};
  for (const [k, v] of Object.entries(input)) {
    const one = (x) => (x instanceof FileRef ? x.dataUrl : x instanceof SecretRef ? x.value : x);
    out[k] = Array.isArray(v) ? v.map(one) : one(v);
  }
  return out;
}

export class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function errorText(response) {
  const text = await response.text();
  try {
    const body = JSON.parse(text);
    return body.detail && typeof body.detail === "string" ? body.detail : body.error || body.title || text;
  } catch { return text || response.statusText; }
}

// Server-sent events from a fetch body (EventSource cannot POST)
async function* sseEvents(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) yield { event, data: data.join("\n") };
    }
  }
}

export function cogTransport(config) {
  const component = config.mode === "train" ? "TrainingInput" : "Input";
  const noun = config.mode === "train" ? "trainings" : "predictions";
  return {
    kind: "cog",
    async schema() {
      let r = await fetch("/openapi.json");
      while (r.status === 503) {  // the model is still starting: its schema comes when setup is done
        await new Promise((resolve) => setTimeout(resolve, 1000));
        r = await fetch("/openapi.json");
      }
      if (!r.ok) throw new ApiError(r.status, `the model's schema is not available yet (${r.status}): ${await errorText(r)}`);
      const openapi = await r.json();
      return { openapi, component, title: config.title || (openapi.info && openapi.info.title) || "Model" };
    },
    run(input, on) {
      const aborter = new AbortController();
      let id = null;
      (async () => {
        const r = await fetch("/playground/predictions", {
          method: "POST", signal: aborter.signal,
          headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
          body: JSON.stringify({ input: wireInput(input) }),
        });
        if (!r.ok) return on.error(`${r.status}: ${await errorText(r)}`);
        for await (const { event, data } of sseEvents(r)) {
          const value = JSON.parse(data);
          if (event === "start") { id = value.id; on.start(id); }
          else if (event === "log") on.log(value.data);
          else if (event === "output") on.output(value.chunk, value.index);
          else if (event === "completed") return on.done(value);
          else if (event === "error") return on.error(value.error);
          else if (event === "refused") return refused(value.status, value.body, on);
        }
        on.error("the server closed the stream before the prediction finished");
      })().catch((err) => { if (err.name !== "AbortError") on.error(String(err.message || err)); });
      return {
        async cancel() {
          if (id) await fetch(`/${noun}/${encodeURIComponent(id)}/cancel`, { method: "POST" });
          else aborter.abort();
        },
      };
    },
  };
}

// A prediction the server would not start: the Cog 422 names each field; others say why.
function refused(status, body, on) {
  if (status === 422 && body && Array.isArray(body.detail)) {
    return on.invalid(body.detail.map((e) => ({ field: e.loc && e.loc.length > 2 ? String(e.loc[2]) : "", message: e.msg })));
  }
  const message = body && typeof body === "object" ? body.error || body.detail || JSON.stringify(body) : String(body);
  return on.error(`${status}: ${message}`);
}

export function hubTransport(config) {
  const [owner, name] = (config.model || "/").split("/");  // the list pages have no model
  const auth = () => ({ Authorization: `Bearer ${token.get()}` });
  async function api(path, init = {}) {
    const r = await fetch(path.startsWith("http") ? path : `/v1${path}`, { ...init, headers: { ...auth(), ...(init.headers || {}) } });
    if (r.status === 401) throw new ApiError(401, "The hub did not accept this API token: forget it and enter the one cogkit hub printed (also in <data-dir>/token).");
    return r;
  }
  return {
    kind: "hub",
    api,
    async schema() {
      const r = await api(`/models/${encodeURIComponent(owner)}/${encodeURIComponent(name)}`);
      if (!r.ok) throw new ApiError(r.status, await errorText(r));
      const model = await r.json();
      if (!model.latest_version) throw new ApiError(404, `${config.model} has no version yet`);
      return { openapi: model.latest_version.openapi_schema, component: "Input", title: config.model,
               version: model.latest_version.id, description: model.description };
    },
    run(input, on) {
      let prediction = null, source = null, finished = false;
      const finish = async () => {
        if (finished) return;
        finished = true;
        if (source) source.close();
        // the final body (typed output, metrics) from the API
        for (;;) {
          const r = await api(prediction.urls.get);
          const body = await r.json();
          if (["succeeded", "failed", "canceled"].includes(body.status)) return on.done(body);
          await new Promise((resolve) => setTimeout(resolve, 500));
        }
      };
      (async () => {
        const r = await api(`/models/${encodeURIComponent(owner)}/${encodeURIComponent(name)}/predictions`, {
          method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ input: wireInput(input), stream: true }),
        });
        if (r.status === 422) {
          const body = await r.json();
          if (body.invalid_fields) {
            return on.invalid(body.invalid_fields.map((f) => ({ field: String(f.field || "").replace(/^input\./, ""), message: f.description })));
          }
          return on.invalid([{ field: "", message: body.detail || "invalid input" }]);
        }
        if (!r.ok) return on.error(`${r.status}: ${await errorText(r)}`);
        prediction = await r.json();
        on.start(prediction.id, prediction);
        source = new EventSource(prediction.urls.stream);
        source.addEventListener("logs", (e) => on.log(e.data + "\n"));
        source.addEventListener("output", (e) => on.output(e.data));
        source.addEventListener("done", () => { finish().catch((err) => on.error(String(err.message || err))); });
        // a dropped connection (not the hub's own "error" event, which carries data): read the result instead
        source.addEventListener("error", (e) => { if (!e.data) finish().catch((err) => on.error(String(err.message || err))); });
      })().catch((err) => on.error(String(err.message || err)));
      return {
        async cancel() { if (prediction) await api(prediction.urls.cancel, { method: "POST" }); },
      };
    },
  };
}

export function transport(config) {
  return config.kind === "hub" ? hubTransport(config) : cogTransport(config);
}
