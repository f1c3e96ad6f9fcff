// The input form, generated from the model's OpenAPI schema (components.schemas.Input, or
// TrainingInput), in x-order. Every control has a label and its constraint as help text;
// native validation is off so the server's own 422 message shows next to its field.
import { h, clear } from "./dom.js";

const LONG_TEXT = /prompt|text|message|caption|description|system|question|content/i;

export class FileRef {
  // A file the user picked: sent as a data URL, shown in the code as a file of that name.
  constructor(name, dataUrl) { this.name = name; this.dataUrl = dataUrl; }
}

export class SecretRef {
  // A secret: sent as typed, but shown in code as an environment variable.
  constructor(name, value) { this.name = name; this.value = value; }
}

export function inputFields(openapi, component) {
  const schemas = (openapi.components && openapi.components.schemas) || {};
  const input = schemas[component] || { properties: {} };
  const required = new Set(input.required || []);
  return Object.entries(input.properties || {})
    .map(([name, prop]) => describe(name, prop, schemas, required.has(name)))
    .sort((a, b) => a.order - b.order || a.name.localeCompare(b.name));
}

function describe(name, prop, schemas, required) {
  let p = prop;
  const ref = (prop.allOf && prop.allOf[0] && prop.allOf[0].$ref) || prop.$ref;
  if (ref) {
    const target = schemas[ref.split("/").pop()] || {};
    p = { ...target, ...prop, title: prop.title, description: prop.description };
  }
  let kind;
  if (Array.isArray(p.enum)) kind = "select";
  else if (p.type === "boolean") kind = "switch";
  else if (p["x-cog-secret"] || p.format === "password") kind = "secret";
  else if (p.format === "uri") kind = "file";
  else if (p.type === "array") kind = p.items && p.items.format === "uri" ? "files" : "list";
  else if (p.type === "integer" || p.type === "number") kind = "number";
  else if (p.type === "object") kind = "json";
  else kind = LONG_TEXT.test(name) || (p.maxLength || 0) > 200 ? "textarea" : "text";
  return { name, prop: p, kind, required, title: p.title || titleCase(name),
           order: typeof p["x-order"] === "number" ? p["x-order"] : 1e9 };
}

function titleCase(name) {
  return name.replace(/_/g, " ").replace(/\b\w/g, (c) => c.toUpperCase());
}

function constraint(f) {
  const p = f.prop, parts = [];
  const lo = p.minimum ?? p.exclusiveMinimum, hi = p.maximum ?? p.exclusiveMaximum;
  if (lo !== undefined && hi !== undefined) parts.push(`between ${lo} and ${hi}`);
  else if (lo !== undefined) parts.push(`at least ${lo}`);
  else if (hi !== undefined) parts.push(`at most ${hi}`);
  if (p.minLength !== undefined && p.maxLength !== undefined) parts.push(`${p.minLength}–${p.maxLength} characters`);
  else if (p.minLength !== undefined) parts.push(`at least ${p.minLength} characters`);
  else if (p.maxLength !== undefined) parts.push(`at most ${p.maxLength} characters`);
  if (p.pattern) parts.push(`matching ${p.pattern}`);
  if (f.kind === "select") parts.push(`one of ${p.enum.join(", ")}`);
  if (f.kind === "file" || f.kind === "files") parts.push(p["x-cog-accept"] ? `accepts ${p["x-cog-accept"]}` : "a file or an http(s) URL");
  return parts.join("; ");
}

function typeName(f) {
  const p = f.prop;
  if (f.kind === "select") return typeof p.enum[0] === "number" ? (p.type || "number") : "string";
  if (f.kind === "file") return "file";
  if (f.kind === "files") return "files";
  if (f.kind === "secret") return "secret";
  if (f.kind === "list") return `list of ${(p.items && p.items.type) || "string"}`;
  return p.type || "string";
}

