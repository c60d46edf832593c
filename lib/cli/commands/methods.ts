/** `tensormerge methods`: every merge method from the registry, its inputs, formula and parameters as flags. */
import { MergeError } from "../../errors";
import type { MergeMethod, MethodParam } from "../../methods/define";
import { METHODS, resolveMethod } from "../../methods/registry";
import { MODEL_WEIGHT_PARAM } from "../../recipes/types";
import { defineCommand, flagArg } from "../command";
import { paramFlag } from "../method-params";
import { perBlockOption, perKeyOption } from "../../methods/params";

/** The flag(s) that set a parameter of a method, as `merge` reads them. */
export function flagsOf(method: MergeMethod, p: MethodParam, index: number): string {
  if (index === 0) return method.many ? "--multiplier, --alpha, --lambda" : "--multiplier, --alpha";
  if (index === 1 && !method.many) return "--beta";
  if (method.many && p.name === MODEL_WEIGHT_PARAM) return "--weights (one per model)";
  return `--${paramFlag(p.name)}`;
}

/**
 * The flags that set a parameter per key and per block ("--density-weight", "--density-blocks"),
 * or null for a base + models method's per-model weight (--weight is α's; recipes may still
 * set weights.weight).
 */
export function perKeyFlagsOf(method: MergeMethod, p: MethodParam): { perKey: string; perBlock: string } | null {
  if (method.many && p.name === MODEL_WEIGHT_PARAM) return null;
  return { perKey: perKeyOption(p.name), perBlock: perBlockOption(p.name) };
}

function inputsOf(method: MergeMethod): string {
  if (!method.many) return method.inputs.map((s) => s.toUpperCase()).join(" ");
  const { min, max } = method.many;
  return `base + ${min === max ? min : `${min}–${max}`} models`;
}

export function describeMethod(method: MergeMethod): string {
  const lines = [`${method.name}: ${method.summary}`, `  inputs:  ${inputsOf(method)}`, `  formula: ${method.formula}`];
  if (method.source) lines.push(`  follows: ${method.source}`);
  if (method.params.length === 0) lines.push("  no parameters");
  method.params.forEach((p, i) => {
    const tags = [p.perModel ? "per model" : "", p.integer ? "whole number" : ""].filter(Boolean).join(", ");
    const varying = perKeyFlagsOf(method, p);
    lines.push(`  ${flagsOf(method, p, i)}: ${p.summary} [${p.range[0]}, ${p.range[1]}], default ${p.default}${tags ? ` (${tags})` : ""}${varying ? `; per key ${varying.perKey} REGEX=X, per block ${varying.perBlock}` : ""}`);
  });
  return lines.join("\n");
}

export const methodsCommand = defineCommand({
  name: "methods",
  summary: "list the merge methods: inputs, formula, parameters and their flags",
  usage: "methods [METHOD…] [--json]",
  positionals: true,
  options: {
    json: { type: "boolean", description: "print a JSON array (name, inputs, many, params, formula, source)" },
  },
  async run(args, io) {
    const chosen = args.positionals.length ? args.positionals.map((n) => resolveMethod(n)) : [...METHODS];
    if (chosen.length === 0) throw new MergeError("INTERNAL", "the method registry is empty");
    if (flagArg(args, "json")) {
      const rows = chosen.map((m) => ({
        name: m.name, summary: m.summary, formula: m.formula, ...(m.source ? { source: m.source } : {}),
        inputs: [...m.inputs], ...(m.many ? { many: { ...m.many } } : {}),
        params: m.params.map((p, i) => ({ ...p, range: [...p.range], flags: flagsOf(m, p, i), ...perKeyFlagsOf(m, p) })),
      }));
      io.out.write(JSON.stringify(rows, null, 2) + "\n");
      return 0;
    }
    io.out.write(chosen.map(describeMethod).join("\n\n") + "\n");
    return 0;
  },
});
