// responses.mjs — kiln's /v1/responses through the openai npm SDK (and ajv).
//
//   node responses.mjs sdk TEXT_BASE_URL TEXT_MODEL TOOL_BASE_URL TOOL_MODEL
//     client.responses.create (text, output_text), stream: true (events in
//     order, deltas == the final text), client.responses.stream() +
//     finalResponse(), retrieve and delete, previous_response_id; on the tool
//     server a function tool with tool_choice "required" (a function_call
//     whose arguments validate against the tool's parameters), then a round
//     trip with function_call_output and previous_response_id; text.format
//     json_schema through responses.parse (output_parsed validates).
//   node responses.mjs validate SCHEMA_JSON VALUE_JSON
//     exits 0 when ajv finds VALUE valid against SCHEMA, else prints why.
//
// Exits nonzero on any failure, printing each.
import Ajv from "ajv";
import OpenAI from "openai";

const fails = [];
let passed = 0;
function check(name, cond, detail) {
  if (cond) {
    passed++;
    console.log(`ok   ${name}`);
  } else {
    fails.push(name);
    console.log(`FAIL ${name}${detail === undefined ? "" : ": " + JSON.stringify(detail).slice(0, 1500)}`);
  }
}

function ajvCheck(schema, value) {
  const ajv = new Ajv({ strict: false, allErrors: true });
  const v = ajv.compile(schema);
  return v(value) ? null : v.errors;
}

// The output_text parts of the message items, joined (what the SDK's output_text is).
function outputText(resp) {
  return resp.output
    .filter((o) => o.type === "message")
    .flatMap((o) => o.content)
    .filter((c) => c.type === "output_text")
    .map((c) => c.text)
    .join("");
}

const WEATHER = {
  type: "function",
  name: "get_weather",
  description: "The weather in a city",
  strict: true,
  parameters: {
    type: "object",
    properties: { city: { type: "string", maxLength: 12 }, unit: { type: "string", enum: ["c", "f"] } },
    required: ["city", "unit"],
    additionalProperties: false,
  },
};

const PERSON = {
  type: "object",
  properties: { name: { type: "string", maxLength: 10 }, age: { type: "integer", minimum: 0, maximum: 120 } },
  required: ["name", "age"],
  additionalProperties: false,
};

async function text(client, model) {
  const prompt = "Once upon a time";
  const r = await client.responses.create({ model, input: prompt, max_output_tokens: 40, temperature: 0 });
  check("create: object", r.object === "response" && r.id.startsWith("resp_"), r);
  check("create: output_text not empty", typeof r.output_text === "string" && r.output_text.length > 0, r);
  const chat = await client.chat.completions.create({
    model,
    messages: [{ role: "user", content: prompt }],
    max_tokens: 40,
    temperature: 0,
  });
  check("create: output_text == chat content", r.output_text === chat.choices[0].message.content, [
    r.output_text,
    chat.choices[0].message.content,
  ]);
  check("create: usage", r.usage.input_tokens === chat.usage.prompt_tokens && r.usage.total_tokens > 0, r.usage);

  // stream: true, iterated
  const stream = await client.responses.create({
    model,
    input: prompt,
    max_output_tokens: 40,
    temperature: 0,
    stream: true,
  });
  const types = [];
  let deltas = "";
  let final = null;
  for await (const ev of stream) {
    types.push(ev.type);
    if (ev.type === "response.output_text.delta") deltas += ev.delta;
    if (ev.type === "response.completed" || ev.type === "response.incomplete") final = ev.response;
  }
  check("stream: created first", types[0] === "response.created", types);
  check("stream: ends completed/incomplete", final !== null && types.at(-1).startsWith("response.") && final, types);
  check("stream: deltas == create's output_text", deltas === r.output_text, [deltas, r.output_text]);
  if (final) check("stream: final response text", outputText(final) === deltas, [outputText(final), deltas]);

  // responses.stream() helper with finalResponse()
  const helper = client.responses.stream({ model, input: prompt, max_output_tokens: 40, temperature: 0 });
  let helperDeltas = "";
  helper.on("response.output_text.delta", (ev) => {
    helperDeltas += ev.delta;
  });
  const fr = await helper.finalResponse();
  // finalResponse() is the accumulated snapshot: the SDK adds no output_text helper to it
  check("stream helper: finalResponse text", outputText(fr) === r.output_text, [outputText(fr), r.output_text]);
  check("stream helper: deltas", helperDeltas === r.output_text, helperDeltas);

  // previous_response_id, retrieve, delete
  const r2 = await client.responses.create({
    model,
    input: "The next day",
    previous_response_id: r.id,
    max_output_tokens: 10,
    temperature: 0,
  });
  check("previous: prompt grew", r2.usage.input_tokens > r.usage.input_tokens, [r.usage, r2.usage]);
  const got = await client.responses.retrieve(r.id);
  check("retrieve: same response", got.id === r.id && got.output_text === r.output_text, got);
  await client.responses.delete(r.id);
  let status = 0;
  try {
    await client.responses.retrieve(r.id);
  } catch (e) {
    status = e.status;
  }
  check("retrieve after delete: 404", status === 404, status);
  status = 0;
  try {
    await client.responses.create({ model, input: "x", previous_response_id: "resp_unknown" });
  } catch (e) {
    status = e.status;
  }
  check("unknown previous_response_id: 404 (NotFoundError)", status === 404, status);
}

