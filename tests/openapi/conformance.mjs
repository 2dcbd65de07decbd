// A real mqd's answers against mqd/openapi.json: every route is called, with successes and the errors
// that can be provoked on one machine (400, 401, 404, 405, 409, 413, 421, 431, 503), and every answer
// must be a status the document lists for that operation, with a documented media type, the headers
// the document requires, and a body that its JSON Schema (2020-12, Ajv) accepts; events of /consume
// must match its event schema. Request bodies are checked the other way: what mqd accepts the schema
// accepts, and what mqd refuses as a bad body the schema refuses. Run by npm_tool.py conformance:
//   node conformance.mjs --mqd <mqd> --document <openapi.json> --node-modules <dir with ajv>
import { spawn } from "node:child_process";
import fs from "node:fs";
import { createRequire } from "node:module";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { freePort } from "../support/free_port.mjs";

const { values: args } = parseArgs({
  options: { mqd: { type: "string" }, document: { type: "string" }, "node-modules": { type: "string" } },
});
for (const name of ["mqd", "document", "node-modules"]) {
  if (!args[name]) throw new Error(`--${name} is required`);
}
const require = createRequire(path.join(path.dirname(path.resolve(args["node-modules"])), "package.json"));
const Ajv2020 = require("ajv/dist/2020").default;
const addFormats = require("ajv-formats").default ?? require("ajv-formats");

const doc = JSON.parse(fs.readFileSync(args.document, "utf8"));
const failures = [];
let checks = 0;
function check(condition, what) {
  checks++;
  if (!condition) {
    failures.push(what);
    console.log(`FAILED: ${what}`);
  }
  return condition;
}

