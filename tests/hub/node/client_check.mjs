// Drives the official replicate npm client (1.4.0), unchanged but for baseUrl, against a
// running cogkit hub. Prints one JSON object: check name -> {ok, value} or {ok: false, error}.
// Usage: node client_check.mjs HUB_URL TOKEN  (tests/hub/test_npm_client.py runs it)
import { webcrypto } from "node:crypto";
import { createServer } from "node:http";
import { mkdtemp, readFile, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Replicate from "replicate";
import { validateWebhook, parseProgressFromLogs } from "replicate";

const [hub, token] = process.argv.slice(2);
const replicate = new Replicate({ auth: token, baseUrl: `${hub}/v1` });
const results = {};

async function check(name, fn) {
  try {
    results[name] = { ok: true, value: await fn() };
  } catch (e) {
    results[name] = { ok: false, error: String((e && e.message) || e) };
  }
}

await check("run_text", () => replicate.run("acme/hello", { input: { text: "npm" } }));

await check("run_file_quickstart", async () => {
  // the quickstart's way of saving an image output
  const output = await replicate.run("acme/image", { input: { width: 3, height: 2 } });
  const dir = await mkdtemp(join(tmpdir(), "hub-npm-"));
  await writeFile(join(dir, "output_0.png"), output);
  const bytes = await readFile(join(dir, "output_0.png"));
  const blob = await output.blob();
  return { head: bytes.subarray(0, 8).toString("hex"), url: String(output.url()).slice(0, 22), type: blob.type };
});

await check("run_list_of_files", async () => {
  const outputs = await replicate.run("acme/files", { input: { count: 2 } });
  return Promise.all(outputs.map(async (o) => (await o.blob()).text()));
});

await check("run_token_list", () => replicate.run("acme/concat", { input: { count: 3 } }));

await check("stream", async () => {
  const events = [];
  for await (const event of replicate.stream("acme/concat", { input: { count: 4, sleep: 0.02 } })) {
    events.push([event.event, event.data]);
  }
  return events;
});

await check("predictions", async () => {
  const created = [];
  for (let i = 0; i < 5; i++) {
    created.push(await replicate.predictions.create({ model: "acme/hello", input: { text: `n${i}` } }));
  }
  const waited = [];
  for (const p of created) waited.push((await replicate.wait(p)).output);
  const got = await replicate.predictions.get(created[0].id);
  const listed = [];
  let pages = 0;
  for await (const page of replicate.paginate(replicate.predictions.list)) {
    pages += 1;
    listed.push(...page.map((p) => p.id));
  }
  const ids = created.map((p) => p.id);
  return {
    waited, got: got.output, pages,
    order: listed.filter((id) => ids.includes(id)).join() === [...ids].reverse().join(),
    unique: new Set(listed).size === listed.length,
  };
});

await check("cancel", async () => {
  const p = await replicate.predictions.create({ model: "acme/slow", input: { seconds: 20 } });
  await new Promise((r) => setTimeout(r, 300));
  const canceled = await replicate.predictions.cancel(p.id);
  const final = await replicate.wait(canceled);
  return final.status;
});

await check("wait_timeout_starting", async () => {
  const p = await replicate.predictions.create({ model: "acme/slow", input: { seconds: 2.5 }, wait: 1 });
  const out = await replicate.run("acme/slow", { input: { seconds: 1.5 }, wait: { mode: "block", timeout: 1 } });
  return { status: p.status, out };
});

await check("models", async () => {
  const model = await replicate.models.get("acme", "hello");
  const versions = await replicate.models.versions.list("acme", "hello");
  const version = await replicate.models.versions.get("acme", "hello", model.latest_version.id);
  const byVersion = await replicate.run(`acme/hello:${version.id}`, { input: { text: "v" } });
  const search = await replicate.models.search("hello");
  return { name: model.name, count: versions.results.length, same: versions.results[0].id === version.id,
           byVersion, search: search.results.map((m) => m.name) };
});

await check("buffer_input", () => replicate.run("acme/filesize", { input: { file: Buffer.from("npm bytes") } }));

await check("files", async () => {
  const file = await replicate.files.create(new Blob(["hello file"], { type: "text/plain" }), { purpose: "test" });
  const got = await replicate.files.get(file.id);
  const list = await replicate.files.list();
  const out = await replicate.run("acme/filesize", { input: { file: file.urls.get } });
  await replicate.files.delete(file.id);
  return { size: got.size, metadata: got.metadata, listed: list.results.some((f) => f.id === file.id), out };
});

await check("progress", async () => {
  const seen = [];
  await replicate.run("acme/progress", { input: { steps: 4, delay: 0.3 }, wait: { mode: "poll", interval: 100 } },
    (prediction) => {
      const progress = parseProgressFromLogs(prediction);
      if (progress) seen.push(`${progress.current}/${progress.total}`);
    });
  return seen;
});

await check("webhook", async () => {
  const received = [];
  const server = createServer((req, res) => {
    let body = "";
    req.on("data", (c) => (body += c));
    req.on("end", () => {
      received.push({ headers: req.headers, body });
      res.end("ok");
    });
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  const url = `http://127.0.0.1:${server.address().port}/hook`;
  const secret = await replicate.webhooks.default.secret.get();
  await replicate.run("acme/hello", { input: { text: "hook" }, webhook: url, webhook_events_filter: ["completed"] });
  for (let i = 0; i < 100 && received.length === 0; i++) await new Promise((r) => setTimeout(r, 100));
  server.close();
  const call = received[0];
  const request = new Request(url, { method: "POST", headers: call.headers, body: call.body });
  // webcrypto passed explicitly: Debian's Node 18 has no globalThis.crypto
  const valid = await validateWebhook(request, secret.key, webcrypto);
  let tampered;
  try {
    tampered = await validateWebhook({ id: call.headers["webhook-id"], timestamp: call.headers["webhook-timestamp"],
      signature: call.headers["webhook-signature"], body: call.body + " ", secret: secret.key }, webcrypto);
  } catch (e) {
    tampered = `threw: ${e.message}`;
  }
  return { valid, tampered, status: JSON.parse(call.body).status };
});

await check("wrong_token", async () => {
  const bad = new Replicate({ auth: "wrong", baseUrl: `${hub}/v1` });
  try {
    await bad.models.get("acme", "hello");
    return "no error";
  } catch (e) {
    return { name: e.name, status: e.response && e.response.status, mentions: e.message.includes("authentication") };
  }
});

await check("invalid_input", async () => {
  try {
    await replicate.run("acme/hello", { input: { text: 3 } });
    return "no error";
  } catch (e) {
    return { status: e.response && e.response.status, mentions: e.message.includes("input.text") };
  }
});

await check("account_hardware", async () => {
  const account = await replicate.accounts.current();
  const hardware = await replicate.hardware.list();
  return { username: account.username, first: hardware[0].sku };
});

console.log(JSON.stringify(results));