async function tools(client, model) {
  const input = "What is the weather in Paris?";
  const r = await client.responses.create({
    model,
    input,
    tools: [WEATHER],
    tool_choice: "required",
    parallel_tool_calls: false,
    max_output_tokens: 200,
    temperature: 0,
  });
  const calls = r.output.filter((o) => o.type === "function_call");
  check("tools: one function_call", calls.length === 1, r.output);
  if (calls.length !== 1) return;
  const call = calls[0];
  check("tools: call fields", call.name === "get_weather" && call.call_id && call.status === "completed", call);
  let args = null;
  try {
    args = JSON.parse(call.arguments);
  } catch (e) {
    check("tools: arguments parse", false, call.arguments);
  }
  if (args !== null) {
    const errs = ajvCheck(WEATHER.parameters, args);
    check("tools: arguments valid (ajv)", errs === null, { args, errs });
  }
  // the round trip
  const r2 = await client.responses.create({
    model,
    previous_response_id: r.id,
    tools: [WEATHER],
    input: [{ type: "function_call_output", call_id: call.call_id, output: JSON.stringify({ temperature: 21 }) }],
    max_output_tokens: 20,
    temperature: 0,
  });
  check("round trip: answered", r2.status === "completed" || r2.status === "incomplete", r2);
  check("round trip: prompt holds the call", r2.usage.input_tokens > r.usage.input_tokens + r.usage.output_tokens, [
    r.usage,
    r2.usage,
  ]);

  // streamed tool call through the helper
  const s = client.responses.stream({
    model,
    input,
    tools: [WEATHER],
    tool_choice: "required",
    max_output_tokens: 200,
    temperature: 0,
  });
  let argDeltas = "";
  s.on("response.function_call_arguments.delta", (ev) => {
    argDeltas += ev.delta;
  });
  const fr = await s.finalResponse();
  const fcalls = fr.output.filter((o) => o.type === "function_call");
  check("stream tools: function_call", fcalls.length >= 1, fr.output);
  check(
    "stream tools: argument deltas == arguments",
    fcalls.length >= 1 && argDeltas === fcalls.map((c) => c.arguments).join(""),
    [argDeltas, fcalls],
  );

  // structured output
  const p = await client.responses.parse({
    model,
    input: "Give me a person.",
    text: { format: { type: "json_schema", name: "person", schema: PERSON, strict: true } },
    max_output_tokens: 200,
    temperature: 0,
  });
  const errs = p.output_parsed === null ? ["not parsed"] : ajvCheck(PERSON, p.output_parsed);
  check("json_schema: output_parsed valid (ajv)", errs === null, { text: p.output_text, errs });
}

async function main() {
  const [mode, ...args] = process.argv.slice(2);
  if (mode === "validate") {
    const errs = ajvCheck(JSON.parse(args[0]), JSON.parse(args[1]));
    if (errs) {
      console.log(JSON.stringify(errs));
      process.exit(1);
    }
    return;
  }
  if (mode !== "sdk" || args.length !== 4) {
    console.error("usage: node responses.mjs sdk TEXT_URL TEXT_MODEL TOOL_URL TOOL_MODEL | validate SCHEMA VALUE");
    process.exit(2);
  }
  const [textUrl, textModel, toolUrl, toolModel] = args;
  const opts = { apiKey: "none", maxRetries: 0, timeout: 120000 };
  for (const [name, fn] of [
    ["text", () => text(new OpenAI({ ...opts, baseURL: textUrl }), textModel)],
    ["tools", () => tools(new OpenAI({ ...opts, baseURL: toolUrl }), toolModel)],
  ]) {
    try {
      await fn();
    } catch (e) {
      check(`${name} raised`, false, String(e && e.stack ? e.stack : e));
    }
  }
  console.log(`${passed} passed, ${fails.length} failed`);
  process.exit(fails.length ? 1 : 0);
}

main();
