// Outputs rendered by what the schema says they are (components.schemas.Output) and by
// what each value looks like: images, video, audio, download links, text, JSON.
import { h, clear } from "./dom.js";

const IMAGE = /\.(png|jpe?g|webp|gif|avif|bmp|svg)(\?|$)/i;
const VIDEO = /\.(mp4|webm|mov|m4v)(\?|$)/i;
const AUDIO = /\.(wav|mp3|ogg|flac|m4a|aac)(\?|$)/i;

export function outputKind(openapi) {
  const out = (openapi.components && openapi.components.schemas && openapi.components.schemas.Output) || {};
  if (out.type === "array") {
    if (out["x-cog-array-display"] === "concatenate") return "text-stream";
    return out["x-cog-array-type"] === "iterator" ? "iterator" : "list";
  }
  if (out.type === "string" && out.format !== "uri") return "text";
  return "value";
}

export function isUrl(v) {
  return typeof v === "string" && /^(data:|https?:\/\/|blob:)/.test(v);
}

export function mediaOf(url) {
  const mime = url.startsWith("data:") ? url.slice(5, url.indexOf(";")) : "";
  if (mime.startsWith("image/") || (!mime && IMAGE.test(url))) return "image";
  if (mime.startsWith("video/") || (!mime && VIDEO.test(url))) return "video";
  if (mime.startsWith("audio/") || (!mime && AUDIO.test(url))) return "audio";
  return "file";
}

function extension(url) {
  if (url.startsWith("data:")) {
    const sub = url.slice(5, url.indexOf(";")).split("/")[1] || "bin";
    return sub.replace("jpeg", "jpg").replace("plain", "txt").split("+")[0];
  }
  const m = url.split("?")[0].match(/\.([a-z0-9]{1,8})$/i);
  return m ? m[1] : "bin";
}

function fileItem(url, index) {
  const kind = mediaOf(url);
  const name = `output_${index}.${extension(url)}`;
  const media = kind === "image" ? h("img", { src: url, alt: `output ${index}` })
    : kind === "video" ? h("video", { src: url, controls: true, "aria-label": `output ${index}` })
    : kind === "audio" ? h("audio", { src: url, controls: true, "aria-label": `output ${index}` })
    : null;
  return h("div", { class: "item", dataset: { kind } }, media,
           h("a", { href: url, download: name }, kind === "file" ? `Download ${name}` : `Download`));
}

export function valueItem(value, index) {
  if (isUrl(value)) return fileItem(value, index);
  if (typeof value === "string") return h("pre", { class: "text" }, value);
  const json = h("pre", { class: "json" }, JSON.stringify(value, null, 2));
  // files inside a structured output are shown too, below its JSON
  const files = value && typeof value === "object"
    ? Object.values(value).flat().filter(isUrl).map((url, i) => fileItem(url, `${index}_${i}`)) : [];
  return h("div", { class: "item" }, json, files);
}

export function renderOutput(el, output, kind) {
  clear(el);
  if (output === null || output === undefined) return;
  if (kind === "text-stream" && Array.isArray(output) && output.every((v) => typeof v === "string" && !isUrl(v))) {
    el.append(h("pre", { class: "text" }, output.join("")));
  } else if (Array.isArray(output)) {
    output.forEach((v, i) => el.append(valueItem(v, i)));
  } else {
    el.append(valueItem(output, 0));
  }
}

// Live text for a token stream: pieces are appended to one text node as they arrive.
export class TextStream {
  constructor(el) { this.el = el; this.pre = null; this.pieces = 0; }
  append(text) {
    if (!this.pre) { clear(this.el); this.pre = h("pre", { class: "text" }); this.el.append(this.pre); }
    this.pre.append(document.createTextNode(text));
    this.pieces += 1;
    this.el.dataset.pieces = String(this.pieces);
  }
}

// cogkit's "[progress] label: i/n detail" lines, and tqdm's "NN%|###   | i/n [...]" (the hub's logs)
const COGKIT_PROGRESS = /^\[progress\] ([^:]+): (\d+)\/(\d+)(?:\s+(.*))?$/;
const TQDM = /(\d+)%\|[^|]*\|\s*(\d+)\/(\d+)(?:\s*\[([^\]]*)\])?/;

export function parseProgress(line) {
  let m = line.match(COGKIT_PROGRESS);
  if (m) return { label: m[1], done: +m[2], total: +m[3], detail: m[4] || "" };
  m = line.match(TQDM);
  if (m) return { label: "", done: +m[2], total: +m[3], detail: m[4] || "" };
  return null;
}

export function metricsText(body) {
  const m = body.metrics || {};
  const parts = [];
  if (typeof m.predict_time === "number") parts.push(`predict time ${m.predict_time.toFixed(2)} s`);
  if (typeof m.total_time === "number") parts.push(`total ${m.total_time.toFixed(2)} s`);
  for (const [k, v] of Object.entries(m)) {
    if (k === "predict_time" || k === "total_time") continue;
    if (typeof v === "number" && k.endsWith("_time")) parts.push(`${k.replace(/_/g, " ")} ${v.toFixed(2)} s`);
    else if (typeof v === "number" || typeof v === "string") parts.push(`${k.replace(/_/g, " ")} ${v}`);
  }
  return parts.join(" · ");
}
