// The same call as code, with the form's current input: Node.js, Python and curl.
// Picked files become reads of a file of that name; secrets come from the environment.
import { FileRef, SecretRef } from "./form.js";

const envName = (name) => name.toUpperCase().replace(/[^A-Z0-9]+/g, "_");
const indent = (text, pad) => text.split("\n").join("\n" + pad);

function literal(value, lang, pad = "") {
  const inner = pad + "  ";
  if (value instanceof FileRef) return lang.file(value);
  if (value instanceof SecretRef) return lang.secret(value);
  if (Array.isArray(value)) {
    if (!value.length) return "[]";
    return `[\n${value.map((v) => inner + literal(v, lang, inner)).join(",\n")}\n${pad}]`;
  }
  if (value && typeof value === "object") {
    const entries = Object.entries(value);
    if (!entries.length) return "{}";
    return `{\n${entries.map(([k, v]) => `${inner}${lang.key(k)}: ${literal(v, lang, inner)}`).join(",\n")}\n${pad}}`;
  }
  if (typeof value === "string" && lang.string) return lang.string(value);
  if (value === null) return lang.null;
  if (typeof value === "boolean") return value ? lang.true : lang.false;
  return JSON.stringify(value);
}

const JS = { key: (k) => (/^[A-Za-z_$][\w$]*$/.test(k) ? k : JSON.stringify(k)), null: "null", true: "true", false: "false" };
const PY = { key: JSON.stringify, null: "None", true: "True", false: "False", secret: (s) => `os.environ[${JSON.stringify(envName(s.name))}]` };
const CURL = { key: JSON.stringify, null: "null", true: "true", false: "false",
               secret: (s) => `"'"$${envName(s.name)}"'"`,
               // inside the single-quoted -d '...' body
               string: (s) => JSON.stringify(s).replace(/'/g, `'"'"'`),
               file: (f) => `"data:${mime(f)};base64,'"$(base64 -w0 ${f.name.replace(/[^\w.-]/g, "_")})"'"` };

function mime(file) { return file.dataUrl.slice(5, file.dataUrl.indexOf(";")) || "application/octet-stream"; }

function uses(input, cls) {
  return Object.values(input).flat().some((v) => v instanceof cls);
}

export function snippets(config, input, origin) {
  return config.kind === "hub" ? hubSnippets(config, input, origin) : cogSnippets(config, input, origin);
}

function hubSnippets(config, input, origin) {
  const node = { ...JS, file: (f) => `await readFile(${JSON.stringify(f.name)})`, secret: (s) => `process.env.${envName(s.name)}` };
  const py = { ...PY, file: (f) => `open(${JSON.stringify(f.name)}, "rb")` };
  const files = uses(input, FileRef);
  return {
    "Node.js": [
      `import Replicate from "replicate";`,
      files ? `import { readFile } from "node:fs/promises";` : null,
      ``,
      `const replicate = new Replicate({ baseUrl: "${origin}/v1" }); // token from REPLICATE_API_TOKEN`,
      `const input = ${literal(input, node)};`,
      `const output = await replicate.run("${config.model}", { input });`,
      `console.log(output);`,
    ].filter((l) => l !== null).join("\n"),
    Python: [
      uses(input, SecretRef) ? `import os\n` : null,
      `import replicate`,
      ``,
      `client = replicate.Client(base_url="${origin}")  # token from REPLICATE_API_TOKEN`,
      `output = client.run(`,
      `    "${config.model}",`,
      `    input=${indent(literal(input, py), "    ")},`,
      `)`,
      `print(output)`,
    ].filter((l) => l !== null).join("\n"),
    curl: [
      `curl -s -X POST ${origin}/v1/models/${config.model}/predictions \\`,
      `  -H "Authorization: Bearer $REPLICATE_API_TOKEN" \\`,
      `  -H "Content-Type: application/json" -H "Prefer: wait" \\`,
      `  -d '{"input": ${indent(literal(input, CURL), "  ")}}'`,
    ].join("\n"),
  };
}

function cogSnippets(config, input, origin) {
  const noun = config.mode === "train" ? "trainings" : "predictions";
  const node = { ...JS, file: (f) => `"data:${mime(f)};base64," + (await readFile(${JSON.stringify(f.name)})).toString("base64")`,
                 secret: (s) => `process.env.${envName(s.name)}` };
  const py = { ...PY, file: (f) => `"data:${mime(f)};base64," + base64.b64encode(open(${JSON.stringify(f.name)}, "rb").read()).decode()` };
  const files = uses(input, FileRef);
  const imports = [files ? "base64" : null, uses(input, SecretRef) ? "os" : null].filter(Boolean);
  return {
    "Node.js": [
      files ? `import { readFile } from "node:fs/promises";\n` : null,
      `const input = ${literal(input, node)};`,
      `const response = await fetch("${origin}/${noun}", {`,
      `  method: "POST",`,
      `  headers: { "Content-Type": "application/json" },`,
      `  body: JSON.stringify({ input }),`,
      `});`,
      `const prediction = await response.json();`,
      `console.log(prediction.status, prediction.output);`,
    ].filter((l) => l !== null).join("\n"),
    Python: [
      ...imports.map((m) => `import ${m}`),
      `import httpx`,
      ``,
      `input = ${literal(input, py)}`,
      `prediction = httpx.post("${origin}/${noun}", json={"input": input}, timeout=None).json()`,
      `print(prediction["status"], prediction["output"])`,
    ].join("\n"),
    curl: [
      `curl -s -X POST ${origin}/${noun} \\`,
      `  -H "Content-Type: application/json" \\`,
      `  -d '{"input": ${indent(literal(input, CURL), "  ")}}'`,
    ].join("\n"),
  };
}
