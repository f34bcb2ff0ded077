// openai_tools.mjs BASE_URL MODEL [--checks format,tools,reasoning] — structured outputs and tool calls through
// kiln serve with the official openai npm package (5.23.2), as an app uses it:
//  - client.chat.completions.parse with zodResponseFormat (a nested zod
//    schema): message.parsed is what zod parses, and the content validates
//    with ajv against the schema the SDK sent; the same streamed with
//    client.chat.completions.stream (content.delta events put together are
//    the final content, finalChatCompletion's parsed is the non-streamed one);
//  - tools with tool_choice "required": finish_reason "tool_calls", each call
//    {id, type "function", function {name, arguments}} names a given tool and
//    its arguments JSON.parse and validate against the tool's parameters;
//    with parallel_tool_calls false exactly one call; parallel, the answer may
//    be cut by max_tokens (a random model may go on calling) but its calls
//    are whole and no partial call reaches content;
//  - tool_choice {"type": "function", "function": {"name"}}: every call is
//    that function;
//  - the same streamed (delta.tool_calls put together by index) equals the
//    non-streamed answer for the same seed;
//  - zodFunction tools through parse(): parsed_arguments is what zod parses;
//  - tool_choice "none" and "auto": content or valid calls, never tool-call
//    markup in the content;
//  - a tool round trip: the assistant's tool_calls message and a "tool"
//    message with its tool_call_id sent back are accepted;
//  - reasoning (only with --checks reasoning, for a template whose prompt
//    opens <think> when chat_template_kwargs.enable_thinking is true):
//    message.reasoning_content holds the model's text and content never
//    holds <think> markup, streamed delta.reasoning_content / delta.content
//    equal the whole answer, enable_thinking false gives no reasoning.
// The models are random-weight: what they write unconstrained is noise, so
// every valid call comes from the server's grammar. Prints ok/FAIL lines (a
// failure shows the last request and answer) and "N passed, N failed";
// exits 1 on any failure.
import OpenAI from "openai";
import { zodResponseFormat, zodFunction } from "openai/helpers/zod";
import { z } from "zod";
import { makeValidator, short } from "./jsoncheck.mjs";

const argv = process.argv.slice(2);
const pos = [];
let checks = ["format", "tools"];
for (let i = 0; i < argv.length; i++) {
  if (argv[i] === "--checks") checks = argv[++i].split(",");
  else pos.push(argv[i]);
}
const [BASE, MODEL] = pos;
if (!BASE || !MODEL) {
  console.error("usage: node openai_tools.mjs BASE_URL(/v1) MODEL [--checks format,tools,reasoning]");
  process.exit(2);
}

// The last exchange, shown with a failure.
let last = { req: "", status: 0, res: "" };
async function recordingFetch(url, init) {
  last = { req: `${init?.method || "GET"} ${url} ${init?.body || ""}`, status: 0, res: "" };
  const r = await fetch(url, init);
  last.status = r.status;
  const mine = last;
  r.clone().text().then((t) => { mine.res = t; }, () => {});
  return r;
}
const client = new OpenAI({ baseURL: BASE, apiKey: "none", fetch: recordingFetch, maxRetries: 0, timeout: 300000 });

let passed = 0;
let failed = 0;
function check(name, cond, detail = "") {
  if (cond) { passed++; console.log(`ok   ${name}`); return true; }
  failed++;
  console.log(`FAIL ${name}${detail ? ": " + short(detail, 2000) : ""}`);
  console.log(`     request: ${short(last.req, 4000)}`);
  console.log(`     answer:  HTTP ${last.status} ${short(last.res, 3000)}`);
  return false;
}
async function step(name, fn) {
  try { await fn(); } catch (e) {
    await new Promise((r) => setTimeout(r, 50)); // let the recorded body arrive
    check(`${name} (threw)`, false, e?.status !== undefined ? String(e) : e?.stack || String(e));
  }
}

// Text a parser must never leave in content: tool-call and reasoning markup
// of the families served here (hermes, llama3) and chat control tokens.
const MARKUP = ["<tool_call>", "</tool_call>", "<|python_tag|>", "<|eom_id|>", "<|eot_id|>", "<|im_end|>",
  "<|im_start|>", "<think>", "</think>", "<|start_header_id|>"];
const leaks = (s) => (typeof s === "string" ? MARKUP.filter((m) => s.includes(m)) : []);

