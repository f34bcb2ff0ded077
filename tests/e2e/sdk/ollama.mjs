// ollama.mjs HOST MODEL --checks format,tools,think [--think-forced] —
// kiln serve's Ollama API through the official ollama npm package (0.6.4),
// as an app uses it (new Ollama({host}).chat / .generate):
//  format:  chat and generate with "format" a JSON schema: every finished
//           answer (done_reason "stop") validates with ajv, a cut one
//           ("length") is a JSON prefix, and (every string and array being
//           bounded) at least one answer per schema finishes; streamed the
//           same; "format": "json" parses.
//  tools:   chat with tools (Ollama has no tool_choice: the model is free):
//           the answer is well-formed, no tool-call markup leaks into
//           content, and any message.tool_calls are
//           [{function: {name, arguments: object}}] naming a given tool with
//           arguments that validate against its parameters; a tool round trip
//           (the assistant's tool_calls and a "tool" message sent back) is
//           accepted.
//  think:   think false: no message.thinking (absent or empty) and no
//           <think> in content; think true, whole and streamed: content never
//           holds <think> / </think>, the streamed thinking and content equal
//           the whole answer's for the same seed, and with --think-forced
//           (a template whose prompt opens <think> itself) the model's text
//           is thinking, so thinking is not empty.
// Prints ok/FAIL lines (a failure shows the request and the answer) and
// "N passed, N failed"; exits 1 on any failure.
import { Ollama } from "ollama";
import { makeValidator, jsonPrefix, short } from "./jsoncheck.mjs";

const argv = process.argv.slice(2);
const pos = [];
let checks = ["format", "tools", "think"];
let thinkForced = false;
for (let i = 0; i < argv.length; i++) {
  if (argv[i] === "--checks") checks = argv[++i].split(",");
  else if (argv[i] === "--think-forced") thinkForced = true;
  else pos.push(argv[i]);
}
const [HOST, MODEL] = pos;
if (!HOST || !MODEL) {
  console.error("usage: node ollama.mjs HOST MODEL [--checks format,tools,think] [--think-forced]");
  process.exit(2);
}

let last = { req: "", status: 0, res: "" };
async function recordingFetch(url, init) {
  last = { req: `${init?.method || "GET"} ${url} ${init?.body || ""}`, status: 0, res: "" };
  const r = await fetch(url, init);
  last.status = r.status;
  const mine = last;
  r.clone().text().then((t) => { mine.res = t; }, () => {});
  return r;
}
const ollama = new Ollama({ host: HOST, fetch: recordingFetch });

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
    await new Promise((r) => setTimeout(r, 50));
    check(`${name} (threw)`, false, e?.status !== undefined ? String(e) : e?.stack || String(e));
  }
}

const MARKUP = ["<tool_call>", "</tool_call>", "<|python_tag|>", "<|eom_id|>", "<|eot_id|>", "<|im_end|>",
  "<|im_start|>", "<think>", "</think>", "<|start_header_id|>"];
const leaks = (s) => (typeof s === "string" ? MARKUP.filter((m) => s.includes(m)) : []);

// Judges a constrained answer text: "valid", "cut" or a failure message.
function judge(validate, text, doneReason) {
  if (typeof text !== "string") return `content is not a string: ${JSON.stringify(text)}`;
  if (doneReason === "length") {
    const p = jsonPrefix(text);
    return p.state === "invalid" ? `cut answer is not a JSON prefix (${p.why} at ${p.at}): ${text}` : "cut";
  }
  if (doneReason !== "stop") return `done_reason ${JSON.stringify(doneReason)}`;
  let v;
  try { v = JSON.parse(text); } catch (e) { return `does not parse (${e.message}): ${text}`; }
  const r = validate(v);
  return r.ok ? "valid" : `invalid (${r.errors.slice(0, 5).join("; ")}): ${text}`;
}

// ---- format
const RECIPE = {
  type: "object",
  properties: {
    title: { type: "string", maxLength: 40 },
    servings: { type: "integer", minimum: 1, maximum: 12 },
    vegetarian: { type: "boolean" },
    ingredients: { type: "array", minItems: 1, maxItems: 4, items: { type: "object", properties: {
      name: { type: "string", maxLength: 20 }, grams: { type: "integer", minimum: 1, maximum: 1000 } },
    required: ["name", "grams"], additionalProperties: false } },
    difficulty: { enum: ["easy", "medium", "hard"] },
    source: { anyOf: [{ type: "string", maxLength: 40 }, { type: "null" }] },
  },
  required: ["title", "servings", "vegetarian", "ingredients", "difficulty"],
  additionalProperties: false,
};
// pydantic's shape: $defs, titles, Optional as anyOf null
const COUNTRY = {
  $defs: { City: { properties: { name: { maxLength: 30, title: "Name", type: "string" },
    population: { minimum: 0, title: "Population", type: "integer" } }, required: ["name", "population"], title: "City", type: "object" } },
  properties: {
    name: { maxLength: 30, title: "Name", type: "string" },
    capital: { $ref: "#/$defs/City" },
    iso_code: { pattern: "^[A-Z]{2}$", title: "Iso Code", type: "string" },
    languages: { items: { maxLength: 16, type: "string" }, maxItems: 3, title: "Languages", type: "array" },
    founded: { anyOf: [{ format: "date", type: "string" }, { type: "null" }], default: null, title: "Founded" },
  },
  required: ["name", "capital", "iso_code", "languages"],
  title: "Country", type: "object",
};

