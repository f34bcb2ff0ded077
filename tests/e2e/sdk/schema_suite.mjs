// schema_suite.mjs URL MODEL [options] — constrained JSON through kiln serve,
// checked by a real JSON Schema validator (ajv 8 + ajv-formats).
//
// For every schema in the schemas directory (each file one schema as an app
// sends it: pydantic's model_json_schema(), zod-to-json-schema, hand-written
// OpenAI strict-mode schemas) and several seeds, POSTs /v1/chat/completions
// with response_format {"type": "json_schema", "json_schema": {name, schema,
// strict: true}}, temperature 1 and the seed. The models are random-weight (or
// tiny) models that write noise when unconstrained, so a valid answer can only
// come from the grammar:
//  - every answer with finish_reason "stop" must JSON.parse and validate;
//  - an answer cut by max_tokens (finish_reason "length") must be a prefix of
//    JSON text (no invalid syntax so far); cut answers are counted, and more
//    than --max-cut of them (default 0.25) is a failure (the suite then says
//    nothing: raise --max-tokens);
//  - any other status or finish_reason is a failure.
// Then, for a few schemas: the same through Ollama's /api/chat and
// /api/generate with "format": schema, a streamed request (the SSE deltas put
// together validate), response_format json_object and Ollama's "format":
// "json" (the answer parses; json_object: to an object), and a control: the
// same requests WITHOUT response_format must mostly fail to validate (proves
// the grammar did the work).
//
// Options: --schemas DIR (default ./schemas beside this script), --seeds N (3),
// --max-tokens N (400), --concurrency N (4), --max-cut F (0.25), --only
// NAME,NAME (substring match), --part K/N (the schemas whose index in the
// sorted list is K modulo N: a share of the suite), --extra N (schemas in the extra checks; 4),
// --no-extra.
// Prints one line per schema ("ok   ..." / "FAIL ...", with the request and
// the answer of each failure) and a closing "N passed, N failed"; exits 1 on
// any failure.
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { makeValidator, jsonPrefix, short } from "./jsoncheck.mjs";

const argv = process.argv.slice(2);
const pos = [];
const opt = { schemas: null, seeds: 3, maxTokens: 400, concurrency: 4, maxCut: 0.25, only: null, part: null, extra: 4 };
for (let i = 0; i < argv.length; i++) {
  const a = argv[i];
  const val = () => argv[++i];
  if (a === "--schemas") opt.schemas = val();
  else if (a === "--seeds") opt.seeds = +val();
  else if (a === "--max-tokens") opt.maxTokens = +val();
  else if (a === "--concurrency") opt.concurrency = +val();
  else if (a === "--max-cut") opt.maxCut = +val();
  else if (a === "--only") opt.only = val().split(",");
  else if (a === "--part") opt.part = val().split("/").map(Number);
  else if (a === "--extra") opt.extra = +val();
  else if (a === "--no-extra") opt.extra = 0;
  else if (a.startsWith("--")) { console.error(`unknown option ${a}`); process.exit(2); }
  else pos.push(a);
}
if (pos.length !== 2) {
  console.error("usage: node schema_suite.mjs URL MODEL [--schemas DIR] [--seeds N] [--max-tokens N] ...");
  process.exit(2);
}
const [URL_BASE, MODEL] = [pos[0].replace(/\/+$/, ""), pos[1]];
const dir = opt.schemas || path.join(path.dirname(fileURLToPath(import.meta.url)), "schemas");

let passed = 0;
let failed = 0;
function ok(name) { passed++; console.log(`ok   ${name}`); }
function fail(name, detail) { failed++; console.log(`FAIL ${name}${detail ? ": " + detail : ""}`); }
function check(name, cond, detail) { if (cond) ok(name); else fail(name, detail); return cond; }

async function post(route, body) {
  const r = await fetch(URL_BASE + route, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    signal: AbortSignal.timeout(300000),
  });
  const text = await r.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* reported by the caller */ }
  return { status: r.status, text, json };
}

// Runs fn over items with at most n in flight; results in order.
async function pool(items, n, fn) {
  const out = new Array(items.length);
  let next = 0;
  const worker = async () => { while (next < items.length) { const k = next++; out[k] = await fn(items[k], k); } };
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, worker));
  return out;
}

// ---- the schemas
const files = fs.readdirSync(dir).filter((f) => f.endsWith(".json")).sort();
const schemas = [];
for (const [k, f] of files.entries()) {
  const name = f.replace(/\.json$/, "");
  if (opt.only && !opt.only.some((o) => name.includes(o))) continue;
  if (opt.part && k % opt.part[1] !== opt.part[0]) continue;
  const schema = JSON.parse(fs.readFileSync(path.join(dir, f), "utf8"));
  let validate;
  try { validate = makeValidator(schema); } catch (e) {
    fail(`${name}: ajv compiles the schema`, e.message); continue;
  }
  schemas.push({ name, schema, validate });
}
if (!schemas.length) { fail("schemas found", `none in ${dir}`); }

const userPrompt = (name) => `Extract the data as JSON (${name.replace(/_/g, " ")}).`;