// ------------------------------------------------------------------ the document's schemas
// The components' schemas as one JSON Schema ($defs), their $refs pointed there.
function rewrite(value) {
  if (Array.isArray(value)) return value.map(rewrite);
  if (value && typeof value === "object") {
    const out = {};
    for (const [k, v] of Object.entries(value)) {
      out[k] = k === "$ref" && typeof v === "string" ? v.replace("#/components/schemas/", "mqd#/$defs/") : rewrite(v);
    }
    return out;
  }
  return value;
}
const ajv = new Ajv2020({ allErrors: true, strict: true, strictTypes: false, strictTuples: false });
addFormats(ajv);
ajv.addFormat("int64", { type: "number", validate: (n) => Number.isSafeInteger(n) || Number.isInteger(n) });
ajv.addVocabulary(["example", "discriminator", "xml", "externalDocs"]);  // OpenAPI's own schema keywords
ajv.addSchema({ $id: "mqd", $defs: rewrite(doc.components.schemas) });
const compiled = new Map();
function validator(schema) {
  const key = JSON.stringify(schema);
  if (!compiled.has(key)) compiled.set(key, ajv.compile(rewrite(schema)));
  return compiled.get(key);
}
function validate(schema, value) {
  const v = validator(schema);
  return v(value) ? null : ajv.errorsText(v.errors, { dataVar: "body" });
}
function resolve(object) {
  while (object && object.$ref) {
    const parts = object.$ref.replace(/^#\//, "").split("/");
    object = parts.reduce((o, p) => o[p], doc);
  }
  return object;
}

// ------------------------------------------------------------------ mqd
function accepts(port) {
  return new Promise((done) => {
    const socket = net.connect(port, "127.0.0.1");
    socket.once("connect", () => { socket.destroy(); done(true); });
    socket.once("error", () => done(false));
  });
}

const TOKEN = "conformance-token";
const work = fs.mkdtempSync(path.join(os.tmpdir(), "mqd-openapi-"));
const port = await freePort();
const otherPort = await freePort();  // broker 1: named by 421 answers, never started
const base = `http://127.0.0.1:${port}`;
const stderrPath = path.join(work, "mqd.stderr");
const mqd = spawn(args.mqd, [], {
  env: {
    PORT: String(port), HOST: "127.0.0.1", DATA_DIR: path.join(work, "data"), FSYNC: "never",
    TOPICS: "events:2,orders:2", BROKER_COUNT: "2", BROKER_INDEX: "0",
    BROKER_ADDRS: `${base},http://127.0.0.1:${otherPort}`, AUTH_TOKEN: TOKEN, MAX_DELIVERIES: "1",
    MAX_PAYLOAD_BYTES: "1000", MAX_CONNECTIONS: "2", HEARTBEAT_MS: "200",
  },
  stdio: ["ignore", "ignore", fs.openSync(stderrPath, "w")],
});
let mqdExited = false;
mqd.on("exit", () => { mqdExited = true; });
process.on("exit", () => {
  if (!mqdExited) mqd.kill("SIGKILL");
  fs.rmSync(work, { recursive: true, force: true });
});
{
  const deadline = Date.now() + 20000;
  while (!(await accepts(port))) {
    if (mqdExited || Date.now() > deadline) {
      console.log(`FAILED: mqd did not start: ${fs.readFileSync(stderrPath, "utf8")}`);
      process.exit(1);
    }
    await new Promise((r) => setTimeout(r, 20));  // polling a port: there is no event to await
  }
}

// ------------------------------------------------------------------ calling it
const covered = new Map();  // operationId -> set of statuses seen

// The operation of `method` on `pathname`; for a method the route does not take, the route's own
// operation (whose 405 describes the answer).
function operationFor(method, pathname) {
  const item = doc.paths[pathname];
  if (!item) return null;
  return item[method.toLowerCase()] ?? Object.values(item).find((o) => o && o.responses);
}

// Checks an answer against the document; returns the parsed JSON body (or the text).
function conforms(label, method, pathname, status, headers, text) {
  const operation = operationFor(method, pathname);
  if (!check(operation, `${label}: ${pathname} is not in the document`)) return null;
  if (!covered.has(operation.operationId)) covered.set(operation.operationId, new Set());
  covered.get(operation.operationId).add(status);
  const response = resolve(operation.responses[String(status)]);
  if (!check(response, `${label}: status ${status} is not documented for ${operation.operationId}`)) return null;
  for (const [name, header] of Object.entries(response.headers ?? {})) {
    if (resolve(header).required) {
      check(headers.get(name) !== null, `${label}: the documented header ${name} is missing`);
    }
  }
  const type = (headers.get("content-type") ?? "").toLowerCase();
  const media = response.content?.[type];
  if (!check(media, `${label}: Content-Type '${type}' is not documented for ${operation.operationId} ${status} ` +
                    `(documented: ${Object.keys(response.content ?? {}).join(", ")})`)) return null;
  if (type !== "application/json") {
    check(typeof text === "string" && text.length > 0, `${label}: empty ${type} body`);
    return text;
  }
  let body;
  try {
    body = JSON.parse(text);
  } catch (e) {
    check(false, `${label}: the body is not JSON: ${text.slice(0, 200)}`);
    return null;
  }
  const error = validate(media.schema, body);
  check(error === null, `${label}: the body does not match the ${operation.operationId} ${status} schema: ${error}; ` +
                        `body ${text.slice(0, 300)}`);
  return body;
}

// The query parameters of a successful call must be documented, and the required ones present.
function checkParameters(label, method, url) {
  const operation = operationFor(method, url.pathname);
  const parameters = (operation.parameters ?? []).map(resolve);
  for (const p of parameters.filter((p) => p.required && p.in === "query")) {
    check(url.searchParams.has(p.name), `${label}: the required parameter ${p.name} was not needed`);
  }
  for (const [name, value] of url.searchParams) {
    if (name === "access_token") continue;
    const p = parameters.find((q) => q.name === name && q.in === "query");
    if (!check(p, `${label}: the query parameter ${name} is not documented`)) continue;
    const typed = p.schema.type === "integer" || resolve(p.schema).type === "integer" ? Number(value) : value;
    const error = validate(p.schema, typed);
    check(error === null, `${label}: the parameter ${name}=${value} does not match its schema: ${error}`);
  }
}

// The request body against the documented request schema: `expectValid` says whether it must match.
function checkRequestBody(label, method, pathname, body, expectValid) {
  const operation = operationFor(method, pathname);
  const schema = operation.requestBody && resolve(operation.requestBody).content["application/json"].schema;
  if (!check(schema, `${label}: ${operation.operationId} documents no JSON request body`)) return;
  const error = validate(schema, body);
  if (expectValid) check(error === null, `${label}: mqd accepts ${JSON.stringify(body)}, the schema does not: ${error}`);
  else check(error !== null, `${label}: mqd refuses ${JSON.stringify(body)}, the schema accepts it`);
}

// One request; `expect` is the status it must get. `body` (an object) is sent as JSON. With
// `badBody`, mqd must refuse the body with 400 and so must the schema; a body mqd accepts must match
// the schema.
// MAX_CONNECTIONS is 2 here: a stream this test closed counts until mqd notices it is gone (at its
// next write), so a request right after may be refused with the cap's 503 — before mqd read its body,
// which fetch reports as a failure. Such a request is sent again (awaiting the release), unless the
// 503 is what it expects.
async function send(url, init, expect) {
  const deadline = Date.now() + 10000;
  while (true) {
    let answer = null;
    let text = "";
    try {
      answer = await fetch(url, { ...init, signal: AbortSignal.timeout(15000) });
      text = await answer.text();
    } catch (e) {
      if (Date.now() > deadline || e?.cause?.code !== "UND_ERR_REQ_CONTENT_LENGTH_MISMATCH") throw e;
    }
    const capped = answer?.status === 503 && text.includes("too many open connections") && expect !== 503;
    if (answer && (!capped || Date.now() > deadline)) return { answer, text };
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function call(method, target, { body, expect, token = true, badBody = false, headers = {}, rawBody, at = base } = {}) {
  const url = new URL(target, at);
  const label = `${method} ${url.pathname}${url.search}${body !== undefined ? " " + JSON.stringify(body) : ""}`;
  const init = { method, headers: { ...headers } };
  if (token) init.headers.Authorization = `Bearer ${TOKEN}`;
  if (body !== undefined) init.body = JSON.stringify(body);
  if (rawBody !== undefined) init.body = rawBody;
  const { answer, text } = await send(url, init, expect);
  check(answer.status === expect, `${label}: status ${answer.status}, expected ${expect}: ${text.slice(0, 300)}`);
  const parsed = method === "HEAD" ? null : conforms(label, method, url.pathname, answer.status, answer.headers, text);
  if (body !== undefined && (answer.status === 200 || badBody)) {
    checkRequestBody(label, method, url.pathname, body, !badBody);
  }
  if (answer.status === 200) checkParameters(label, method, url);
  return { status: answer.status, headers: answer.headers, body: parsed };
}

// A /consume stream: its events as they come, checked against the event schema.
class Stream {
  constructor(target) {
    this.url = new URL(target, base);
    this.controller = new AbortController();
    this.events = [];
    this.keepalives = 0;
    this.buffer = "";
    this.waiters = [];
  }
  async open() {
    const label = `GET ${this.url.pathname}${this.url.search}`;
    this.answer = await fetch(this.url, { headers: { Authorization: `Bearer ${TOKEN}` },
                                          signal: this.controller.signal });
    if (this.answer.status !== 200) {
      this.body = conforms(label, "GET", this.url.pathname, this.answer.status, this.answer.headers,
                           await this.answer.text());
      return this;
    }
    conforms(label, "GET", this.url.pathname, 200, this.answer.headers, "(stream)");
    checkParameters(label, "GET", this.url);
    const operation = operationFor("GET", this.url.pathname);
    this.eventSchema = resolve(operation.responses["200"]).content["text/event-stream"].schema;
    this.reading = this.read(label);
    return this;
  }
  async read(label) {
    const decoder = new TextDecoder();
    try {
      for await (const chunk of this.answer.body) {
        this.buffer += decoder.decode(chunk, { stream: true });
        let end;
        while ((end = this.buffer.indexOf("\n\n")) >= 0) {
          const block = this.buffer.slice(0, end);
          this.buffer = this.buffer.slice(end + 2);
          this.parse(label, block);
        }
        this.wake();
      }
    } catch (e) {
      if (e.name !== "AbortError") check(false, `${label}: the stream failed: ${e}`);
    }
    this.ended = true;
    this.wake();
  }
  parse(label, block) {
    const lines = block.split("\n");
    if (lines.every((l) => l.startsWith(":"))) {
      check(lines.every((l) => l === ": keepalive"), `${label}: unexpected comment ${JSON.stringify(block)}`);
      this.keepalives++;
      return;
    }
    const fields = {};
    for (const line of lines) {
      const colon = line.indexOf(": ");
      if (!check(colon > 0, `${label}: not an event line: ${JSON.stringify(line)}`)) return;
      fields[line.slice(0, colon)] = line.slice(colon + 2);
    }
    check(Object.keys(fields).sort().join() === "data,id", `${label}: event fields ${Object.keys(fields)}`);
    let event;
    try {
      event = { id: fields.id, data: JSON.parse(fields.data) };
    } catch (e) {
      check(false, `${label}: event data is not JSON: ${fields.data}`);
      return;
    }
    const error = validate(this.eventSchema, event);
    check(error === null, `${label}: the event does not match the ConsumeEvent schema: ${error}; ${block}`);
    this.events.push(event);
  }
  wake() {
    for (const w of this.waiters.splice(0)) w();
  }
  async until(condition, what) {
    const deadline = Date.now() + 15000;
    while (!condition() && !this.ended && Date.now() < deadline) {
      await new Promise((r) => {
        this.waiters.push(r);
        setTimeout(r, Math.max(0, deadline - Date.now()));
      });
    }
    return check(condition(), `GET ${this.url.pathname}${this.url.search}: ${what} did not arrive`);
  }
  async close() {
    this.controller.abort();
    await this.reading;
  }
}

// ------------------------------------------------------------------ the calls
const q = (route, extra = "") => `${route}?topic=events&partition=0${extra}`;
const g = (route, group = "g1") => q(route, `&group=${group}`);

// Public routes, without the token; every other route refuses to answer without it.
await call("GET", "/healthz", { token: false, expect: 200 });
await call("GET", "/openapi.json", { token: false, expect: 200 });
await call("GET", "/ui", { token: false, expect: 200 });
await call("GET", "/ui/console.js", { token: false, expect: 200 });
await call("GET", "/ui/console.css", { token: false, expect: 200 });
await call("POST", q("/produce"), { token: false, body: { payload: 1 }, expect: 401 });
await call("GET", "/topics", { token: false, expect: 401 });
await call("GET", "/metrics", { token: false, expect: 401 });
await call("GET", `/topics?access_token=${TOKEN}`, { token: false, expect: 200 });

// Produce: what mqd takes, the schema takes.
await call("POST", q("/produce"), { body: { payload: { order: 42 }, key: "customer-7" }, expect: 200 });
const first = await call("POST", q("/produce"), {
  body: { payload: { order: 43 }, key: "customer-7", headers: { "trace-id": "abc", "x.y_z-1": "" },
          dedup_id: "order-43" }, expect: 200 });
const again = await call("POST", q("/produce"), { body: { payload: { order: 43 }, dedup_id: "order-43" }, expect: 200 });
check(again.body?.duplicate === true && again.body?.id === first.body?.id, "a repeated dedup_id is answered as a duplicate");
const batch = await call("POST", q("/produce"), {
  body: { messages: [{ payload: 1 }, { payload: [2], key: "k", headers: { h: "v" } }, { payload: 3, dedup_id: "order-43" }] },
  expect: 200 });
check(JSON.stringify(batch.body?.duplicates) === "[2]", "a batch names its duplicates");
await call("POST", q("/produce"), { body: { payload: null }, expect: 200 });
await call("POST", q("/produce"), {
  body: { payload: 1, key: null, headers: null, dedup_id: null, delay_ms: null, deliver_at: null }, expect: 200 });
await call("POST", q("/produce"), { body: { payload: "later", delay_ms: 3600000, deliver_at: null }, expect: 200 });
await call("POST", q("/produce"), { body: { payload: "later too", deliver_at: Date.now() + 3600000 }, expect: 200 });
await call("POST", "/produce?topic=orders", { body: { payload: 1 }, expect: 200 });  // an owned partition in turn
// What mqd refuses as a bad body, the schema refuses.
for (const body of [
  {}, { key: "k" }, { payload: 1, key: 5 }, { payload: 1, delay_ms: 5, deliver_at: 5 }, { payload: 1, delay_ms: -1 },
  { payload: 1, delay_ms: 604800001 }, { payload: 1, delay_ms: 1.5 }, { payload: 1, headers: { "a b": "x" } },
  { payload: 1, headers: { a: 1 } }, { payload: 1, headers: [] }, { payload: 1, dedup_id: "" },
  { payload: 1, dedup_id: "x".repeat(129) }, { messages: [] }, { messages: [{ key: "k" }] }, { messages: {} },
  { messages: [{ payload: 1, delay_ms: "5" }] },
]) {
  await call("POST", q("/produce"), { body, expect: 400, badBody: true });
}
await call("POST", q("/produce"), { rawBody: "", expect: 400 });
await call("POST", "/produce?topic=nope", { body: { payload: 1 }, expect: 404 });
await call("POST", "/produce?topic=a%20b", { body: { payload: 1 }, expect: 400 });
await call("POST", "/produce", { body: { payload: 1 }, expect: 400 });
await call("POST", "/produce?topic=events&partition=1", { body: { payload: 1 }, expect: 421 }).then((a) => {
  check(a.body?.owner === 1 && a.body?.owner_url === `http://127.0.0.1:${otherPort}`, "421 names the owner and its URL");
});
await call("POST", "/produce?topic=events&partition=9", { body: { payload: 1 }, expect: 404 });
await call("POST", q("/produce"), { body: { payload: "x".repeat(2000) }, expect: 413 });
// Without a body: mqd leaves the body of a 405 unread on the connection (reported), and the next
// request on it would read it as a request.
await call("PUT", q("/produce"), { expect: 405 }).then((a) => {
  check(a.headers.get("allow") === "POST", "405 names the route's method in Allow");
});
await call("HEAD", "/topics", { expect: 200 });
await call("HEAD", g("/consume"), { expect: 405 });

// Consume, then ack, touch and nack what is in flight.
const stream = await new Stream(g("/consume") + "&visibility_timeout_ms=60000&max_inflight=100&from=earliest").open();
check(stream.answer.status === 200, "the stream opens");
await stream.until(() => stream.events.length >= 6, "6 events");  // the ones due of events/0
await stream.until(() => stream.keepalives >= 1, "a keepalive");
const ids = stream.events.map((e) => e.data.id);
check(stream.events.some((e) => e.data.headers?.["trace-id"] === "abc" && e.data.dedup_id === "order-43"),
      "events carry headers and dedup_id");
await call("POST", g("/touch"), { body: { id: ids[0] }, expect: 200 });
await call("POST", g("/ack"), { body: { id: ids[0] }, expect: 200 });
await call("POST", g("/ack"), { body: { ids: [ids[1], ids[2]] }, expect: 200 });
await call("POST", g("/nack"), { body: { id: ids[3], delay_ms: 0 }, expect: 200 });  // its last delivery: dead-lettered
await call("POST", g("/nack"), { body: { id: ids[4] }, expect: 200 });
await call("POST", g("/nack"), { body: { id: ids[3] }, expect: 409 });
await call("POST", g("/touch"), { body: { id: ids[0] }, expect: 409 });
await call("POST", g("/ack"), { body: { id: "no-such-id" }, expect: 404 });
await call("POST", g("/nack"), { body: { id: "0-999999" }, expect: 404 });
await call("POST", g("/ack"), { body: { id: ids[5], ids: [ids[5]] }, expect: 400, badBody: true });
await call("POST", g("/ack"), { body: { ids: [] }, expect: 400, badBody: true });
await call("POST", g("/ack"), { body: { id: 5 }, expect: 400, badBody: true });
await call("POST", g("/nack"), { body: {}, expect: 400, badBody: true });
await call("POST", g("/nack"), { body: { id: ids[5], delay_ms: -5 }, expect: 400, badBody: true });
await call("POST", g("/touch"), { body: { ids: [ids[5]] }, expect: 400, badBody: true });
await call("POST", "/ack?topic=events&partition=1&group=g1", { body: { id: "1-0" }, expect: 421 });
await call("GET", g("/consume") + "&ordering=key", { expect: 409 }).then((a) => {
  check(a.body?.ordering === "none", "the 409 of /consume names the group's ordering");
});
await stream.close();
for (const bad of ["&visibility_timeout_ms=0", "&max_inflight=x", "&from=middle", "&ordering=fifo"]) {
  await call("GET", g("/consume") + bad, { expect: 400 });
}
await call("GET", "/consume?topic=events&partition=0", { expect: 400 });
await call("GET", "/consume?topic=events&partition=1&group=g1", { expect: 421 });
await call("GET", "/consume?topic=events&partition=4294967296&group=g1", { expect: 404 });

// Reading, statistics, metrics.
await call("GET", "/topics", { expect: 200 });
await call("GET", "/stats", { expect: 200 });
await call("GET", "/stats?topic=events-dlq", { expect: 200 });
await call("GET", "/stats?topic=nope", { expect: 404 });
await call("GET", "/stats?topic=..", { expect: 400 });
const metrics = await call("GET", "/metrics", { expect: 200 });
check(typeof metrics.body === "string" && metrics.body.includes("mq_dead_lettered_total{"), "metrics name dead letters");
await call("GET", q("/messages"), { expect: 200 });
const letters = await call("GET", "/messages?topic=events-dlq&partition=0&offset=0&limit=10", { expect: 200 });
check(letters.body?.messages?.length >= 1 && letters.body.messages.every((m) => m.source), "dead letters carry source");
await call("GET", q("/messages", "&timestamp=0&limit=1000"), { expect: 200 });
await call("GET", q("/messages", "&offset=0&timestamp=0"), { expect: 400 });
await call("GET", q("/messages", "&limit=0"), { expect: 400 });
await call("GET", q("/messages", "&limit=1001"), { expect: 400 });
await call("GET", q("/messages", "&offset=-1"), { expect: 400 });
await call("GET", "/messages?topic=events&partition=1", { expect: 421 });

// Seek.
for (const body of [{ offset: 0 }, { offset: 1e6 }, { timestamp: 0 }, { position: "earliest" }, { position: "latest" }]) {
  await call("POST", g("/seek", "g2"), { body, expect: 200 });
}
for (const body of [{}, { offset: 0, position: "earliest" }, { offset: 0, timestamp: null }, { offset: -1 },
                    { position: "middle" }, { timestamp: 1.5 }]) {
  await call("POST", g("/seek", "g2"), { body, expect: 400, badBody: true });
}

// Redrive the dead letters, then remove the groups.
await call("POST", "/redrive?topic=events-dlq&partition=0", { body: { limit: 1 }, expect: 200 }).then((a) => {
  check(a.body?.redriven === 1, "redrive takes its limit");
});
await call("POST", "/redrive?topic=events-dlq&partition=0", { body: {}, expect: 200 });
await call("POST", "/redrive?topic=events-dlq&partition=0", { rawBody: "", expect: 200 });
await call("POST", "/redrive?topic=events&partition=0", { body: {}, expect: 400 });
await call("POST", "/redrive?topic=events-dlq&partition=0", { body: { limit: 0 }, expect: 400, badBody: true });
await call("POST", "/redrive?topic=events-dlq&partition=0", { body: { limit: "all" }, expect: 400, badBody: true });
await call("DELETE", "/group?topic=events&group=g1", { expect: 200 });
await call("DELETE", "/group?topic=events&group=g1", { expect: 404 });
await call("DELETE", "/group?topic=events", { expect: 400 });
await call("DELETE", "/group?topic=nope&group=g1", { expect: 404 });
await call("GET", "/group?topic=events&group=g2", { expect: 405 });

// A request head of more than 100 header lines (or larger than 64 KiB): 431, and the connection is
// closed. Many small lines rather than one large one: mqd reads all of them, so that its close does
// not reset the connection over unread bytes before the answer is read.
{
  const answer = await new Promise((done) => {
    const socket = net.connect(port, "127.0.0.1");
    let data = "";
    socket.on("data", (d) => { data += d; });
    socket.on("error", () => {});  // mqd may close before it has read everything sent
    socket.on("close", () => done(data));
    const lines = Array.from({ length: 101 }, (_, i) => `X-Header-${i}: ${i}\r\n`).join("");
    socket.write(`GET /healthz HTTP/1.1\r\nHost: x\r\n${lines}\r\n`);
    setTimeout(() => socket.destroy(), 10000);
  });
  const [head, text = ""] = answer.split("\r\n\r\n");
  const status = Number(head.split(" ")[1]);
  check(status === 431, `101 header lines: status ${status}`);
  const headers = new Headers();
  for (const line of head.split("\r\n").slice(1)) {
    const colon = line.indexOf(":");
    headers.append(line.slice(0, colon).trim(), line.slice(colon + 1).trim());
  }
  if (status === 431) conforms("101 header lines", "GET", "/healthz", status, headers, text);
}

// Over MAX_CONNECTIONS (2) served at once: 503.
{
  const a = await new Stream(g("/consume", "g3")).open();
  const b = await new Stream(g("/consume", "g4")).open();
  await call("GET", "/topics", { expect: 503 });
  await call("GET", "/healthz", { token: false, expect: 503 });
  await a.close();
  await b.close();
}

// Replicated partitions (ETCD_ENDPOINTS): a second mqd, alone in its cluster (R=1), with a real etcd
// (Debian's etcd-server, which the test command installs): /topics shows the placement and
// /replica/fetch answers a follower's fetch.
{
  const etcdPort = await freePort();
  const etcdPeerPort = await freePort();
  const etcd = spawn("etcd", [
    "--data-dir", path.join(work, "etcd"), "--listen-client-urls", `http://127.0.0.1:${etcdPort}`,
    "--advertise-client-urls", `http://127.0.0.1:${etcdPort}`, "--listen-peer-urls", `http://127.0.0.1:${etcdPeerPort}`,
    "--initial-advertise-peer-urls", `http://127.0.0.1:${etcdPeerPort}`,
    "--initial-cluster", `default=http://127.0.0.1:${etcdPeerPort}`,
  ], { stdio: "ignore" });
  const etcdDeadline = Date.now() + 20000;
  while (!(await accepts(etcdPort)) && Date.now() < etcdDeadline) await new Promise((r) => setTimeout(r, 20));
  const replicatedPort = await freePort();
  const at = `http://127.0.0.1:${replicatedPort}`;
  const replicated = spawn(args.mqd, [], {
    env: {
      PORT: String(replicatedPort), HOST: "127.0.0.1", DATA_DIR: path.join(work, "replicated"), FSYNC: "never",
      TOPICS: "events:2", BROKER_ADDRS: at, AUTH_TOKEN: TOKEN, ETCD_ENDPOINTS: `http://127.0.0.1:${etcdPort}`,
      REPLICATION_FACTOR: "1", LEASE_TTL_S: "2",
    },
    stdio: ["ignore", "ignore", fs.openSync(path.join(work, "replicated.stderr"), "w")],
  });
  process.on("exit", () => { replicated.kill("SIGKILL"); etcd.kill("SIGKILL"); });
  // Until it leads partition 0 (an election through etcd): polled, as there is no event to await.
  let epoch = null;
  const deadline = Date.now() + 30000;
  while (epoch === null && Date.now() < deadline) {
    try {
      const topics = await (await fetch(`${at}/topics`, { headers: { Authorization: `Bearer ${TOKEN}` } })).json();
      const p0 = topics.topics.find((t) => t.name === "events")?.placement?.[0];
      if (p0?.leader === 0) epoch = p0.leader_epoch;
    } catch (e) { /* not listening yet */ }
    if (epoch === null) await new Promise((r) => setTimeout(r, 50));
  }
  // The cluster's replication secret, which followers read from etcd (here through its JSON gateway).
  const b64 = (text) => Buffer.from(text).toString("base64");
  const range = await (await fetch(`http://127.0.0.1:${etcdPort}/v3/kv/range`, {
    method: "POST", body: JSON.stringify({ key: b64("/mq/replica-secret") }) })).json();
  const secret = range.kvs?.[0]?.value ? Buffer.from(range.kvs[0].value, "base64").toString() : "";
  check(secret.length >= 32, "the brokers keep a replication secret in etcd");
  const replica = { "X-Mq-Replica-Secret": secret };
  if (check(epoch !== null, `the replicated mqd led partition 0 within 30 s: ${fs.readFileSync(path.join(work, "replicated.stderr"), "utf8")}`)) {
    await call("GET", "/topics", { at, expect: 200 }).then((a) => {
      const p0 = a.body?.topics?.find((t) => t.name === "events")?.placement?.[0];
      check(JSON.stringify(p0?.replicas) === "[0]" && JSON.stringify(p0?.isr) === "[0]", "placement names the replicas and ISR");
    });
    await call("POST", "/produce?topic=events&partition=0", { at, body: { payload: "replicated" }, expect: 200 });
    const follower = `topic=events&partition=0&offset=0&log_start=0&durable=0&broker=0&disk_id=conformance&wait_ms=0`;
    const fetched = await send(new URL(`/replica/fetch?${follower}&epoch=${epoch}`, at),
                               { method: "GET", headers: { Authorization: `Bearer ${TOKEN}`, ...replica } }, 200);
    check(fetched.answer.status === 200 && fetched.answer.headers.get("content-type") === "application/x-ndjson",
          `GET /replica/fetch: ${fetched.answer.status} ${fetched.answer.headers.get("content-type")}`);
    const [header, line] = fetched.text.split("\n");
    check(JSON.parse(header).lines === 1 && JSON.parse(line).payload === "replicated", `the fetch answer: ${fetched.text}`);
    conforms("GET /replica/fetch", "GET", "/replica/fetch", 200, fetched.answer.headers, fetched.text);
    // Without the secret, or with another, no broker counts it as a copy: 403.
    await call("GET", `/replica/fetch?${follower}&epoch=${epoch}`, { at, expect: 403 });
    await call("GET", `/replica/fetch?${follower}&epoch=${epoch}`, { at, expect: 403, headers: { "X-Mq-Replica-Secret": "x".repeat(64) } });
    await call("GET", `/replica/fetch?${follower}&epoch=${epoch + 7}`, { at, expect: 409, headers: replica }).then((a) => {
      check(a.body?.leader_epoch === epoch, "a fetch for another epoch is answered 409 with the leader's epoch");
    });
    await call("GET", `/replica/fetch?topic=events&partition=0&epoch=${epoch}`, { at, expect: 400, headers: replica });
    await call("GET", `/replica/fetch?${follower.replace("offset=0", "offset=x")}&epoch=${epoch}`, { at, expect: 400, headers: replica });
  }
  await call("GET", `/replica/fetch?topic=events&partition=0&epoch=1&offset=0&log_start=0&durable=0&broker=0&disk_id=x`,
             { expect: 404 });  // the first mqd: not replicated
  replicated.kill("SIGTERM");
  etcd.kill("SIGTERM");
}

// Every operation of the document was answered 200 at least once.
for (const [pathname, item] of Object.entries(doc.paths)) {
  for (const operation of Object.values(item)) {
    check(covered.get(operation.operationId)?.has(200), `${operation.operationId} (${pathname}) was never answered 200`);
  }
}

mqd.kill("SIGTERM");
console.log(`conformance: ${checks - failures.length} passed, ${failures.length} failed`);
process.exit(failures.length ? 1 : 0);