if (checks.includes("format")) {
  for (const [label, schema] of [["recipe", RECIPE], ["pydantic country", COUNTRY]]) {
    const validate0 = makeValidator(schema);
    let nvalid = 0;
    const validate = (v) => { const r = validate0(v); if (r.ok) nvalid++; return r; };
    for (const seed of [1, 2]) {
      await step(`chat format=${label} seed ${seed}`, async () => {
        const r = await ollama.chat({ model: MODEL, format: schema, messages: [{ role: "user", content: `Give me a ${label} as JSON.` }],
          options: { temperature: 1, seed, num_predict: 400 } });
        const j = judge(validate, r.message?.content, r.done_reason);
        check(`chat format=${label} seed ${seed}: ${j === "cut" ? "cut, a JSON prefix" : "validates"}`, j === "valid" || j === "cut", j);
        check(`chat format=${label} seed ${seed}: no tool_calls, role assistant`, r.message?.role === "assistant" && !(r.message.tool_calls || []).length,
          JSON.stringify(r.message));
      });
    }
    await step(`generate format=${label}`, async () => {
      const r = await ollama.generate({ model: MODEL, format: schema, prompt: `Give me a ${label} as JSON.`,
        options: { temperature: 1, seed: 3, num_predict: 400 } });
      const j = judge(validate, r.response, r.done_reason);
      check(`generate format=${label}: ${j === "cut" ? "cut, a JSON prefix" : "validates"}`, j === "valid" || j === "cut", j);
    });
    await step(`chat format=${label} streamed`, async () => {
      const st = await ollama.chat({ model: MODEL, format: schema, stream: true, messages: [{ role: "user", content: `Give me a ${label} as JSON.` }],
        options: { temperature: 1, seed: 1, num_predict: 400 } });
      let text = "";
      let done = null;
      for await (const part of st) { text += part.message?.content || ""; if (part.done) done = part.done_reason; }
      const j = judge(validate, text, done);
      check(`chat format=${label} streamed: ${j === "cut" ? "cut, a JSON prefix" : "validates"}`, j === "valid" || j === "cut", j);
    });
    // every string and array of these schemas is bounded: answers must end
    check(`format=${label}: at least one of the 4 answers finished and validated`, nvalid > 0,
      "all cut by num_predict 400 (a grammar that lets the model go on: undeclared properties? unbounded numbers?)");
  }
  for (const seed of [1, 2]) {
    await step(`chat format=json seed ${seed}`, async () => {
      const r = await ollama.chat({ model: MODEL, format: "json", messages: [{ role: "user", content: "Describe a dog as JSON." }],
        options: { temperature: 1, seed, num_predict: 400 } });
      const j = judge(() => ({ ok: true, errors: [] }), r.message?.content, r.done_reason);
      check(`chat format=json seed ${seed}: ${j === "cut" ? "cut, a JSON prefix" : "parses"}`, j === "valid" || j === "cut", j);
    });
  }
}

// ---- tools
const TOOLS = [
  { type: "function", function: { name: "get_current_weather", description: "Get the current weather for a city",
    parameters: { type: "object", properties: {
      city: { type: "string", description: "The name of the city", maxLength: 30 },
      format: { type: "string", enum: ["celsius", "fahrenheit"] } }, required: ["city", "format"] } } },
  { type: "function", function: { name: "add_two_numbers", description: "Add two numbers",
    parameters: { type: "object", properties: { a: { type: "integer" }, b: { type: "integer" } }, required: ["a", "b"] } } },
];
const toolValidators = Object.fromEntries(TOOLS.map((t) => [t.function.name, makeValidator(t.function.parameters)]));

function checkMessage(label, msg) {
  check(`${label}: role assistant`, msg?.role === "assistant", JSON.stringify(msg));
  check(`${label}: no tool-call markup in content`, !leaks(msg?.content || "").length, JSON.stringify(msg?.content));
  for (const [k, c] of (msg?.tool_calls || []).entries()) {
    const name = c.function?.name;
    check(`${label}: call ${k} names a given tool`, name in toolValidators, JSON.stringify(c));
    const args = c.function?.arguments;
    if (!check(`${label}: call ${k} arguments is an object`, args && typeof args === "object" && !Array.isArray(args), JSON.stringify(c))) continue;
    if (name in toolValidators) {
      const v = toolValidators[name](args);
      check(`${label}: call ${k} arguments validate`, v.ok, `${v.errors.join("; ")}: ${JSON.stringify(args)}`);
    }
  }
  return (msg?.tool_calls || []).length;
}

