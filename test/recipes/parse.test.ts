/** Recipe texts: the classic Merge Board format exactly, our JSON format, and both ways between them. */
import { strict as assert } from "node:assert";
import { formatClassicRecipe, parseClassicRecipe } from "../../lib/recipes/classic";
import { formatJsonRecipe, parseJsonRecipe, recipeToJson, RECIPE_SCHEMA } from "../../lib/recipes/json";
import { formatRecipe, parseRecipe } from "../../lib/recipes";
import { parseBindingsText, parseVarArgs } from "../../lib/recipes/bindings";
import { compileRecipe } from "../../lib/recipes/compile";
import { usedVariables, type Recipe } from "../../lib/recipes/types";
import { isCode, SAMPLE } from "./helpers";

const invalid = isCode("RECIPE_INVALID");

describe("recipes: classic Merge Board text", () => {
  it("parses the sample recipe as the classic tool reads it", () => {
    const r = parseClassicRecipe(SAMPLE);
    assert.equal(r.name, "Sample Recipe");
    assert.deepEqual(r.rows.map((x) => [x.name, x.method, x.multipliers, x.dtype ?? "same", x.format, x.save]), [
      ["a14", "weighted-sum", [0.5], "same", "ckpt", true],
      ["a15", "weighted-sum", [0.5], "fp16", "ckpt", true],
      ["mix14", "add-difference", [1], "same", "safetensors", true],
      ["mix15", "add-difference", [1], "fp16", "safetensors", true],
    ]);
    assert.deepEqual(r.rows[0]!.inputs, { a: { kind: "var", name: "SD14" }, b: { kind: "var", name: "F222" } });
    assert.deepEqual(r.rows[2]!.inputs, { a: { kind: "row", row: 0 }, b: { kind: "var", name: "WD13" }, c: { kind: "var", name: "SD14" } });
    assert.deepEqual(r.rows[3]!.inputs.a, { kind: "row", row: 1 });
    assert.deepEqual(r.variables, [{ name: "F222", description: "You can use F111 instead." }, { name: "SD14", description: "use stable diffusion v1.5, as you like." }]);
    assert.deepEqual(usedVariables(r), ["SD14", "F222", "SD15", "WD13"]);
  });

  it("reads comments, the classic '__NAME__, note' declaration, row names and model names", () => {
    const r = parseClassicRecipe([
      "first = model-a + model-b, 0.25 # a trailing comment",
      "  # an indented comment",
      "second = first + __X__ + model-c, 0.3, bf16, nosave",
      "third = second + model-d, 0.7, sigmoid, safetensors",
      "__X__, put your style model here",
    ].join("\r\n"));
    assert.equal(r.name, undefined);
    assert.deepEqual(r.rows[0]!.inputs, { a: { kind: "model", ref: "model-a" }, b: { kind: "model", ref: "model-b" } });
    assert.deepEqual(r.rows[1]!.inputs.a, { kind: "row", row: 0 });
    assert.equal(r.rows[1]!.save, false);
    assert.equal(r.rows[1]!.dtype, "bf16");
    assert.equal(r.rows[2]!.method, "sigmoid");
    assert.deepEqual(r.variables, [{ name: "X", description: "put your style model here" }]);
  });

  it("has no ten-row limit", () => {
    const text = Array.from({ length: 14 }, (_, i) => (i === 0 ? "o1 = m-a + m-b, 0.5" : `o${i + 1} = __O${i}__ + m-b, 0.5`)).join("\n");
    assert.equal(parseClassicRecipe(text).rows.length, 14);
  });

  it("reads a multiplier range as a sweep and a single model as a conversion", () => {
    const r = parseClassicRecipe("sw = m-a + m-b, 0.1:0.5:0.1, safetensors\nhalf = m-a, fp16, safetensors\n");
    assert.deepEqual(r.rows[0]!.multipliers, [0.1, 0.2, 0.3, 0.4, 0.5]);
    assert.equal(r.rows[1]!.method, "no-interpolation");
    assert.equal(r.rows[1]!.dtype, "fp16");
  });

  it("refuses a reference to a later row, a cycle, a missing C and other mistakes, naming the row", () => {
    const cases: [string, RegExp][] = [
      ["a = __O2__ + m-x, 0.5\nb = m-y + m-z, 0.5", /row 1 \(a\).*row 2 \(b\), which comes later/],
      ["a = b + m-x, 0.5\nb = a + m-y, 0.5", /cycle: a → b → a/],
      ["a = a + m-x, 0.5", /cycle: a → a/],
      ["a = __O7__ + m-x, 0.5", /refers to row 7, but the recipe has 1 row/],
      ["a = m-x + m-y + , 1.0", /model C is empty/],
      ["a = m-x + m-y, 1.0, add-difference", /add-difference needs model C/],
      ["a = m-x + m-y + m-z, 1.0, weighted-sum", /does not use model C/],
      ["a = m-x + m-y, 0.5, fp61", /unknown option "fp61"/],
      ["a = m-x + m-y", /no multiplier/],
      ["a = m-x + m-y + m-z + m-w, 1", /4 models/],
      ["a = m-x + m-y, 0.5\na = m-x + m-z, 0.5", /already used/],
      ["a = m-x + m-y, 0.1:0.3:0.1\nb = __O1__ + m-z, 0.5", /a sweep of 3 values; only a single-valued row can feed another/],
      ["a = m-x + m-y, zero", /not a number/],
      ["just some words", /neither a row|expected "OUT = A/],
      ["__bad", /neither a row .* nor a variable/],
    ];
    for (const [text, message] of cases) {
      assert.throws(() => parseClassicRecipe(text), (e: unknown) => invalid(e) && message.test((e as Error).message), text);
    }
  });

  it("exports and imports to the same board", () => {
    const r = parseClassicRecipe(SAMPLE);
    const text = formatClassicRecipe(r);
    assert.deepEqual(parseClassicRecipe(text), r);
    const extended = parseClassicRecipe("x = m-a + m-b, 0.144, bf16, inverse-sigmoid, nosave\ny = __O1__ + m-c, 0.1:0.2:0.02, safetensors\nz = m-a, fp16\n");
    assert.deepEqual(parseClassicRecipe(formatClassicRecipe(extended)), extended);
  });

  it("refuses to export what the classic text cannot say", () => {
    const r = parseJsonRecipe({ rows: [{ name: "x", a: "m-a", b: "m-b", multiplier: 0.5, discard: ["^model_ema\\."] }] });
    assert.throws(() => formatClassicRecipe(r), (e: unknown) => invalid(e) && /discarded keys/.test((e as Error).message));
    const list = parseJsonRecipe({ rows: [{ name: "x", a: "m-a", b: "m-b", multiplier: [0.144, 0.148, 0.2] }] });
    assert.throws(() => formatClassicRecipe(list), invalid);
    const pinned = parseJsonRecipe({ rows: [{ name: "x", a: { model: "m-a", sha256: "a".repeat(64) }, b: "m-b", multiplier: 0.5 }] });
    assert.throws(() => formatClassicRecipe(pinned), invalid);
  });
});

describe("recipes: JSON format", () => {
  const full = {
    name: "everything",
    description: "every option",
    variables: { BASE: "the base model", STYLE: "" },
    rows: [
      { name: "t", method: "inverse-sigmoid", a: "__BASE__", b: { model: "__odd__" }, multiplier: 0.3, dtype: "bf16", save: false },
      { name: "s", a: "t", b: "__STYLE__", c: { var: "BASE" }, multiplier: [0.144, 0.148], output: "sweep-<M>-<name>", format: "ckpt" },
      { name: "p", method: "no-interpolation", a: { model: "base.safetensors", sha256: "b".repeat(64), legacy: "0123abcd" }, discard: ["^model_ema\\."], prune: true, vae: "vae-ft-mse", config: "none", metadata: { author: "me" } },
      { name: "w", a: { row: 1 }, b: { row: "p" }, multiplier: "0.1:0.3:0.1", dtype: "same" },
    ],
  };

  it("parses every option", () => {
    const r = parseJsonRecipe(JSON.stringify(full));
    assert.deepEqual(r.variables, [{ name: "BASE", description: "the base model" }, { name: "STYLE" }]);
    assert.deepEqual(r.rows[0]!.inputs.b, { kind: "model", ref: "__odd__" });
    assert.equal(r.rows[1]!.method, "add-difference");
    assert.deepEqual(r.rows[1]!.inputs.a, { kind: "row", row: 0 });
    assert.deepEqual(r.rows[1]!.multipliers, [0.144, 0.148]);
    assert.equal(r.rows[2]!.prune, true);
    assert.equal(r.rows[2]!.config, "none");
    assert.equal(r.rows[0]!.config, undefined);
    assert.deepEqual(r.rows[2]!.vae, { kind: "model", ref: "vae-ft-mse" });
    assert.deepEqual(r.rows[3]!.inputs, { a: { kind: "row", row: 0 }, b: { kind: "row", row: 2 } });
    assert.deepEqual(r.rows[3]!.multipliers, [0.1, 0.2, 0.3]);
    assert.equal(r.rows[3]!.dtype, undefined);
  });

  it("exports and imports to the same board, and classic → JSON → classic keeps the text", () => {
    const r = parseJsonRecipe(full);
    assert.deepEqual(parseJsonRecipe(formatJsonRecipe(r)), r);
    const sample = parseRecipe(SAMPLE);
    const viaJson = parseRecipe(formatRecipe(sample, "json"));
    assert.deepEqual(viaJson, sample);
    assert.equal(formatRecipe(viaJson, "classic"), formatRecipe(sample, "classic"));
  });

  it("names the row and the key in every error", () => {
    const cases: [unknown, RegExp][] = [
      [{ rows: [{ name: "x", a: "m", b: "n", multiplier: 0.5, multipler: 1 }] }, /row 1: unknown key "multipler"/],
      [{ rows: [{ name: "x", a: "m", b: "n" }] }, /row 1 \(x\): "multiplier" is missing/],
      [{ rows: [{ name: "x", method: "add-difference", a: "m", b: "n", multiplier: 1 }] }, /add-difference needs model C/],
      [{ rows: [{ name: "x", a: { row: "nope" }, b: "n", multiplier: 1 }] }, /no row is named "nope"/],
      [{ rows: [{ name: "x", a: "m", b: "n", multiplier: "0.1:0.5" }] }, /start:stop:step/],
      [{ rows: [{ name: "x", a: "m", b: "n", multiplier: 0.5, dtype: "fp8" }] }, /dtype "fp8"/],
      [{ rows: [{ name: "x", a: "m", b: "n", multiplier: 0.5, config: "d" }] }, /row 1 \(x\): "config" must be one of abc, a, b, c, none/],
      [{ rows: [{ name: "x", method: "weighted-summ", a: "m", b: "n", multiplier: 0.5 }] }, /did you mean "weighted-sum"/],
      [{ rows: [{ name: "x", a: "m", b: "n", multiplier: [0.1, 0.2], output: "fixed" }] }, /must contain <M>/],
      [{ rows: [{ name: "x", a: "m", b: "n", multiplier: 0.5, discard: ["(unclosed"] }] }, /not a valid regular expression/],
      [{ rows: [{ name: "a/b", a: "m", b: "n", multiplier: 0.5 }] }, /not usable as a file name/],
      [{ version: 2, rows: [] }, /version 2 is not supported/],
      ["{ not json", /not valid JSON/],
    ];
    for (const [value, message] of cases) {
      assert.throws(() => parseJsonRecipe(value), (e: unknown) => invalid(e) && message.test((e as Error).message), JSON.stringify(value));
    }
  });

  it("the schema describes every key the format reads and writes", () => {
    const schema = RECIPE_SCHEMA as { properties: Record<string, unknown>; $defs: { row: { properties: Record<string, unknown> } } };
    const r = parseJsonRecipe(full);
    const written = recipeToJson({ ...r, rows: [...r.rows, { ...r.rows[0]!, name: "extra", save: true, produces: { sha256: "c".repeat(64), legacy: "00000000", name: "x.safetensors" } }] }) as { rows: Record<string, unknown>[] };
    for (const k of Object.keys(written)) assert.ok(k in schema.properties, `top-level key ${k}`);
    const rowKeys = new Set(written.rows.flatMap((row) => Object.keys(row)));
    for (const k of rowKeys) assert.ok(k in schema.$defs.row.properties, `row key ${k}`);
    for (const k of Object.keys(schema.$defs.row.properties)) {
      const probe = { rows: [{ name: "x", a: "m", b: "n", multiplier: 0.5, [k]: (full.rows[2] as Record<string, unknown>)[k] ?? (full.rows[1] as Record<string, unknown>)[k] }] };
      if (["name", "a", "b", "multiplier", "c", "method", "produces"].includes(k)) continue;
      parseJsonRecipe(probe); // every schema key is accepted by the parser
    }
  });
});

describe("recipes: bindings", () => {
  it("reads --var arguments and bindings files in both forms", () => {
    assert.deepEqual(parseVarArgs(["SD15=models/sd15.safetensors", "__F222__=f222"]), { SD15: "models/sd15.safetensors", F222: "f222" });
    assert.deepEqual(parseBindingsText('{"SD15": "a", "__WD13__": "b"}'), { SD15: "a", WD13: "b" });
    assert.deepEqual(parseBindingsText("# bindings\nSD15 = a  # base\n__WD13__=b c\n"), { SD15: "a", WD13: "b c" });
    assert.throws(() => parseVarArgs(["SD15"]), isCode("INVALID_ARGUMENT"));
    assert.throws(() => parseVarArgs(["SD15=a", "SD15=b"]), isCode("INVALID_ARGUMENT"));
  });
});

describe("recipes: names like Object.prototype members are data", () => {
  const PROTO_NAMES = ["constructor", "toString", "valueOf", "hasOwnProperty", "isPrototypeOf"];

  it("binds variables called constructor, toString, … from --var and from both bindings file forms", () => {
    const expected = PROTO_NAMES.map((n, i) => [n, `m${i}`]);
    for (const got of [
      parseVarArgs(PROTO_NAMES.map((n, i) => `${n}=m${i}`)),
      parseVarArgs(PROTO_NAMES.map((n, i) => `__${n}__=m${i}`)),
      parseBindingsText(JSON.stringify(Object.fromEntries(expected))),
      parseBindingsText(PROTO_NAMES.map((n, i) => `${n} = m${i}`).join("\n")),
    ]) {
      assert.deepEqual(Object.entries(got), expected);
      for (const [n] of expected) assert.ok(Object.hasOwn(got, n!), n);
    }
    assert.throws(() => parseVarArgs(["constructor=a", "constructor=b"]), isCode("INVALID_ARGUMENT"));
  });

  it("a variable called constructor or toString that is not bound is reported unbound", async () => {
    for (const text of ["x = __constructor__ + __toString__, 0.5, safetensors\n", '{"rows": [{"name": "x", "a": "__valueOf__", "b": "__hasOwnProperty__", "multiplier": 0.5}]}']) {
      await assert.rejects(compileRecipe(parseRecipe(text), { bindings: {} }), (e: unknown) => invalid(e) && /unbound variables/.test((e as Error).message));
      await assert.rejects(compileRecipe(parseRecipe(text)), invalid);
    }
  });

  it("JSON recipes keep row metadata keys and variables named like prototype members, also written and read again", () => {
    const metadata = Object.fromEntries([["__proto__", "p"], ["constructor", "c"], ["toString", "t"]]);
    const text = JSON.stringify({
      variables: Object.fromEntries(PROTO_NAMES.map((n) => [n, `the ${n} model`])),
      rows: [{ name: "x", a: "__constructor__", b: "__toString__", multiplier: 0.5, metadata }],
    });
    const check = (r: Recipe) => {
      assert.deepEqual(r.variables.map((v) => v.name), PROTO_NAMES);
      assert.deepEqual(r.rows[0]!.inputs, { a: { kind: "var", name: "constructor" }, b: { kind: "var", name: "toString" } });
      assert.deepEqual(Object.entries(r.rows[0]!.metadata!), [["__proto__", "p"], ["constructor", "c"], ["toString", "t"]]);
      assert.equal(Object.getPrototypeOf(r.rows[0]!.metadata), Object.prototype);
    };
    const r = parseJsonRecipe(text);
    check(r);
    const written = formatJsonRecipe(r);
    const raw = JSON.parse(written) as { rows: { metadata: object }[]; variables: object };
    assert.deepEqual(Object.keys(raw.rows[0]!.metadata), ["__proto__", "constructor", "toString"]);
    assert.deepEqual(Object.keys(raw.variables), PROTO_NAMES);
    check(parseJsonRecipe(written));
  });
});

describe("recipes: the recipe model", () => {
  it("keeps JSON-only rows representable (type check of the exported shape)", () => {
    const r: Recipe = parseRecipe('{"rows": [{"name": "x", "a": "m", "b": "n", "multiplier": 0.5}]}');
    assert.equal(r.rows[0]!.format, "safetensors");
  });
});