function readDataUrl(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

// One control per kind: build(field, id) -> {el, read(): value | undefined}
const CONTROLS = {
  text(f, id, attrs) {
    const el = h("input", { type: "text", ...attrs, value: f.prop.default ?? "" });
    return { el, read: () => textValue(f, el.value) };
  },
  textarea(f, id, attrs) {
    const el = h("textarea", attrs);
    el.value = f.prop.default ?? "";
    return { el, read: () => textValue(f, el.value) };
  },
  secret(f, id, attrs) {
    const el = h("input", { type: "password", ...attrs, autocomplete: "off" });
    return { el, read: () => (el.value === "" ? undefined : new SecretRef(f.name, el.value)) };
  },
  number(f, id, attrs) {
    const p = f.prop, integer = p.type === "integer";
    const lo = p.minimum ?? p.exclusiveMinimum, hi = p.maximum ?? p.exclusiveMaximum;
    const num = h("input", { type: "number", ...attrs, min: lo, max: hi, step: integer ? 1 : "any",
                             value: p.default ?? "", inputmode: integer ? "numeric" : "decimal" });
    const read = () => (num.value === "" ? undefined : integer && /^-?\d+$/.test(num.value) ? parseInt(num.value, 10) : Number(num.value));
    if (lo === undefined || hi === undefined) return { el: num, read };
    const slider = h("input", { type: "range", min: lo, max: hi, step: integer ? 1 : (hi - lo) / 100 || "any",
                                value: p.default ?? lo, "aria-label": `${f.title} (slider)`, tabindex: -1 });
    slider.addEventListener("input", () => { num.value = slider.value; });
    num.addEventListener("input", () => { if (num.value !== "") slider.value = num.value; });
    return { el: h("div", { class: "range" }, num, slider), read };
  },
  select(f, id, attrs) {
    const p = f.prop, hasDefault = p.default !== undefined && p.default !== null;
    const el = h("select", attrs,
      hasDefault ? null : h("option", { value: "" }, "—"),
      p.enum.map((v, i) => h("option", { value: String(i), selected: v === p.default }, String(v))));
    return { el, read: () => (el.value === "" ? undefined : p.enum[Number(el.value)]) };
  },
  switch(f, id, attrs) {
    const el = h("input", { type: "checkbox", role: "switch", ...attrs, checked: f.prop.default === true });
    const label = h("label", { class: "switch" }, el, h("span", {}, el.checked ? "on" : "off"));
    el.addEventListener("change", () => { label.lastChild.textContent = el.checked ? "on" : "off"; });
    return { el: label, read: () => el.checked, focus: el };
  },
  json(f, id, attrs) {
    const el = h("textarea", attrs);
    if (f.prop.default !== undefined) el.value = JSON.stringify(f.prop.default, null, 2);
    return { el, read: () => { if (el.value.trim() === "") return undefined; try { return JSON.parse(el.value); } catch { return el.value; } } };
  },
  file(f, id, attrs) { return fileControl(f, attrs, false); },
  files(f, id, attrs) { return fileControl(f, attrs, true); },
  list(f, id, attrs) {
    const itemType = (f.prop.items && f.prop.items.type) || "string";
    const rows = h("div", { class: "list-rows", id: attrs.id, "aria-describedby": attrs["aria-describedby"] });
    const add = (value) => {
      const n = rows.children.length + 1;
      const input = h("input", { type: itemType === "string" ? "text" : "number", step: itemType === "integer" ? 1 : "any",
                                 "aria-label": `${f.title} item ${n}` });
      input.value = value ?? "";
      const remove = h("button", { type: "button", "aria-label": `Remove ${f.title} item ${n}`,
                                   onclick: () => row.remove() }, "−");
      const row = h("div", { class: "list-row" }, input, remove);
      rows.append(row);
      return input;
    };
    (Array.isArray(f.prop.default) ? f.prop.default : []).forEach(add);
    const more = h("button", { type: "button", onclick: () => add("").focus() }, `Add ${f.title.toLowerCase()} item`);
    const read = () => {
      const values = [...rows.querySelectorAll("input")].map((i) => i.value).filter((v) => v !== "");
      return itemType === "string" ? values : values.map(Number);
    };
    return { el: h("div", {}, rows, more), read };
  },
};

function textValue(f, value) {
  if (value !== "") return value;
  // an emptied field with a real default means "empty" (a blank negative prompt); else leave it out
  return typeof f.prop.default === "string" && f.prop.default !== "" ? "" : undefined;
}

function fileControl(f, attrs, multiple) {
  const accept = f.prop["x-cog-accept"] || (/image|photo|img|mask/i.test(f.name) ? "image/*" : undefined);
  const picker = h("input", { type: "file", ...attrs, accept, multiple });
  const url = multiple ? null : h("input", { type: "url", placeholder: "or an https:// URL", "aria-label": `${f.title} URL` });
  const previews = h("div", { class: "previews", "aria-live": "polite" });
  let picked = [];
  picker.addEventListener("change", async () => {
    clear(previews);
    picked = await Promise.all([...picker.files].map(async (file) => new FileRef(file.name, await readDataUrl(file))));
    for (const ref of picked) {
      previews.append(ref.dataUrl.startsWith("data:image/") ? h("img", { src: ref.dataUrl, alt: `preview of ${ref.name}` })
                                                            : h("span", {}, ref.name));
    }
    if (url) url.value = "";
  });
  const read = () => {
    if (url && url.value.trim()) return url.value.trim();
    if (multiple) return picked.length ? picked : undefined;
    return picked[0];
  };
  return { el: h("div", {}, h("div", { class: "file-row" }, picker, url), previews), read, focus: picker };
}

export class InputForm {
  constructor(fields) {
    this.fields = fields;
    this.controls = new Map();
    this.errors = new Map();
  }

  render() {
    const main = [], more = [];
    for (const f of this.fields) (f.prop.deprecated ? more : main).push(this.field(f));
    return h("div", { class: "fields" }, main,
      more.length ? h("details", { class: "more" }, h("summary", {}, `More inputs (${more.length} deprecated)`), more) : null);
  }

  field(f) {
    const id = `input-${f.name}`, help = `help-${f.name}`, err = `error-${f.name}`;
    const p = f.prop;
    const attrs = { id, name: f.name, "aria-describedby": `${help} ${err}`,
                    minlength: p.minLength, maxlength: p.maxLength, pattern: p.pattern };
    const control = CONTROLS[f.kind](f, id, attrs);
    this.controls.set(f.name, control);
    const errorEl = h("p", { class: "error", id: err, hidden: true });
    this.errors.set(f.name, errorEl);
    const description = [p.description, constraint(f)].filter(Boolean).join(" — ");
    const label = f.kind === "list" ? h("span", { class: "label", id: `label-${f.name}` }, f.title)
                                    : h("label", { for: id }, f.title);
    label.append(f.required ? h("span", { class: "req", "aria-label": "required" }, "*") : "",
                 h("span", { class: "type" }, typeName(f)));
    return h("div", { class: "field", dataset: { name: f.name, kind: f.kind } },
             label, control.el, description ? h("p", { class: "help", id: help }, description) : h("span", { id: help }), errorEl);
  }

  values() {
    const out = {};
    for (const [name, control] of this.controls) {
      const value = control.read();
      if (value !== undefined) out[name] = value;
    }
    return out;
  }

  clearErrors() {
    for (const el of this.errors.values()) {
      el.hidden = true;
      el.textContent = "";
      const fieldEl = el.closest(".field");
      fieldEl.classList.remove("invalid");
      for (const bad of fieldEl.querySelectorAll("[aria-invalid]")) bad.removeAttribute("aria-invalid");
    }
  }

  // errors: [{field, message}] -> those that name no known field are returned
  showErrors(errors) {
    const rest = [];
    let first = null;
    for (const { field, message } of errors) {
      const el = this.errors.get(field);
      if (!el) { rest.push(field ? `${field}: ${message}` : message); continue; }
      el.textContent = el.textContent ? `${el.textContent}; ${message}` : message;
      el.hidden = false;
      const fieldEl = el.closest(".field");
      fieldEl.classList.add("invalid");
      const details = fieldEl.closest("details");
      if (details) details.open = true;
      const c = this.controls.get(field);
      const focusable = c.focus || fieldEl.querySelector("input, textarea, select");
      if (focusable) focusable.setAttribute("aria-invalid", "true");
      first = first || focusable;
    }
    if (first) first.focus();
    return rest;
  }
}