// ---- a nested zod schema, bounded as an app bounds what it shows
const Address = z.object({
  city: z.string().max(24),
  country: z.enum(["FR", "DE", "US", "JP"]),
});
const Order = z.object({
  customer: z.object({ name: z.string().max(30), vip: z.boolean(), address: Address }),
  items: z.array(z.object({
    sku: z.string().max(12),
    quantity: z.number().int().min(1).max(20),
    gift_note: z.string().max(30).nullable(),
  })).min(1).max(3),
  status: z.enum(["new", "paid", "shipped"]),
  total_cents: z.number().int().min(0).max(1000000),
});
const orderFormat = zodResponseFormat(Order, "order");
const orderValidate = makeValidator(orderFormat.json_schema.schema);
const userMsg = [{ role: "system", content: "You extract orders as JSON." },
  { role: "user", content: "Order: 2 mugs for Ana in Lyon, France; paid, 2400 cents." }];

// ---- tools
const TOOLS = [
  { type: "function", function: { name: "get_weather", description: "Current weather for a city",
    parameters: { type: "object", properties: {
      location: { type: "string", description: "City name", maxLength: 30 },
      unit: { type: "string", enum: ["celsius", "fahrenheit"] } },
    required: ["location", "unit"], additionalProperties: false } } },
  { type: "function", function: { name: "search_flights", description: "Search flights between two airports",
    parameters: { type: "object", properties: {
      from: { type: "string", pattern: "^[A-Z]{3}$" },
      to: { type: "string", pattern: "^[A-Z]{3}$" },
      date: { type: "string", format: "date" },
      passengers: { type: "integer", minimum: 1, maximum: 9 } },
    required: ["from", "to", "date", "passengers"], additionalProperties: false } } },
  { type: "function", function: { name: "add_todo", description: "Add items to the todo list",
    parameters: { type: "object", properties: {
      items: { type: "array", minItems: 1, maxItems: 3, items: { type: "object", properties: {
        text: { type: "string", maxLength: 40 }, priority: { type: "integer", minimum: 1, maximum: 3 } },
      required: ["text", "priority"], additionalProperties: false } },
      due: { anyOf: [{ type: "string", format: "date" }, { type: "null" }] } },
    required: ["items", "due"], additionalProperties: false } } },
];
const toolValidators = Object.fromEntries(TOOLS.map((t) => [t.function.name, makeValidator(t.function.parameters)]));
const toolMsgs = [{ role: "user", content: "What's the weather in Paris? Also find me a flight from CDG to JFK tomorrow." }];

// Checks one answer's tool calls; returns them as [{name, args}] (null when
// there are none). allowLength: a parallel answer may be cut by max_tokens
// (a random model may go on calling): its complete calls must still be valid
// and the cut one must not reach content as markup.
function checkCalls(label, choice, { only = null, maxCalls = Infinity, allowLength = false } = {}) {
  const msg = choice.message || {};
  const calls = msg.tool_calls;
  if (allowLength && choice.finish_reason === "length") console.log(`# ${label}: cut by max_tokens after ${(calls || []).length} call(s)`);
  else check(`${label}: finish_reason "tool_calls"`, choice.finish_reason === "tool_calls", `got ${choice.finish_reason}`);
  check(`${label}: no markup in content`, (msg.content ?? "") === "" || leaks(msg.content).length === 0, JSON.stringify(msg.content));
  if (!check(`${label}: message.tool_calls is a non-empty array`, Array.isArray(calls) && calls.length > 0, JSON.stringify(msg))) return null;
  check(`${label}: at most ${maxCalls} call(s)`, calls.length <= maxCalls, `${calls.length} calls`);
  const ids = new Set();
  const out = [];
  for (const [k, c] of calls.entries()) {
    const n = `${label}: call ${k}`;
    check(`${n} has an id`, typeof c.id === "string" && c.id.length > 0 && !ids.has(c.id), JSON.stringify(c));
    ids.add(c.id);
    check(`${n} type "function"`, c.type === "function", JSON.stringify(c));
    const name = c.function?.name;
    if (!check(`${n} names a given tool`, name in toolValidators, JSON.stringify(c))) continue;
    if (only) check(`${n} is the named tool ${only}`, name === only, name);
    if (!check(`${n} arguments is a string`, typeof c.function.arguments === "string", JSON.stringify(c))) continue;
    let args;
    try { args = JSON.parse(c.function.arguments); } catch (e) { check(`${n} arguments parse`, false, `${e.message}: ${c.function.arguments}`); continue; }
    const v = toolValidators[name](args);
    check(`${n} ${name} arguments validate`, v.ok, `${v.errors.join("; ")}: ${c.function.arguments}`);
    out.push({ name, args: c.function.arguments });
  }
  return out;
}