function chatBody(s, seed, extra = {}) {
  return {
    model: MODEL,
    messages: [{ role: "system", content: "You reply with JSON only." }, { role: "user", content: userPrompt(s.name) }],
    temperature: 1, seed, max_tokens: opt.maxTokens,
    response_format: { type: "json_schema", json_schema: { name: s.name.slice(0, 64), schema: s.schema, strict: true } },
    ...extra,
  };
}

// Judges one answer text. Returns {kind: "valid" | "cut" | "bad", detail}.
function judge(s, text, finish) {
  if (typeof text !== "string") return { kind: "bad", detail: `content is not a string: ${short(text, 200)}` };
  if (finish === "length") {
    const p = jsonPrefix(text);
    if (p.state === "invalid") return { kind: "bad", detail: `cut answer is not a JSON prefix (${p.why} at ${p.at})` };
    return { kind: "cut" };
  }
  if (finish !== "stop") return { kind: "bad", detail: `finish_reason ${JSON.stringify(finish)}` };
  let v;
  try { v = JSON.parse(text); } catch (e) { return { kind: "bad", detail: `does not parse: ${e.message}` }; }
  const r = s.validate(v);
  if (!r.ok) return { kind: "bad", detail: `invalid: ${r.errors.slice(0, 5).join("; ")}` };
  return { kind: "valid" };
}

function report(label, body, res, detail) {
  return `${detail}\n     request: POST ${label} ${short(body, 4000)}\n     answer:  HTTP ${res.status} ${short(res.text, 3000)}`;
}

// ---- 1. the suite through /v1/chat/completions
const t0 = Date.now();
const jobs = [];
for (const s of schemas) for (let seed = 1; seed <= opt.seeds; seed++) jobs.push({ s, seed });
const results = await pool(jobs, opt.concurrency, async ({ s, seed }) => {
  const body = chatBody(s, seed);
  let res;
  try { res = await post("/v1/chat/completions", body); } catch (e) {
    return { s, seed, kind: "bad", detail: `request failed: ${e.message}`, body, res: { status: 0, text: "" } };
  }
  if (res.status !== 200 || !res.json) return { s, seed, kind: "bad", detail: `HTTP ${res.status}`, body, res };
  const ch = (res.json.choices || [])[0] || {};
  const msg = ch.message || {};
  if (msg.tool_calls && msg.tool_calls.length) return { s, seed, kind: "bad", detail: "tool_calls in a response_format answer", body, res };
  const usage = res.json.usage || {};
  if (!(usage.completion_tokens <= opt.maxTokens)) return { s, seed, kind: "bad", detail: `usage.completion_tokens ${usage.completion_tokens} > max_tokens`, body, res };
  const j = judge(s, msg.content, ch.finish_reason);
  return { s, seed, ...j, body, res, tokens: usage.completion_tokens };
});
let cut = 0;
let valid = 0;
for (const s of schemas) {
  const rs = results.filter((r) => r.s === s);
  const bad = rs.filter((r) => r.kind === "bad");
  const c = rs.filter((r) => r.kind === "cut").length;
  const v = rs.filter((r) => r.kind === "valid").length;
  cut += c; valid += v;
  const toks = rs.map((r) => r.tokens ?? "-").join(",");
  if (!bad.length) ok(`${s.name}: ${v} valid, ${c} cut by max_tokens (tokens ${toks})`);
  for (const r of bad) fail(`${s.name} seed ${r.seed}`, report("/v1/chat/completions", r.body, r.res, r.detail));
}
const total = results.length;
console.log(`# ${MODEL}: ${total} answers, ${valid} valid, ${cut} cut by max_tokens ${opt.maxTokens}, ${total - valid - cut} bad, ${((Date.now() - t0) / 1000).toFixed(1)} s`);
check(`at most ${Math.round(opt.maxCut * 100)}% of the answers cut by max_tokens (${cut}/${total})`, total > 0 && cut <= opt.maxCut * total,
  `raise --max-tokens: cut answers say nothing about validity`);

// ---- 2. extra checks on a few schemas
const extraSchemas = pickExtra(schemas, opt.extra);
function pickExtra(list, n) {
  if (n <= 0) return [];
  // spread over the list (different shapes), deterministic
  const out = [];
  for (let k = 0; k < n && k < list.length; k++) out.push(list[Math.floor((k * list.length) / n)]);
  return out;
}

async function extraCheck(label, route, body, getText, getFinish, s) {
  let res;
  try { res = await post(route, body); } catch (e) { return fail(label, `request failed: ${e.message}`); }
  if (res.status !== 200 || !res.json) return fail(label, report(route, body, res, `HTTP ${res.status}`));
  const j = judge(s, getText(res.json), getFinish(res.json));
  if (j.kind === "bad") return fail(label, report(route, body, res, j.detail));
  ok(`${label}: ${j.kind === "valid" ? "valid" : "cut by the token limit, a JSON prefix"}`);
}

