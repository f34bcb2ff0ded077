// anthropic.mjs — kiln serve's /v1/messages through the official
// @anthropic-ai/sdk (pinned in package.json), run by
// tests/integration/test_server_anthropic.py (kiln_server.run_node) with one
// JSON argument:
//   {text_url, tool_url, key, text_model, tool_model, prompt, system,
//    max_tokens, expect_text, expect_stop, expect_input_tokens}
// text_url serves a text model, where expect_* are what the raw HTTP
// answer to the same greedy request held; tool_url serves a model with a
// tool-calling chat template.
// Checks: messages.create (text), messages.stream (text events, finalText,
// finalMessage), a tool round trip (tool_choice any -> a tool_use block
// whose input the tool's input_schema validates (ajv) -> a tool_result sent
// back -> a text answer), the same tool call streamed, messages.countTokens,
// and the SDK's error classes for a wrong key and an unknown model.
// Prints one line per check; exits 1 when any failed.
import Anthropic from '@anthropic-ai/sdk';
import Ajv from 'ajv';

const cfg = JSON.parse(process.argv[2]);
let fails = 0;
function check(name, cond, detail) {
  if (cond) {
    console.log(`ok   ${name}`);
  } else {
    fails++;
    console.log(`FAIL ${name}${detail === undefined ? '' : ': ' + String(detail).slice(0, 1500)}`);
  }
  return cond;
}
const show = (v) => JSON.stringify(v);

const text = new Anthropic({ baseURL: cfg.text_url, apiKey: cfg.key, maxRetries: 0 });
const tools = new Anthropic({ baseURL: cfg.tool_url, apiKey: cfg.key, maxRetries: 0 });

const textReq = {
  model: cfg.text_model,
  max_tokens: cfg.max_tokens,
  temperature: 0,
  system: cfg.system,
  messages: [{ role: 'user', content: cfg.prompt }],
};

async function testCreate() {
  const m = await text.messages.create(textReq);
  check('create: a message', m.type === 'message' && m.role === 'assistant' && /^msg_/.test(m.id), show(m));
  check('create: one text block', m.content.length === 1 && m.content[0].type === 'text', show(m.content));
  check('create: text as the raw request got it', m.content[0]?.text === cfg.expect_text,
        `${show(m.content[0]?.text)} vs ${show(cfg.expect_text)}`);
  check('create: stop_reason', m.stop_reason === cfg.expect_stop, m.stop_reason);
  check('create: usage.input_tokens', m.usage.input_tokens === cfg.expect_input_tokens, show(m.usage));
  check('create: usage.output_tokens > 0', m.usage.output_tokens > 0, show(m.usage));
}

async function testStream() {
  const s = text.messages.stream(textReq);
  const pieces = [];
  let snapshotOk = true;
  s.on('text', (delta, snapshot) => {
    pieces.push(delta);
    if (snapshot !== pieces.join('')) snapshotOk = false;
  });
  const events = [];
  s.on('streamEvent', (ev) => events.push(ev.type));
  const final = await s.finalMessage();
  const finalText = await s.finalText();
  check('stream: text events', pieces.length > 0 && pieces.join('') === cfg.expect_text,
        `${show(pieces.join(''))} vs ${show(cfg.expect_text)}`);
  check('stream: text snapshots accumulate', snapshotOk);
  check('stream: finalText', finalText === cfg.expect_text, show(finalText));
  check('stream: finalMessage', final.content.length === 1 && final.content[0].text === cfg.expect_text &&
        final.stop_reason === cfg.expect_stop && /^msg_/.test(final.id), show(final));
  check('stream: usage', final.usage.input_tokens === cfg.expect_input_tokens && final.usage.output_tokens > 0,
        show(final.usage));
  check('stream: event order', events[0] === 'message_start' && events.at(-1) === 'message_stop' &&
        events.at(-2) === 'message_delta', show(events));
}

const weather = {
  name: 'get_weather',
  description: 'The weather in a city',
  input_schema: {
    type: 'object',
    properties: { city: { type: 'string' }, unit: { type: 'string', enum: ['celsius', 'fahrenheit'] } },
    required: ['city', 'unit'],
  },
};
const validate = new Ajv({ strict: false }).compile(weather.input_schema);
const toolUser = { role: 'user', content: 'What is the weather in Paris?' };