// ---- 1. parse() with zodResponseFormat
let parsedWhole = null;
if (checks.includes("format")) {
  await step("parse zodResponseFormat", async () => {
    const c = await client.chat.completions.parse({ model: MODEL, messages: userMsg, response_format: orderFormat,
      temperature: 1, seed: 7, max_tokens: 400 });
    const ch = c.choices[0];
    check("parse: finish_reason stop", ch.finish_reason === "stop", ch.finish_reason);
    const parsed = ch.message.parsed;
    check("parse: message.parsed is an object", parsed && typeof parsed === "object", JSON.stringify(ch.message));
    check("parse: zod accepts message.parsed", Order.safeParse(parsed).success, JSON.stringify(Order.safeParse(parsed).error?.issues));
    const v = orderValidate(JSON.parse(ch.message.content));
    check("parse: content validates with ajv", v.ok, `${v.errors.join("; ")}: ${ch.message.content}`);
    check("parse: no refusal, no tool_calls", !ch.message.refusal && !(ch.message.tool_calls || []).length, JSON.stringify(ch.message));
    parsedWhole = ch.message.content;
  });
  await step("parse zodResponseFormat, second seed", async () => {
    const c = await client.chat.completions.parse({ model: MODEL, messages: userMsg, response_format: orderFormat,
      temperature: 1, seed: 8, max_tokens: 400 });
    check("parse seed 8: zod accepts message.parsed", Order.safeParse(c.choices[0].message.parsed).success, c.choices[0].message.content);
  });

  // ---- 2. stream() with response_format
  await step("stream zodResponseFormat", async () => {
    const s = client.chat.completions.stream({ model: MODEL, messages: userMsg, response_format: orderFormat,
      temperature: 1, seed: 7, max_tokens: 400 });
    let deltas = "";
    s.on("content.delta", (e) => { deltas += e.delta; });
    const fin = await s.finalChatCompletion();
    const ch = fin.choices[0];
    check("stream: finish_reason stop", ch.finish_reason === "stop", ch.finish_reason);
    check("stream: zod accepts finalChatCompletion parsed", Order.safeParse(ch.message.parsed).success, ch.message.content);
    check("stream: content.delta events joined are the content", deltas === ch.message.content, `${deltas} vs ${ch.message.content}`);
    check("stream: same answer as parse() for the same seed", ch.message.content === parsedWhole, `${ch.message.content} vs ${parsedWhole}`);
  });
}

