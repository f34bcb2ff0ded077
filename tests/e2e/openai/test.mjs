// test.mjs — end-to-end test of `kiln serve` through the official `openai`
// npm client (the version pinned in package.json / package-lock.json).
//
// Run by tests/integration/test_server_openai_npm.sh, which installs the
// package outside the source tree, starts the server with --api-key, and runs
//   node test.mjs BASE_URL API_KEY
// (BASE_URL like http://127.0.0.1:PORT/v1). Optional environment:
//   KILN_E2E_MODEL      model name served (default stories260K)
//   KILN_E2E_PROMPT     completion prompt (default "Once upon a time")
//   KILN_E2E_N          max_tokens for the temperature-0 requests (default 16)
//   KILN_E2E_RUN_TEXT   file holding `kiln run -p PROMPT -n N --temp 0` output;
//                       when set, the temperature-0 completion must equal it.
// Prints one line per check ("ok   NAME" or "FAIL NAME: why") and exits 1 if
// any check failed.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import OpenAI from 'openai';
import { VERSION } from 'openai/version';

const baseURL = process.argv[2] ?? process.env.KILN_E2E_BASE_URL;
const apiKey = process.argv[3] ?? process.env.KILN_E2E_API_KEY;
if (!baseURL || !apiKey) {
  console.error('usage: node test.mjs BASE_URL API_KEY');
  process.exit(2);
}
const MODEL = process.env.KILN_E2E_MODEL || 'stories260K';
const PROMPT = process.env.KILN_E2E_PROMPT || 'Once upon a time';
const N = Number(process.env.KILN_E2E_N || 16);
const CHAT = [{ role: 'user', content: 'Tell me a story about a cat.' }];

// No retries: a 5xx or a dropped connection must show up as a failure.
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 60_000 });

let fails = 0;
let total = 0;
async function check(name, fn) {
  total++;
  try {
    await fn();
    console.log(`ok   ${name}`);
  } catch (e) {
    fails++;
    const why = e instanceof assert.AssertionError ? e.message : `${e?.constructor?.name}: ${e?.message}`;
    console.log(`FAIL ${name}: ${why.replace(/\n/g, '\n     ')}`);
  }
}

// usage must be {prompt_tokens > 0, 1 <= completion_tokens <= N, total = sum},
// and a "length" finish means exactly N tokens were generated.
function checkUsage(usage, finish) {
  assert.ok(usage, 'response has no usage');
  const { prompt_tokens: p, completion_tokens: c, total_tokens: t } = usage;
  for (const [k, v] of Object.entries({ prompt_tokens: p, completion_tokens: c, total_tokens: t }))
    assert.ok(Number.isInteger(v) && v >= 0, `usage.${k} is not a non-negative integer: ${JSON.stringify(v)}`);
  assert.ok(p > 0, `usage.prompt_tokens = ${p}, expected > 0`);
  assert.ok(c >= 1 && c <= N, `usage.completion_tokens = ${c}, expected 1..${N}`);
  assert.equal(t, p + c, `usage.total_tokens = ${t}, expected prompt_tokens + completion_tokens = ${p + c}`);
  if (finish === 'length') assert.equal(c, N, `finish_reason "length" but completion_tokens = ${c}, expected max_tokens = ${N}`);
}

function checkFinish(finish) {
  assert.ok(finish === 'stop' || finish === 'length', `finish_reason = ${JSON.stringify(finish)}, expected "stop" or "length"`);
}

// Reads a stream; returns {text, finishes, usages, chunks}. getText picks the
// delta text out of one choice.
async function drain(stream, getText) {
  const out = { text: '', finishes: [], usages: [], chunks: [] };
  for await (const chunk of stream) {
    out.chunks.push(chunk);
    for (const ch of chunk.choices ?? []) {
      const t = getText(ch);
      if (t != null) {
        assert.equal(typeof t, 'string', `delta text is not a string: ${JSON.stringify(t)}`);
        out.text += t;
      }
      if (ch.finish_reason != null) out.finishes.push(ch.finish_reason);
    }
    if (chunk.usage != null) out.usages.push({ chunk, index: out.chunks.length - 1 });
  }
  return out;
}

// The one usage chunk must be the last chunk, have choices: [] and carry the
// same numbers as the non-streamed response.
function checkStreamUsage(s, expectUsage) {
  assert.equal(s.usages.length, 1, `expected exactly one usage chunk, got ${s.usages.length}`);
  const { chunk, index } = s.usages[0];
  assert.equal(index, s.chunks.length - 1, `usage chunk is chunk ${index + 1} of ${s.chunks.length}, expected the last`);
  assert.deepEqual(chunk.choices, [], 'usage chunk must have choices: []');
  if (expectUsage) assert.deepEqual(chunk.usage, expectUsage, 'streamed usage differs from the non-stream usage');
}