if (checks.includes("tools")) {
  let calls = 0;
  let withCalls = null;
  const messages = [{ role: "user", content: "What is the weather in Toronto? And what is 10 + 23?" }];
  for (const seed of [1, 2, 3, 4]) {
    await step(`chat tools seed ${seed}`, async () => {
      const r = await ollama.chat({ model: MODEL, messages, tools: TOOLS, options: { temperature: 1, seed, num_predict: 120 } });
      check(`chat tools seed ${seed}: done_reason stop/length`, ["stop", "length"].includes(r.done_reason), r.done_reason);
      const n = checkMessage(`chat tools seed ${seed}`, r.message);
      calls += n;
      if (n && !withCalls) withCalls = r.message;
    });
  }
  await step("chat tools greedy", async () => {
    const r = await ollama.chat({ model: MODEL, messages, tools: TOOLS, options: { temperature: 0, num_predict: 120 } });
    const n = checkMessage("chat tools greedy", r.message);
    if (n && !withCalls) withCalls = r.message;
  });
  await step("chat tools streamed", async () => {
    const st = await ollama.chat({ model: MODEL, messages, tools: TOOLS, stream: true, options: { temperature: 1, seed: 1, num_predict: 120 } });
    let content = "";
    const tc = [];
    for await (const part of st) { content += part.message?.content || ""; tc.push(...(part.message?.tool_calls || [])); }
    checkMessage("chat tools streamed", { role: "assistant", content, tool_calls: tc });
  });
  console.log(`# ${MODEL}: the model called a tool in ${calls} of the answers (it is free to: Ollama has no tool_choice)`);
  await step("tool round trip", async () => {
    const call = withCalls?.tool_calls?.[0] || { function: { name: "get_current_weather", arguments: { city: "Toronto", format: "celsius" } } };
    const r = await ollama.chat({ model: MODEL, tools: TOOLS, options: { temperature: 0, num_predict: 30 }, messages: [...messages,
      { role: "assistant", content: "", tool_calls: [call] },
      { role: "tool", content: "22 degrees celsius", tool_name: call.function.name }] });
    check("tool round trip: answered", ["stop", "length"].includes(r.done_reason), JSON.stringify(r));
    checkMessage("tool round trip", r.message);
  });
}

// ---- think
if (checks.includes("think")) {
  const messages = [{ role: "user", content: "How many r's are in strawberry?" }];
  const opts = { temperature: 1, seed: 5, num_predict: 60 };
  await step("think false", async () => {
    const r = await ollama.chat({ model: MODEL, messages, think: false, options: opts });
    check("think false: no thinking", r.message?.thinking === undefined || r.message.thinking === "", JSON.stringify(r.message));
    check("think false: no <think> markup in content", !leaks(r.message?.content).length, JSON.stringify(r.message?.content));
    check("think false: done_reason stop/length", ["stop", "length"].includes(r.done_reason), r.done_reason);
  });
  let whole = null;
  await step("think true", async () => {
    const r = await ollama.chat({ model: MODEL, messages, think: true, options: opts });
    whole = r.message;
    check("think true: no <think> markup in content", !leaks(r.message?.content).length, JSON.stringify(r.message?.content));
    check("think true: no markup in thinking", !leaks(r.message?.thinking || "").length, JSON.stringify(r.message?.thinking));
    if (thinkForced) {
      check("think true: the model's text is thinking (the prompt opened <think>)",
        typeof r.message?.thinking === "string" && r.message.thinking.length > 0, JSON.stringify(r.message));
    }
  });
  await step("think true streamed", async () => {
    const st = await ollama.chat({ model: MODEL, messages, think: true, stream: true, options: opts });
    let content = "";
    let thinking = "";
    for await (const part of st) { content += part.message?.content || ""; thinking += part.message?.thinking || ""; }
    check("think true streamed: no <think> markup in content", !leaks(content).length, JSON.stringify(content));
    check("think true streamed: thinking and content equal the whole answer's",
      whole && thinking === (whole.thinking || "") && content === (whole.content || ""),
      `stream thinking ${JSON.stringify(thinking)} content ${JSON.stringify(content)}\n     whole ${JSON.stringify(whole)}`);
  });
  await step("think false streamed", async () => {
    const st = await ollama.chat({ model: MODEL, messages, think: false, stream: true, options: opts });
    let content = "";
    let thinking = "";
    for await (const part of st) { content += part.message?.content || ""; thinking += part.message?.thinking || ""; }
    check("think false streamed: no thinking, no markup", thinking === "" && !leaks(content).length,
      `thinking ${JSON.stringify(thinking)} content ${JSON.stringify(content)}`);
  });
}

console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