// ---- 3. tools, tool_choice "required"
let requiredCalls = null;
let requiredMsg = null;
if (checks.includes("tools")) {
  // parallel_tool_calls false: exactly one call, and the answer must end after it
  for (const seed of [11, 12, 13]) {
    await step(`tool_choice required, one call, seed ${seed}`, async () => {
      const c = await client.chat.completions.create({ model: MODEL, messages: toolMsgs, tools: TOOLS, tool_choice: "required",
        parallel_tool_calls: false, temperature: 1, seed, max_tokens: 300 });
      const calls = checkCalls(`required single seed ${seed}`, c.choices[0], { maxCalls: 1 });
      if (seed === 11) { requiredCalls = calls; requiredMsg = c.choices[0].message; }
    });
  }
  // parallel (the default): one or more calls
  for (const seed of [14, 15]) {
    await step(`tool_choice required, parallel, seed ${seed}`, async () => {
      const c = await client.chat.completions.create({ model: MODEL, messages: toolMsgs, tools: TOOLS, tool_choice: "required",
        temperature: 1, seed, max_tokens: 400 });
      checkCalls(`required parallel seed ${seed}`, c.choices[0], { allowLength: true });
    });
  }

  // ---- 4. a named tool
  for (const [name, parallel] of [["search_flights", false], ["add_todo", true]]) {
    await step(`named tool_choice ${name}`, async () => {
      const c = await client.chat.completions.create({ model: MODEL, messages: toolMsgs, tools: TOOLS, parallel_tool_calls: parallel,
        tool_choice: { type: "function", function: { name } }, temperature: 1, seed: 21, max_tokens: 400 });
      checkCalls(`named ${name}${parallel ? " parallel" : ""}`, c.choices[0], { only: name, allowLength: parallel, maxCalls: parallel ? Infinity : 1 });
    });
  }

  // ---- 5. streamed tool calls equal the non-streamed ones
  await step("streamed tool calls", async () => {
    const req = { model: MODEL, messages: toolMsgs, tools: TOOLS, tool_choice: "required", parallel_tool_calls: false,
      temperature: 1, seed: 11, max_tokens: 300 };
    const stream = await client.chat.completions.create({ ...req, stream: true });
    const acc = [];
    let finish = null;
    let content = "";
    let bad = null;
    for await (const chunk of stream) {
      for (const ch of chunk.choices || []) {
        if (ch.delta?.content) content += ch.delta.content;
        for (const d of ch.delta?.tool_calls || []) {
          if (typeof d.index !== "number") bad = `delta without index: ${JSON.stringify(d)}`;
          const cur = acc[d.index] || (acc[d.index] = { id: "", name: "", args: "", type: null });
          if (d.id) { if (cur.id) bad = `id sent twice for call ${d.index}`; cur.id = d.id; }
          if (d.type) cur.type = d.type;
          if (d.function?.name) { if (cur.name) bad = `name sent twice for call ${d.index}`; cur.name = d.function.name; }
          if (d.function?.arguments) cur.args += d.function.arguments;
        }
        if (ch.finish_reason) finish = ch.finish_reason;
      }
    }
    check("streamed: well-formed delta.tool_calls (index; id and name once)", !bad, bad);
    check("streamed: finish_reason tool_calls", finish === "tool_calls", finish);
    check("streamed: no markup in content deltas", leaks(content).length === 0 && content.trim() === "", JSON.stringify(content));
    check("streamed: every call has an id, type function, a name", acc.length > 0 && acc.every((c) => c && c.id && c.type === "function" && c.name),
      JSON.stringify(acc));
    const got = acc.map((c) => ({ name: c.name, args: c.args }));
    const norm = (calls) => JSON.stringify((calls || []).map((c) => ({ name: c.name, args: JSON.parse(c.args) })));
    let same = false;
    try { same = norm(got) === norm(requiredCalls); } catch { same = false; }
    check("streamed: the calls equal the non-streamed answer for the same seed", same,
      `stream ${JSON.stringify(got)}\n     whole  ${JSON.stringify(requiredCalls)}`);
  });

  // ---- 6. the SDK's own parse() with zodFunction tools
  await step("zodFunction parse", async () => {
    const Weather = z.object({ location: z.string().max(30), unit: z.enum(["celsius", "fahrenheit"]) });
    const c = await client.chat.completions.parse({ model: MODEL, messages: toolMsgs, tool_choice: "required", parallel_tool_calls: false,
      tools: [zodFunction({ name: "get_weather", parameters: Weather })], temperature: 1, seed: 31, max_tokens: 300 });
    const ch = c.choices[0];
    check("zodFunction: finish_reason tool_calls", ch.finish_reason === "tool_calls", ch.finish_reason);
    const calls = ch.message.tool_calls || [];
    check("zodFunction: at least one call", calls.length > 0, JSON.stringify(ch.message));
    for (const call of calls) {
      check("zodFunction: parsed_arguments is what zod parses", call.function.name === "get_weather"
        && Weather.safeParse(call.function.parsed_arguments).success, JSON.stringify(call));
    }
  });

  // ---- 7. tool_choice "none" and "auto"
  await step("tool_choice none", async () => {
    const c = await client.chat.completions.create({ model: MODEL, messages: toolMsgs, tools: TOOLS, tool_choice: "none",
      temperature: 1, seed: 41, max_tokens: 60 });
    const ch = c.choices[0];
    check("none: no tool_calls", !(ch.message.tool_calls || []).length, JSON.stringify(ch.message));
    check("none: finish_reason stop/length", ["stop", "length"].includes(ch.finish_reason), ch.finish_reason);
    check("none: content is text without tool-call markup", typeof ch.message.content === "string" && !leaks(ch.message.content).length,
      JSON.stringify(ch.message.content));
  });
  for (const seed of [51, 52, 53]) {
    await step(`tool_choice auto seed ${seed}`, async () => {
      const c = await client.chat.completions.create({ model: MODEL, messages: toolMsgs, tools: TOOLS, tool_choice: "auto",
        temperature: 1, seed, max_tokens: 80 });
      const ch = c.choices[0];
      if ((ch.message.tool_calls || []).length) checkCalls(`auto seed ${seed}`, ch);
      else {
        check(`auto seed ${seed}: finish_reason stop/length`, ["stop", "length"].includes(ch.finish_reason), ch.finish_reason);
        check(`auto seed ${seed}: content without tool-call markup`, typeof ch.message.content === "string" && !leaks(ch.message.content).length,
          JSON.stringify(ch.message.content));
      }
    });
  }
  await step("tool_choice auto streamed", async () => {
    const stream = await client.chat.completions.create({ model: MODEL, messages: toolMsgs, tools: TOOLS, temperature: 1, seed: 54,
      max_tokens: 80, stream: true });
    let content = "";
    for await (const chunk of stream) for (const ch of chunk.choices || []) if (ch.delta?.content) content += ch.delta.content;
    check("auto streamed: content without tool-call markup", !leaks(content).length, JSON.stringify(content));
  });

  // ---- 8. a tool round trip
  await step("tool round trip", async () => {
    if (!requiredMsg?.tool_calls?.length) { check("round trip: have calls from tool_choice required", false); return; }
    const call = requiredMsg.tool_calls[0];
    const messages = [...toolMsgs,
      { role: "assistant", content: null, tool_calls: requiredMsg.tool_calls },
      ...requiredMsg.tool_calls.map((tc) => ({ role: "tool", tool_call_id: tc.id, content: JSON.stringify({ ok: true, result: `${tc.function.name} done` }) }))];
    const c = await client.chat.completions.create({ model: MODEL, messages, tools: TOOLS, temperature: 1, seed: 61, max_tokens: 40 });
    const ch = c.choices[0];
    check("round trip: answered", ["stop", "length", "tool_calls"].includes(ch.finish_reason), `${ch.finish_reason} (sent back ${call.id})`);
    check("round trip: no markup in content", !leaks(ch.message.content || "").length, JSON.stringify(ch.message.content));
    // the same with the arguments as the apps' own messages carry them after a parse (a JSON string kept verbatim)
    const c2 = await client.chat.completions.create({ model: MODEL, temperature: 0, max_tokens: 10, tools: TOOLS,
      messages: [...toolMsgs, { role: "assistant", content: "", tool_calls: [{ id: "call_abc", type: "function",
        function: { name: "get_weather", arguments: "{\"location\":\"Paris\",\"unit\":\"celsius\"}" } }] },
      { role: "tool", tool_call_id: "call_abc", content: "18 degrees, sunny" }] });
    check("round trip with a fixed call: answered", c2.choices.length === 1, JSON.stringify(c2));
  });

}

