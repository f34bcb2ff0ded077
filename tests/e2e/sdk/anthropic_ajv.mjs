// anthropic_ajv.mjs — validates values against JSON Schemas with ajv, for
// tests/integration/test_server_anthropic.py (tool_use inputs against their
// tools' input_schema). Argument: JSON [[schema, value], ...]. Prints one
// JSON line [[valid, errors], ...]; exits 1 when any value is invalid.
import Ajv from 'ajv';

const pairs = JSON.parse(process.argv[2]);
const ajv = new Ajv({ strict: false });
const out = pairs.map(([schema, value]) => {
  const f = ajv.compile(schema);
  return [f(value), f.errors ?? null];
});
console.log(JSON.stringify(out));
process.exit(out.every(([ok]) => ok) ? 0 : 1);