function l2(v) {
  return Math.sqrt(v.reduce((a, x) => a + x * x, 0));
}

function checkEmbeddings(res, what) {
  assert.ok(Array.isArray(res.data), `${what}: data is not a list`);
  assert.equal(res.data.length, 2, `${what}: expected 2 embeddings, got ${res.data.length}`);
  const idx = res.data.map((d) => d.index);
  assert.deepEqual(idx, [0, 1], `${what}: indexes ${JSON.stringify(idx)}, expected [0,1]`);
  const [a, b] = res.data.map((d) => d.embedding);
  assert.ok(Array.isArray(a) && Array.isArray(b), `${what}: embeddings are not arrays`);
  assert.ok(a.length > 0, `${what}: empty embedding`);
  assert.equal(a.length, b.length, `${what}: vector lengths differ (${a.length} vs ${b.length})`);
  for (const v of [a, b]) {
    assert.ok(v.every((x) => typeof x === 'number' && Number.isFinite(x)), `${what}: non-finite or non-number element`);
    const n = l2(v);
    assert.ok(Math.abs(n - 1) < 1e-3, `${what}: L2 norm ${n}, expected 1 (±1e-3)`);
  }
  assert.ok(a.some((x, i) => Math.abs(x - b[i]) > 1e-6), `${what}: the two different inputs got the same vector`);
  return [a, b];
}

// Calls fn, which must throw an instance of cls with the given HTTP status;
// returns the error.
async function expectError(fn, cls, status) {
  let err;
  try {
    await fn();
  } catch (e) {
    err = e;
  }
  assert.ok(err, `expected ${cls.name} (${status}), but the request succeeded`);
  assert.ok(err instanceof cls, `expected ${cls.name} (${status}), got ${err?.constructor?.name} status=${err?.status}: ${err?.message}`);
  assert.equal(err.status, status);
  assert.ok(err.error && typeof err.error.message === 'string' && err.error.message.length > 0,
    `error body lacks {"error":{"message":...}}: ${JSON.stringify(err.error)}`);
  assert.equal(typeof err.type, 'string', `error body lacks error.type: ${JSON.stringify(err.error)}`);
  return err;
}

// ---------------------------------------------------------------- models
await check('models.list() lists ' + MODEL, async () => {
  const ids = [];
  for await (const m of client.models.list()) {
    assert.equal(m.object, 'model', `model entry object = ${JSON.stringify(m.object)}`);
    ids.push(m.id);
  }
  assert.ok(ids.includes(MODEL), `model ids ${JSON.stringify(ids)} lack ${MODEL}`);
});

// ---------------------------------------------------------------- chat
let chat = null;
await check(`chat.completions.create (temperature 0, max_tokens ${N})`, async () => {
  const r = await client.chat.completions.create({ model: MODEL, messages: CHAT, temperature: 0, max_tokens: N });
  assert.equal(r.object, 'chat.completion', `object = ${JSON.stringify(r.object)}`);
  assert.equal(r.choices?.length, 1, `expected 1 choice, got ${r.choices?.length}`);
  const c = r.choices[0];
  assert.equal(c.message?.role, 'assistant', `message.role = ${JSON.stringify(c.message?.role)}`);
  assert.equal(typeof c.message.content, 'string', `content is not a string: ${JSON.stringify(c.message.content)}`);
  assert.ok(c.message.content.length > 0, 'content is empty');
  checkFinish(c.finish_reason);
  checkUsage(r.usage, c.finish_reason);
  chat = { content: c.message.content, finish: c.finish_reason, usage: r.usage };
  console.log(`     content: ${JSON.stringify(chat.content)} (${chat.finish})`);
});

await check('chat stream with include_usage equals the non-stream response', async () => {
  assert.ok(chat, 'no non-stream response to compare with (its check failed)');
  const stream = await client.chat.completions.create({
    model: MODEL, messages: CHAT, temperature: 0, max_tokens: N, stream: true, stream_options: { include_usage: true },
  });
  const s = await drain(stream, (ch) => ch.delta?.content);
  for (const ch of s.chunks)
    assert.equal(ch.object, 'chat.completion.chunk', `chunk object = ${JSON.stringify(ch.object)}`);
  const roles = s.chunks.flatMap((ch) => (ch.choices ?? []).map((c) => c.delta?.role)).filter((r) => r != null);
  assert.ok(roles.every((r) => r === 'assistant'), `delta roles ${JSON.stringify(roles)}, expected only "assistant"`);
  assert.equal(s.text, chat.content, 'concatenated deltas differ from the non-stream content');
  assert.deepEqual(s.finishes, [chat.finish], `finish_reasons ${JSON.stringify(s.finishes)}, expected exactly [${JSON.stringify(chat.finish)}]`);
  checkStreamUsage(s, chat.usage);
});