if (extraSchemas.length) {
  const tasks = [];
  for (const [k, s] of extraSchemas.entries()) {
    const seed = 100 + k;
    // Ollama /api/chat with format: schema
    tasks.push(() => extraCheck(`ollama /api/chat format=schema ${s.name}`, "/api/chat", {
      model: MODEL, stream: false, format: s.schema,
      messages: [{ role: "user", content: userPrompt(s.name) }],
      options: { temperature: 1, seed, num_predict: opt.maxTokens },
    }, (j) => (j.message || {}).content, (j) => j.done_reason, s));
    // Ollama /api/generate with format: schema
    tasks.push(() => extraCheck(`ollama /api/generate format=schema ${s.name}`, "/api/generate", {
      model: MODEL, stream: false, format: s.schema, prompt: userPrompt(s.name),
      options: { temperature: 1, seed, num_predict: opt.maxTokens },
    }, (j) => j.response, (j) => j.done_reason, s));
    // streamed: the deltas put together validate
    tasks.push(() => streamCheck(s, seed));
  }
  // response_format json_object and Ollama format "json": any JSON (an object for json_object)
  const anyObject = { name: "json_object", validate: (v) => ({ ok: v !== null && typeof v === "object" && !Array.isArray(v), errors: ["not an object"] }) };
  const anyJson = { name: "json", validate: () => ({ ok: true, errors: [] }) };
  for (let seed = 1; seed <= Math.min(2, opt.extra); seed++) {
    tasks.push(() => extraCheck(`response_format json_object seed ${seed}`, "/v1/chat/completions", {
      model: MODEL, temperature: 1, seed, max_tokens: opt.maxTokens, response_format: { type: "json_object" },
      messages: [{ role: "user", content: "Describe a cat as a JSON object." }],
    }, (j) => ((j.choices || [])[0]?.message || {}).content, (j) => (j.choices || [])[0]?.finish_reason, anyObject));
    tasks.push(() => extraCheck(`ollama /api/chat format=json seed ${seed}`, "/api/chat", {
      model: MODEL, stream: false, format: "json", messages: [{ role: "user", content: "Describe a cat as JSON." }],
      options: { temperature: 1, seed, num_predict: opt.maxTokens },
    }, (j) => (j.message || {}).content, (j) => j.done_reason, anyJson));
    tasks.push(() => extraCheck(`ollama /api/generate format=json seed ${seed}`, "/api/generate", {
      model: MODEL, stream: false, format: "json", prompt: "Describe a cat as JSON.",
      options: { temperature: 1, seed, num_predict: opt.maxTokens },
    }, (j) => j.response, (j) => j.done_reason, anyJson));
  }
  await pool(tasks, opt.concurrency, (t) => t());

  // the control: without response_format the same requests mostly do not validate
  const control = await pool(extraSchemas.flatMap((s) => [1, 2].map((seed) => ({ s, seed }))), opt.concurrency, async ({ s, seed }) => {
    const body = chatBody(s, seed, { max_tokens: Math.min(opt.maxTokens, 80) });
    delete body.response_format;
    const res = await post("/v1/chat/completions", body);
    const text = ((res.json?.choices || [])[0]?.message || {}).content;
    let v;
    try { v = JSON.parse(text); } catch { return false; }
    return s.validate(v).ok;
  });
  const nvalid = control.filter(Boolean).length;
  check(`control: without response_format at most a quarter of ${control.length} answers validate (got ${nvalid})`,
    nvalid <= control.length / 4, "the model writes valid JSON unconstrained: the suite proves nothing on it");
}

async function streamCheck(s, seed) {
  const label = `streamed /v1/chat/completions ${s.name}`;
  const body = chatBody(s, seed, { stream: true });
  let r;
  try {
    r = await fetch(URL_BASE + "/v1/chat/completions", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body), signal: AbortSignal.timeout(300000),
    });
  } catch (e) { return fail(label, `request failed: ${e.message}`); }
  const raw = await r.text();
  if (r.status !== 200) return fail(label, report("/v1/chat/completions", body, { status: r.status, text: raw }, `HTTP ${r.status}`));
  let text = "";
  let finish = null;
  let done = false;
  for (const block of raw.split("\n\n")) {
    const line = block.trim();
    if (!line) continue;
    if (!line.startsWith("data: ")) return fail(label, `bad SSE line ${short(line, 200)}`);
    const data = line.slice(6);
    if (data === "[DONE]") { done = true; continue; }
    const c = JSON.parse(data);
    for (const ch of c.choices || []) {
      if (ch.delta?.content) text += ch.delta.content;
      if (ch.delta?.tool_calls) return fail(label, "tool_calls deltas in a response_format answer");
      if (ch.finish_reason) finish = ch.finish_reason;
    }
  }
  if (!done) return fail(label, "no data: [DONE]");
  const j = judge(s, text, finish);
  if (j.kind === "bad") return fail(label, report("/v1/chat/completions", body, { status: 200, text: `(deltas joined, finish ${finish}) ${text}` }, j.detail));
  ok(`${label}: ${j.kind === "valid" ? "valid" : "cut by the token limit, a JSON prefix"}`);
}

console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
