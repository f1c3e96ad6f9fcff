// One model's playground: the form, Run/Cancel, the output as it arrives (progress bar,
// live text, images), logs, metrics, and the Code tab.
import { h, clear } from "./dom.js";
import { inputFields, InputForm } from "./form.js";
import { outputKind, renderOutput, valueItem, TextStream, parseProgress, metricsText } from "./render.js";
import { snippets } from "./code.js";

function tabs(names, onSelect) {
  const buttons = names.map((name, i) => h("button", { type: "button", role: "tab", id: `tab-${slug(name)}`,
    "aria-selected": i === 0 ? "true" : "false", "aria-controls": `panel-${slug(name)}`, onclick: () => select(i) }, name));
  const bar = h("div", { class: "tabs", role: "tablist" }, buttons);
  bar.addEventListener("keydown", (e) => {
    const at = buttons.indexOf(document.activeElement);
    if (at < 0 || (e.key !== "ArrowRight" && e.key !== "ArrowLeft")) return;
    const next = (at + (e.key === "ArrowRight" ? 1 : buttons.length - 1)) % buttons.length;
    select(next);
    buttons[next].focus();
  });
  function select(i) {
    buttons.forEach((b, j) => b.setAttribute("aria-selected", i === j ? "true" : "false"));
    onSelect(names[i]);
  }
  return bar;
}

const slug = (s) => s.toLowerCase().replace(/[^a-z0-9]+/g, "");

export async function playground(app, config, transport) {
  const info = await transport.schema();
  document.title = `${info.title} · cogkit playground`;
  const fields = inputFields(info.openapi, info.component);
  const kind = outputKind(info.openapi);
  const form = new InputForm(fields);

  const status = h("span", { class: "status", id: "status", "aria-live": "polite" }, "ready");
  const cancel = h("button", { type: "button", id: "cancel", disabled: true }, "Cancel");
  const progress = h("progress", { id: "progress", max: 1, value: 0, "aria-label": "progress" });
  const progressLabel = h("span", { class: "progress-label", id: "progress-label" });
  const progressBox = h("div", { id: "progress-box", hidden: true }, progress, progressLabel);
  const output = h("div", { class: "output", id: "output", "aria-live": "polite" });
  const metrics = h("p", { class: "metrics", id: "metrics" });
  const runError = h("pre", { class: "error", id: "run-error", role: "alert", hidden: true });
  const logs = h("pre", { class: "logs", id: "logs", tabindex: 0, "aria-label": "logs" });
  const formError = h("p", { class: "error", id: "form-error", role: "alert", hidden: true });
  const run = h("button", { type: "submit", class: "primary", id: "run" }, config.mode === "train" ? "Train" : "Run");
  const reset = h("button", { type: "button", id: "reset" }, "Reset");
  const formEl = h("form", { novalidate: true, id: "form", "aria-labelledby": "input-heading" }, form.render(),
                   h("div", { class: "actions" }, run, reset), formError);

  const codeLangs = ["Node.js", "Python", "curl"];
  let codeLang = codeLangs[0];
  const code = h("code", { id: "code" });
  const copy = h("button", { type: "button", id: "copy" }, "Copy");
  const langSelect = h("select", { id: "code-lang", "aria-label": "Language" }, codeLangs.map((l) => h("option", { value: l }, l)));
  const outputPanel = h("div", { id: "panel-output", role: "tabpanel", "aria-labelledby": "tab-output" },
    h("p", {}, "Status: ", status, " ", cancel), progressBox, output, metrics, runError,
    h("details", { open: true }, h("summary", {}, "Logs"), logs));
  const codePanel = h("div", { id: "panel-code", role: "tabpanel", "aria-labelledby": "tab-code", hidden: true },
    h("div", { class: "code-head" }, langSelect, copy), h("pre", {}, code));

  const refreshCode = () => { code.textContent = snippets(config, form.values(), location.origin)[codeLang]; };
  langSelect.addEventListener("change", () => { codeLang = langSelect.value; refreshCode(); });
  formEl.addEventListener("input", refreshCode);
  formEl.addEventListener("change", () => setTimeout(refreshCode, 50));  // picked files are read asynchronously
  copy.addEventListener("click", async () => {
    try { await navigator.clipboard.writeText(code.textContent); copy.textContent = "Copied"; }
    catch { copy.textContent = "Select the text to copy"; }
    setTimeout(() => { copy.textContent = "Copy"; }, 1500);
  });

  clear(app).append(
    h("h1", {}, info.title),
    h("p", { class: "sub" }, info.description || "", info.version ? ` Version ${info.version.slice(0, 12)}.` : ""),
    h("div", { class: "layout" },
      h("section", { "aria-labelledby": "input-heading" }, h("h2", { id: "input-heading" }, "Input"), formEl),
      h("section", { class: "panel", "aria-label": "Result" },
        tabs(["Output", "Code"], (name) => { outputPanel.hidden = name !== "Output"; codePanel.hidden = name !== "Code"; if (name === "Code") refreshCode(); }),
        outputPanel, codePanel)));
  refreshCode();

  let current = null, partial = "", stream = null;
  const setStatus = (s) => { status.textContent = s; status.className = `status ${s}`; };
  const showProgress = (p) => {
    progressBox.hidden = false;
    progress.max = p.total || 1;
    progress.value = Math.min(p.done, p.total);
    progressLabel.textContent = `${p.label ? p.label + ": " : ""}${p.done}/${p.total}${p.detail ? " " + p.detail : ""}`;
  };
  const end = () => { current = null; cancel.disabled = true; run.disabled = false; };

  formEl.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); formEl.requestSubmit(); }
  });
  reset.addEventListener("click", () => { location.reload(); });
  cancel.addEventListener("click", async () => {
    if (!current) return;
    cancel.disabled = true;
    setStatus("canceling");
    await current.cancel();
  });

  formEl.addEventListener("submit", (e) => {
    e.preventDefault();
    if (current) return;
    form.clearErrors();
    formError.hidden = true;
    runError.hidden = true;
    clear(output);
    delete output.dataset.pieces;
    logs.textContent = "";
    metrics.textContent = "";
    progressBox.hidden = true;
    partial = "";
    stream = kind === "text-stream" ? new TextStream(output) : null;
    run.disabled = true;
    setStatus("starting");
    let items = 0;
    current = transport.run(form.values(), {
      start() { setStatus("processing"); cancel.disabled = false; },
      log(text) {
        logs.append(document.createTextNode(text));
        logs.scrollTop = logs.scrollHeight;
        const lines = (partial + text).split(/\r|\n/);
        partial = lines.pop();
        for (const line of lines) { const p = parseProgress(line); if (p) showProgress(p); }
      },
      output(chunk) {
        if (stream && typeof chunk === "string") stream.append(chunk);
        else if (kind === "iterator") output.append(valueItem(chunk, items++));
      },
      done(body) {
        setStatus(body.status);
        if (body.status === "succeeded") {
          if (!progressBox.hidden) progress.value = progress.max;
          renderOutput(output, body.output, kind);
          if (stream) output.dataset.pieces = String(stream.pieces);
        }
        if (body.error) { runError.textContent = body.error; runError.hidden = false; }
        if (!logs.textContent && body.logs) logs.textContent = body.logs;
        metrics.textContent = metricsText(body);
        end();
      },
      invalid(errors) {
        setStatus("invalid input");
        const rest = form.showErrors(errors);
        if (rest.length) { formError.textContent = rest.join("\n"); formError.hidden = false; }
        end();
      },
      error(message) {
        setStatus("error");
        runError.textContent = message;
        runError.hidden = false;
        end();
      },
    });
  });
}
