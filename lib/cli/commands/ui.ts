/** `tensormerge ui`: the merge board in a browser, served on 127.0.0.1 until Ctrl-C. */
import { spawn } from "node:child_process";
import { resolve } from "node:path";
import { MergeError } from "../../errors";
import { defaultModelDirs } from "../../library/scan";
import { startUiServer } from "../../ui/server";
import { defineCommand, ENGINE_OPTIONS, flagArg, listArg, stringArg } from "../command";
import { engineOptions } from "./run";

/** Opens a URL in the desktop's browser; failure is only a message (the URL is printed anyway). */
function openBrowser(url: string): void {
  const command = process.platform === "darwin" ? "open" : process.platform === "win32" ? "explorer" : "xdg-open";
  try {
    const child = spawn(command, [url], { stdio: "ignore", detached: true });
    child.on("error", () => undefined);
    child.unref();
  } catch {
    // no browser launcher: the printed address still works
  }
}

export const uiCommand = defineCommand({
  name: "ui",
  summary: "the merge board in a browser (models, recipes, runs, compare), served on 127.0.0.1",
  usage: "ui [--model-dir DIR …] [--out-dir DIR] [--port N] [--host ADDR] [--open]",
  options: {
    "model-dir": { type: "string", multiple: true, value: "DIR", description: "a model folder (repeatable; default: $TENSORMERGE_MODELS or ./models)" },
    "out-dir": { type: "string", short: "o", value: "DIR", description: "folder for outputs, saved recipes and the history (default: the first model folder)" },
    port: { type: "string", value: "N", description: "port (default 7870; 0 picks a free one)" },
    host: { type: "string", value: "ADDR", description: "address to listen on (default 127.0.0.1; anything else exposes your model folders to that network)" },
    open: { type: "boolean", description: "open the page in the default browser" },
    engine: ENGINE_OPTIONS.engine!,
    threads: ENGINE_OPTIONS.threads!,
  },
  async run(args, io, signal) {
    const dirs = listArg(args, "model-dir").map((d) => resolve(d));
    const portText = stringArg(args, "port") ?? "7870";
    const port = Number(portText);
    if (!Number.isInteger(port) || port < 0 || port > 65535) throw new MergeError("INVALID_ARGUMENT", `Expected a port between 0 and 65535 for --port but received "${portText}"`);
    const outDir = stringArg(args, "out-dir");
    const engine = engineOptions(args);
    const ui = await startUiServer({
      modelDirs: dirs.length ? dirs : defaultModelDirs(),
      ...(outDir !== undefined ? { outDir: resolve(outDir) } : {}),
      port,
      ...(stringArg(args, "host") !== undefined ? { host: stringArg(args, "host")! } : {}),
      ...(engine.engine ? { engine: engine.engine } : {}),
      ...(engine.threads ? { threads: engine.threads } : {}),
    });
    io.out.write(`tensormerge ui: ${ui.url}   (Ctrl-C stops it)\n`);
    if (flagArg(args, "open")) openBrowser(ui.url);
    // Ctrl-C (or SIGTERM, SIGHUP) aborts `signal`: a running merge is cancelled and cleaned up first.
    await new Promise<void>((done) => {
      if (signal.aborted) done();
      else signal.addEventListener("abort", () => done(), { once: true });
    });
    await ui.close();
    io.err.write("tensormerge ui: stopped\n");
    return 0;
  },
});
