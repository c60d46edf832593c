// Recipes: classic Merge Board text and JSON in and out of the board, saved recipes, the history
// (load an output's row back into the board), and reproduce from a model's metadata.
import { baseName, currentTask, el, get, onTask, post } from "./api.js";

export function initRecipes(shared) {
  const text = document.getElementById("recipe-text");
  const status = document.getElementById("recipe-status");
  const say = (ok, message) => { status.className = ok ? "check ok" : "check bad"; status.textContent = message; };
  const fail = (e) => say(false, `[${e.code}] ${e.message}`);

  document.getElementById("recipe-load").addEventListener("click", async () => {
    try {
      const { recipe, format } = await post("/api/recipes/parse", { text: text.value });
      shared.board.load(recipe);
      say(true, `Loaded ${recipe.rows.length} row${recipe.rows.length === 1 ? "" : "s"} (${format}) into the board.`);
    } catch (e) { fail(e); }
  });
  const exportAs = (format) => async () => {
    try {
      const { text: out } = await post("/api/recipes/format", { recipe: shared.board.toJson().recipe, format });
      text.value = out;
      say(true, `The board as ${format === "json" ? "JSON" : "classic text"}.`);
    } catch (e) { fail(e); }
  };
  document.getElementById("recipe-export-classic").addEventListener("click", exportAs("classic"));
  document.getElementById("recipe-export-json").addEventListener("click", exportAs("json"));
  document.getElementById("recipe-save").addEventListener("click", async () => {
    const name = document.getElementById("recipe-name").value.trim();
    try {
      let body = text.value;
      if (body.trim() === "") body = (await post("/api/recipes/format", { recipe: shared.board.toJson().recipe, format: name.endsWith(".txt") ? "classic" : "json" })).text;
      const { path } = await post("/api/recipes/save", { name, text: body });
      say(true, `Saved ${path}.`);
      loadFiles();
    } catch (e) { fail(e); }
  });

  async function loadFiles() {
    const { recipes } = await get("/api/recipes");
    document.getElementById("recipe-files").replaceChildren(...recipes.map((r) => el("li", {},
      el("button", { type: "button", text: `Open ${r.name}`, onclick: async () => {
        try {
          const f = await get("/api/recipes/file", { path: r.path });
          text.value = f.text;
          document.getElementById("recipe-name").value = r.name;
          shared.board.load(f.recipe);
          say(true, `Opened ${r.name} into the board.`);
        } catch (e) { fail(e); }
      } }))));
  }

  async function loadHistory() {
    const { entries } = await get("/api/history");
    document.querySelector("#history tbody").replaceChildren(...entries.map((h) => el("tr", {},
      el("td", { text: h.time.replace("T", " ").slice(0, 19) }),
      el("td", { text: h.output.name }),
      el("td", { text: h.method }),
      el("td", { text: String(h.multiplier) }),
      el("td", { text: Object.entries(h.inputs).map(([k, v]) => `${k.toUpperCase()}: ${v.name}`).join(", ") }),
      el("td", {}, el("button", { type: "button", text: "Re-run", "aria-label": `Re-run ${h.output.name}`, onclick: () => rerun(h) })))));
  }

  /** A history line as a one-row board (inputs by the paths recorded), to run again or tweak. */
  function rerun(h) {
    const row = { name: `${h.name}-again`, method: h.method, multiplier: h.multiplier, format: h.format, ...(h.dtype && h.dtype !== "same" ? { dtype: h.dtype } : {}) };
    for (const [slot, input] of Object.entries(h.inputs)) row[slot] = input.path ? { model: input.path } : { model: input.name };
    shared.board.load({ rows: [row] });
    shared.showTab("board");
  }

  document.getElementById("reproduce").addEventListener("click", async () => {
    const out = document.getElementById("reproduce-status");
    const m = shared.modelByTitle(document.getElementById("reproduce-model").value.trim());
    if (!m) { out.className = "check bad"; out.textContent = "Pick a model from the list."; return; }
    try {
      const { task } = await post("/api/reproduce", { path: m.path });
      const now = currentTask();
      if (!(now?.id === task.id && now.state !== "running")) { out.className = "check"; out.textContent = `Reproducing ${m.title}…`; }
    } catch (e) { out.className = "check bad"; out.textContent = `[${e.code}] ${e.message}`; }
  });
  onTask((t) => {
    if (t.state === "running") return;
    if (t.kind === "run") loadHistory();
    if (t.kind === "reproduce") {
      const out = document.getElementById("reproduce-status");
      out.className = t.state === "done" && t.result.identical ? "check ok" : "check bad";
      out.textContent = t.state === "done"
        ? `${baseName(t.result.out)}: ${t.result.identical ? "identical to the original, bit for bit" : "differs from the original"} (sha256 ${t.result.outSha256})`
        : `${t.state}: ${t.error ? `[${t.error.code}] ${t.error.message}` : ""}`;
      shared.refreshModels();
    }
  });
  loadFiles().catch(fail);
  loadHistory().catch(fail);
}
