// Golden vectors through the browser's own module (ui-static/gen/xy_contracts.js): every vector
// in proto/testdata decodes, matches its canonical JSON, re-encodes byte-identically and keeps
// its unknown fields. Run: node --test tests/node/
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

import * as xy from "../../ui-static/gen/xy_contracts.js";

const root = new URL("../../", import.meta.url);
const testdata = new URL("proto/testdata/", root);
const manifest = JSON.parse(readFileSync(new URL("vectors.json", testdata), "utf8"));

// Unknown field entries (one per tag on the wire) in a decoded message and its children.
function countUnknown(value) {
  if (Array.isArray(value)) return value.reduce((n, v) => n + countUnknown(v), 0);
  if (value === null || typeof value !== "object" || value instanceof Uint8Array) return 0;
  let n = Array.isArray(value.$unknown) ? value.$unknown.length : 0;
  for (const [key, v] of Object.entries(value)) {
    if (key !== "$unknown" && key !== "$typeName") n += countUnknown(v);
  }
  return n;
}

test("the browser module is self-contained (no imports left for a SharedWorker to resolve)", () => {
  const source = readFileSync(fileURLToPath(new URL("ui-static/gen/xy_contracts.js", root)), "utf8");
  assert.doesNotMatch(source, /^\s*import\s/m);
  assert.doesNotMatch(source, /\bfrom\s+["'][^"']+["']/);
  assert.doesNotMatch(source, /\brequire\(/);
  for (const name of ["create", "fromBinary", "toBinary", "TickSchema", "DeltaSchema",
    "SnapshotSchema", "ClientFrameSchema", "ServerFrameSchema", "registry"]) {
    assert.ok(name in xy, `xy_contracts.js exports ${name}`);
  }
});

test("every message type of the contracts has a golden vector", () => {
  const covered = new Set(manifest.vectors.map((v) => v.message));
  const missing = [];
  for (const type of xy.registry) {
    if (type.kind === "message" && !covered.has(type.typeName)) missing.push(type.typeName);
  }
  assert.deepEqual(missing, []);
  assert.ok(covered.size >= 20, `only ${covered.size} message types covered`);
});

for (const v of manifest.vectors) {
  test(`vector ${v.name} (${v.message}) decodes, matches its JSON and round-trips`, () => {
    const schema = xy.registry.getMessage(v.message);
    assert.ok(schema, `${v.message} missing from the generated JS`);
    const bytes = new Uint8Array(readFileSync(new URL(v.binary, testdata)));
    const golden = JSON.parse(readFileSync(new URL(v.json, testdata), "utf8"));

    const msg = xy.fromBinary(schema, bytes);
    assert.equal(countUnknown(msg), v.unknown_fields, "unknown fields kept on decode");

    const again = xy.toBinary(schema, msg);
    assert.deepEqual(Buffer.from(again).toString("hex"), Buffer.from(bytes).toString("hex"),
      "re-encoded bytes (unknown fields included) identical to the vector");

    assert.deepEqual(xy.toJson(schema, msg), golden, "canonical JSON");
    const fromJson = xy.fromJson(schema, golden);
    assert.ok(xy.equals(schema, fromJson, msg), "JSON and binary decode to the same message");
  });
}