// ---- 9. reasoning
if (checks.includes("reasoning")) {
  const messages = [{ role: "user", content: "How many r's are in strawberry?" }];
  const req = { model: MODEL, messages, temperature: 1, seed: 5, max_tokens: 40 };
  let whole = null;
  await step("reasoning on", async () => {
    const c = await client.chat.completions.create({ ...req, chat_template_kwargs: { enable_thinking: true } });
    whole = c.choices[0].message;
    check("reasoning on: reasoning_content holds the model's text", typeof whole.reasoning_content === "string" && whole.reasoning_content.length > 0,
      JSON.stringify(whole));
    check("reasoning on: no markup in content or reasoning_content", !leaks(whole.content || "").length && !leaks(whole.reasoning_content || "").length,
      JSON.stringify(whole));
  });
  await step("reasoning on, streamed", async () => {
    const st = await client.chat.completions.create({ ...req, stream: true, chat_template_kwargs: { enable_thinking: true } });
    let content = "";
    let reasoning = "";
    for await (const chunk of st) {
      for (const ch of chunk.choices || []) { content += ch.delta?.content || ""; reasoning += ch.delta?.reasoning_content || ""; }
    }
    check("reasoning on, streamed: the deltas equal the whole answer",
      whole && reasoning === (whole.reasoning_content || "") && content === (whole.content || ""),
      `stream reasoning ${JSON.stringify(reasoning)} content ${JSON.stringify(content)}\n     whole ${JSON.stringify(whole)}`);
  });
  await step("reasoning off", async () => {
    const c = await client.chat.completions.create({ ...req, chat_template_kwargs: { enable_thinking: false } });
    const m = c.choices[0].message;
    check("reasoning off: no reasoning_content", !m.reasoning_content, JSON.stringify(m));
    check("reasoning off: no markup in content", !leaks(m.content || "").length, JSON.stringify(m));
  });
}

console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
