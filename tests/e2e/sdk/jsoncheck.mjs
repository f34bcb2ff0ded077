// jsoncheck.mjs — helpers shared by the SDK end-to-end scripts: a JSON Schema
// validator factory (ajv 8 + ajv-formats, the draft picked from "$schema") and
// a JSON prefix check for answers cut by max_tokens.
import Ajv from "ajv";
import Ajv2020 from "ajv/dist/2020.js";
import addFormats from "ajv-formats";

// A compiled validator for schema: draft-07 (ajv's default class) when the
// schema says so ("$schema" naming draft-07, as zod-to-json-schema writes,
// whose tuples are "items": [...]), else the 2020-12 class (pydantic's $defs,
// prefixItems). strict: false lets the annotations apps write (title,
// discriminator, ...) through; every format the schemas use is known, so an
// unknown format is an error rather than ignored.
export function makeValidator(schema) {
  const draft07 = typeof schema.$schema === "string" && schema.$schema.includes("draft-07");
  const AjvClass = draft07 ? Ajv : Ajv2020;
  const ajv = new AjvClass({ strict: false, allErrors: true, validateFormats: true });
  addFormats(ajv);
  const v = ajv.compile(schema);
  return (value) => {
    const ok = v(value);
    return { ok, errors: ok ? [] : (v.errors || []).map((e) => `${e.instancePath || "/"} ${e.message}${e.params ? " " + JSON.stringify(e.params) : ""}`) };
  };
}

const NUMBER = /^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?$/;
const WS = " \t\n\r";

// Whether text is JSON text or a prefix of some JSON text (what an answer cut
// by max_tokens must be under a JSON grammar). Returns {state: "complete" |
// "prefix" | "invalid", at, why}. A scanner, not a parser: it tracks the
// container stack and what may come next.
export function jsonPrefix(text) {
  const stack = []; // "{" or "["
  // expect: "value" | "value_or_close" (after "[") | "key_or_close" (after "{")
  //       | "key" (after "," in an object) | "colon" | "after" (after a value) | "end"
  let expect = "value";
  let i = 0;
  const bad = (why) => ({ state: "invalid", at: i, why });
  const afterValue = () => { expect = stack.length ? "after" : "end"; };
  while (i < text.length) {
    const c = text[i];
    if (WS.includes(c) && expect !== "string") { i++; continue; }
    if (expect === "end") return bad("text after the JSON value");
    if (expect === "colon") {
      if (c !== ":") return bad("expected ':'");
      expect = "value"; i++; continue;
    }
    if (expect === "after") {
      const top = stack[stack.length - 1];
      if (c === ",") { expect = top === "{" ? "key" : "value"; i++; continue; }
      if ((c === "}" && top === "{") || (c === "]" && top === "[")) { stack.pop(); i++; afterValue(); continue; }
      return bad("expected ',' or the closing bracket");
    }
    if (expect === "key_or_close" && c === "}") { stack.pop(); i++; afterValue(); continue; }
    if (expect === "value_or_close" && c === "]") { stack.pop(); i++; afterValue(); continue; }
    const isKey = expect === "key" || expect === "key_or_close";
    if (isKey && c !== '"') return bad("expected a key string");
    if (c === '"') {
      i++;
      let closed = false;
      while (i < text.length) {
        const d = text[i];
        if (d === '"') { closed = true; i++; break; }
        if (d.charCodeAt(0) < 0x20) return bad("control character in a string");
        if (d === "\\") {
          const e = text[i + 1];
          if (e === undefined) { i++; break; }
          if ('"\\/bfnrt'.includes(e)) { i += 2; continue; }
          if (e !== "u") { i++; return bad("bad escape"); }
          const hex = text.slice(i + 2, i + 6);
          if (!/^[0-9a-fA-F]*$/.test(hex)) { i += 2; return bad("bad \\u escape"); }
          i += 2 + hex.length;
          continue;
        }
        i++;
      }
      if (!closed) return { state: "prefix", at: i, why: "inside a string" };
      if (isKey) expect = "colon"; else afterValue();
      continue;
    }
    if (c === "{") { stack.push("{"); expect = "key_or_close"; i++; continue; }
    if (c === "[") { stack.push("["); expect = "value_or_close"; i++; continue; }
    if (c === "-" || (c >= "0" && c <= "9")) {
      let j = i;
      while (j < text.length && "0123456789+-.eE".includes(text[j])) j++;
      const tok = text.slice(i, j);
      if (j === text.length) {
        if (NUMBER.test(tok) || NUMBER.test(tok + "0")) return { state: "prefix", at: j, why: "inside a number" };
        return bad(`bad number ${tok}`);
      }
      if (!NUMBER.test(tok)) return bad(`bad number ${tok}`);
      i = j; afterValue(); continue;
    }
    let lit = null;
    for (const w of ["true", "false", "null"]) if (w[0] === c) lit = w;
    if (lit) {
      const got = text.slice(i, i + lit.length);
      if (!lit.startsWith(got)) return bad(`bad literal ${got}`);
      if (got.length < lit.length) return { state: "prefix", at: text.length, why: "inside a literal" };
      i += lit.length; afterValue(); continue;
    }
    return bad(`unexpected ${JSON.stringify(c)}`);
  }
  if (expect === "end") return { state: "complete", at: i, why: "" };
  return { state: "prefix", at: i, why: `expecting ${expect}` };
}

export function short(s, n = 1500) {
  s = typeof s === "string" ? s : JSON.stringify(s);
  return s.length <= n ? s : s.slice(0, n) + `... (${s.length} chars)`;
}
