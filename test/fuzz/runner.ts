/**
 * Runs a TS fuzz target for a number of executions or seconds: deterministic (seeded
 * mulberry32), with light feedback: a mutated input whose outcome was not seen before (accepted,
 * or refused with a code and a message shape not seen yet) joins the pool that later mutations
 * start from, so the run goes deeper than one mutation away from the seeds. Findings keep the
 * input, the seed and the iteration: the same seed and runs replay them.
 *
 * Used by the bounded tests (test/ckpt/fuzz.test.ts, test/fuzz/fuzz.test.ts) and by
 * `npm run fuzz` (scripts/fuzz.js), for the long runs.
 */
import { seededRandom } from "../../lib/synthetic";
import { FuzzFinding, type FuzzTarget } from "./targets";

export interface FuzzFindingRecord {
  iteration: number;
  message: string;
  input: Uint8Array;
}

export interface FuzzRunResult {
  target: string;
  seed: number;
  executions: number;
  seconds: number;
  /** How many runs ended in each outcome: "ok", a MergeError code, or "finding". */
  outcomes: Record<string, number>;
  findings: FuzzFindingRecord[];
  pool: number;
}

export interface FuzzRunOptions {
  runs: number;
  /** Stop early after this many seconds (the run stays a replayable prefix). */
  seconds?: number;
  seed?: number;
  /**
   * Stop after this many findings (default 5). With keepGoing the run continues to the end and
   * keeps the first input of each distinct finding (by message shape), counting all of them.
   */
  maxFindings?: number;
  keepGoing?: boolean;
}

const POOL_LIMIT = 256;

/** The message with numbers and quoted text removed: which check refused, not with what. */
function shapeOf(message: string): string {
  return message.replace(/"[^"]*"/g, '""').replace(/\d+/g, "0").slice(0, 120);
}

export async function runFuzzTarget(target: FuzzTarget, options: FuzzRunOptions): Promise<FuzzRunResult> {
  const seed = options.seed ?? 1;
  const random = seededRandom(seed);
  const seeds = target.seeds();
  const findings: FuzzFindingRecord[] = [];
  const outcomes: Record<string, number> = {};
  // The seeds themselves must be accepted: otherwise the run only exercises the first check.
  for (const s of seeds) {
    const outcome = await target.check(s).catch((e: Error) => `finding: ${e.message}`);
    if (outcome !== "ok") throw new Error(`${target.name}: a seed input is not accepted (${outcome})`);
  }
  const pool: Uint8Array[] = [];
  const seen = new Set<string>();
  const started = Date.now();
  const deadline = options.seconds === undefined ? Infinity : started + options.seconds * 1000;
  let i = 0;
  for (; i < options.runs; i++) {
    if ((i & 255) === 0 && Date.now() > deadline) break;
    const fromPool = pool.length > 0 && random() < 0.5;
    const parent = fromPool ? pool[Math.floor(random() * pool.length)]! : seeds[Math.floor(random() * seeds.length)]!;
    const input = target.mutate(parent, random);
    let key: string;
    try {
      const outcome = await target.check(input);
      const bar = outcome.indexOf("|");
      const code = bar < 0 ? outcome : outcome.slice(0, bar);
      outcomes[code] = (outcomes[code] ?? 0) + 1;
      key = bar < 0 ? code : `${code}|${shapeOf(outcome.slice(bar + 1))}`;
    } catch (e) {
      if (!(e instanceof FuzzFinding)) throw e;
      outcomes.finding = (outcomes.finding ?? 0) + 1;
      if (!options.keepGoing) {
        findings.push({ iteration: i, message: e.message, input });
        if (findings.length >= (options.maxFindings ?? 5)) { i++; break; }
      } else if (!findings.some((f) => shapeOf(f.message) === shapeOf(e.message))) {
        findings.push({ iteration: i, message: e.message, input });
      }
      continue;
    }
    if (!seen.has(key)) {
      seen.add(key);
      if (pool.length < POOL_LIMIT) pool.push(input);
      else pool[Math.floor(random() * POOL_LIMIT)] = input;
    }
  }
  return { target: target.name, seed, executions: i, seconds: (Date.now() - started) / 1000, outcomes, findings, pool: pool.length };
}