await check('chat stream without include_usage sends no usage chunk', async () => {
  const stream = await client.chat.completions.create({ model: MODEL, messages: CHAT, temperature: 0, max_tokens: N, stream: true });
  const s = await drain(stream, (ch) => ch.delta?.content);
  assert.equal(s.usages.length, 0, `got ${s.usages.length} chunk(s) with usage`);
  if (chat) assert.equal(s.text, chat.content, 'concatenated deltas differ from the non-stream content');
});

// ---------------------------------------------------------------- completions
let comp = null;
await check(`completions.create ${JSON.stringify(PROMPT)} (temperature 0, max_tokens ${N})`, async () => {
  const r = await client.completions.create({ model: MODEL, prompt: PROMPT, temperature: 0, max_tokens: N });
  assert.equal(r.object, 'text_completion', `object = ${JSON.stringify(r.object)}`);
  assert.equal(r.choices?.length, 1, `expected 1 choice, got ${r.choices?.length}`);
  const c = r.choices[0];
  assert.equal(typeof c.text, 'string', `text is not a string: ${JSON.stringify(c.text)}`);
  assert.ok(c.text.length > 0, 'text is empty');
  checkFinish(c.finish_reason);
  checkUsage(r.usage, c.finish_reason);
  comp = { text: c.text, finish: c.finish_reason, usage: r.usage };
  console.log(`     text: ${JSON.stringify(comp.text)} (${comp.finish})`);
});

await check('completions stream equals the non-stream text', async () => {
  assert.ok(comp, 'no non-stream response to compare with (its check failed)');
  const stream = await client.completions.create({
    model: MODEL, prompt: PROMPT, temperature: 0, max_tokens: N, stream: true, stream_options: { include_usage: true },
  });
  const s = await drain(stream, (ch) => ch.text);
  assert.equal(s.text, comp.text, 'concatenated stream text differs from the non-stream text');
  assert.deepEqual(s.finishes, [comp.finish], `finish_reasons ${JSON.stringify(s.finishes)}, expected exactly [${JSON.stringify(comp.finish)}]`);
  checkStreamUsage(s, comp.usage);
});

if (process.env.KILN_E2E_RUN_TEXT) {
  await check('temperature-0 completion equals `kiln run --temp 0`', async () => {
    assert.ok(comp, 'no completion to compare (its check failed)');
    const run = readFileSync(process.env.KILN_E2E_RUN_TEXT, 'utf8');
    // kiln run adds a final newline when the text does not end with one.
    const want = comp.text.endsWith('\n') ? comp.text : comp.text + '\n';
    assert.equal(want, run, 'API text (plus kiln run\'s final newline) differs from kiln run output');
  });
}

// ---------------------------------------------------------------- embeddings
const INPUTS = ['Once upon a time', 'The cat sat on the mat.'];
let embB64 = null;
await check('embeddings.create, two inputs (SDK default: encoding_format base64)', async () => {
  const r = await client.embeddings.create({ model: MODEL, input: INPUTS });
  embB64 = checkEmbeddings(r, 'base64');
});

await check('embeddings.create, two inputs, encoding_format float', async () => {
  const r = await client.embeddings.create({ model: MODEL, input: INPUTS, encoding_format: 'float' });
  const f = checkEmbeddings(r, 'float');
  if (embB64) {
    for (let k = 0; k < 2; k++) {
      const d = Math.max(...f[k].map((x, i) => Math.abs(x - embB64[k][i])));
      assert.ok(d < 1e-5, `input ${k}: float and base64 vectors differ by up to ${d}`);
    }
  }
});

// ---------------------------------------------------------------- errors
await check('wrong api key gives AuthenticationError (401)', async () => {
  const bad = new OpenAI({ baseURL, apiKey: apiKey + '-wrong', maxRetries: 0, timeout: 30_000 });
  await expectError(() => bad.models.list(), OpenAI.AuthenticationError, 401);
  await expectError(
    () => bad.chat.completions.create({ model: MODEL, messages: CHAT, max_tokens: 1 }),
    OpenAI.AuthenticationError, 401);
});

await check('unknown model gives NotFoundError (404) listing the available models', async () => {
  const e = await expectError(
    () => client.chat.completions.create({ model: 'no-such-model', messages: CHAT, max_tokens: 1 }),
    OpenAI.NotFoundError, 404);
  assert.ok(e.error.message.includes(MODEL), `message does not list ${MODEL}: ${JSON.stringify(e.error.message)}`);
  await expectError(
    () => client.completions.create({ model: 'no-such-model', prompt: PROMPT, max_tokens: 1 }),
    OpenAI.NotFoundError, 404);
});

console.log(`${total - fails}/${total} checks passed (openai ${VERSION})`);
process.exit(fails ? 1 : 0);