async function testToolRoundTrip() {
  const first = await tools.messages.create({
    model: cfg.tool_model, max_tokens: 256, temperature: 0, tools: [weather], tool_choice: { type: 'any', disable_parallel_tool_use: true },
    messages: [toolUser],
  });
  const uses = first.content.filter((b) => b.type === 'tool_use');
  check('tools: stop_reason tool_use', first.stop_reason === 'tool_use', show(first));
  if (!check('tools: a tool_use block', uses.length >= 1, show(first.content))) return;
  const u = uses[0];
  check('tools: tool_use id and name', /^toolu_/.test(u.id) && u.name === 'get_weather', show(u));
  check('tools: input valid against input_schema (ajv)', validate(u.input),
        `${show(u.input)}: ${show(validate.errors)}`);
  const second = await tools.messages.create({
    model: cfg.tool_model, max_tokens: 16, temperature: 0, tools: [weather], tool_choice: { type: 'none' },
    messages: [
      toolUser,
      { role: 'assistant', content: first.content },
      { role: 'user', content: uses.map((b) => ({ type: 'tool_result', tool_use_id: b.id, content: 'Sunny, 21 degrees' })) },
    ],
  });
  check('tools: a text answer after the tool result',
        second.content.length >= 1 && second.content.every((b) => b.type === 'text') &&
        ['end_turn', 'max_tokens'].includes(second.stop_reason), show(second));
  check('tools: the tool result is in the prompt', second.usage.input_tokens > first.usage.input_tokens,
        `${second.usage.input_tokens} vs ${first.usage.input_tokens}`);

  // the same call streamed: input_json_delta events build the same input
  const s = tools.messages.stream({
    model: cfg.tool_model, max_tokens: 256, temperature: 0, tools: [weather], tool_choice: { type: 'any', disable_parallel_tool_use: true },
    messages: [toolUser],
  });
  let json = '';
  s.on('inputJson', (partial) => { json += partial; });
  const final = await s.finalMessage();
  const su = final.content.filter((b) => b.type === 'tool_use');
  check('tools stream: stop_reason tool_use', final.stop_reason === 'tool_use', show(final));
  check('tools stream: same call as unstreamed', su.length === uses.length && show(su[0]?.input) === show(u.input) &&
        su[0]?.name === u.name, `${show(su)} vs ${show(uses)}`);
  check('tools stream: inputJson deltas', json.length > 0 && show(JSON.parse(json)) === show(u.input), json);

  // countTokens renders the request as create does
  const count = await tools.messages.countTokens({ model: cfg.tool_model, tools: [weather], messages: [toolUser] });
  check('countTokens: equals usage.input_tokens', count.input_tokens === first.usage.input_tokens,
        `${show(count)} vs ${first.usage.input_tokens}`);
  const bare = await tools.messages.countTokens({ model: cfg.tool_model, messages: [toolUser] });
  check('countTokens: tools count', bare.input_tokens > 0 && bare.input_tokens < count.input_tokens,
        `${bare.input_tokens} vs ${count.input_tokens}`);
}

async function testErrors() {
  const bad = new Anthropic({ baseURL: cfg.text_url, apiKey: 'wrong-key', maxRetries: 0 });
  try {
    await bad.messages.create(textReq);
    check('errors: wrong key rejected', false, 'no error');
  } catch (e) {
    check('errors: wrong key -> AuthenticationError', e instanceof Anthropic.AuthenticationError &&
          e.status === 401 && e.type === 'authentication_error', `${e?.constructor?.name} ${e?.status} ${e?.message}`);
  }
  try {
    await text.messages.create({ ...textReq, model: 'no-such-model' });
    check('errors: unknown model rejected', false, 'no error');
  } catch (e) {
    check('errors: unknown model -> NotFoundError', e instanceof Anthropic.NotFoundError &&
          e.type === 'not_found_error', `${e?.constructor?.name} ${e?.status} ${e?.message}`);
  }
}

for (const t of [testCreate, testStream, testToolRoundTrip, testErrors]) {
  try {
    await t();
  } catch (e) {
    check(`${t.name} threw`, false, e?.stack ?? e);
  }
}
console.log(fails ? `${fails} failed` : 'all passed');
process.exit(fails ? 1 : 0);
