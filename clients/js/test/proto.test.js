// The generated code (src/gen/im_pb.ts, `npm run gen`) matches proto/im.proto: every
// message's fields by name and number, every enum value. Fails when the schema gained a
// field and the SDK was not regenerated.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";
import * as pb from "../dist/gen/im_pb.js";
import { ROOT } from "./helpers.js";

/** `message X { ... }` and `enum X { ... }` blocks of a proto file: name -> {field: number}. */
function blocks(kind, text) {
  const out = {};
  for (const m of text.matchAll(new RegExp(`${kind}\\s+(\\w+)\\s*\\{([^}]*)\\}`, "g"))) {
    const fields = {};
    for (const line of m[2].split("\n")) {
      const f = /^\s*(?:repeated\s+)?(?:[\w.]+\s+)?(\w+)\s*=\s*(\d+)\s*;/.exec(line.replace(/\/\/.*/, ""));
      if (f) fields[f[1]] = Number(f[2]);
    }
    out[m[1]] = fields;
  }
  return out;
}

const proto = readFileSync(path.join(ROOT, "proto", "im.proto"), "utf8").replace(/\/\/.*/g, "");

test("every message of proto/im.proto is generated with the same fields", () => {
  const messages = blocks("message", proto);
  assert.ok(Object.keys(messages).length >= 10);
  for (const [name, fields] of Object.entries(messages)) {
    const schema = pb[`${name}Schema`];
    assert.ok(schema, `${name} is not generated: run npm run gen`);
    const generated = Object.fromEntries(schema.fields.map((f) => [f.name, f.number]));
    assert.deepEqual(generated, fields, `${name}: run npm run gen`);
  }
});

test("every enum value is generated", () => {
  for (const [name, values] of Object.entries(blocks("enum", proto))) {
    const schema = pb[`${name}Schema`];
    assert.ok(schema, `enum ${name} is not generated`);
    const generated = Object.fromEntries(schema.values.map((v) => [v.name, v.number]));
    assert.deepEqual(generated, values, `${name}: run npm run gen`);
  }
});
