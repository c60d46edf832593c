// Models: every model under the folders with architecture, components, dtypes, size and hashes
// (hashing shows progress in the footer and is cached); a model's recipe as a tree of ancestors;
// check whether the picked models can be merged.
import { baseName, el, fill, formatBytes, get, onTask, post } from "./api.js";

export function initModels(shared) {
  const tbody = document.querySelector("#models tbody");
  const filter = document.getElementById("model-filter");
  const sort = document.getElementById("model-sort");
  const picked = new Set();

  function render() {
    const q = filter.value.trim().toLowerCase();
    const key = sort.value;
    const rows = shared.models
      .filter((m) => !q || [m.title, m.architectureLabel, m.architecture, ...(m.dtypes ?? [])].some((s) => (s ?? "").toLowerCase().includes(q)))
      .sort((x, y) => (key === "title" ? x.title.localeCompare(y.title) : key === "architecture" ? String(x.architecture).localeCompare(String(y.architecture)) : (y[key] ?? 0) - (x[key] ?? 0)));
    tbody.replaceChildren(...rows.map((m) => {
      const box = el("input", { type: "checkbox", checked: picked.has(m.path), "aria-label": `Pick ${m.title}` });
      box.addEventListener("change", () => { if (box.checked) picked.add(m.path); else picked.delete(m.path); });
      const open = el("button", { type: "button", class: "link", text: m.title, onclick: () => showDetail(m.path) });
      return el("tr", {},
        el("td", {}, box), el("td", {}, open),
        el("td", { text: m.error && !m.architecture ? `error [${m.error.code}]` : m.architectureLabel ?? m.architecture ?? "-" }),
        el("td", { text: m.components.map((c) => c.label).join(", ") || "-" }),
        el("td", { text: m.dtypes.join(", ") || "-" }),
        el("td", { class: "num", text: formatBytes(m.size) }),
        el("td", { class: "hash", text: m.autov2 ?? "not hashed" }));
    }));
  }

  async function showDetail(path) {
    const detail = document.getElementById("model-detail");
    detail.replaceChildren(el("p", { class: "muted", text: "Reading the header…" }));
    try {
      const d = await get("/api/models/detail", { path });
      const id = d.inspect.identification;
      fill(detail,
        el("h2", { text: baseName(path) }),
        el("p", { text: `${id.label ?? id.architecture}, ${d.inspect.tensorCount} tensors, ${formatBytes(d.inspect.size)}, ${d.inspect.format}` }),
        el("p", { class: "hash", text: d.hashes ? `sha256 ${d.hashes.sha256} · legacy ${d.hashes.legacy}` : "not hashed yet" }),
        el("p", { text: `Components: ${id.components.map((c) => `${c.label} (${c.tensors} tensors)`).join(", ")}` }),
        el("p", { text: `Dtypes: ${d.inspect.dtypes.map((x) => `${x.dtype} ×${x.tensors}`).join(", ")}` }),
        d.blocks ? el("p", { text: `Blocks: ${d.blocks.label}` }) : null,
        d.recipe ? el("div", {}, el("h3", { text: "Recipe (ancestors)" }), recipeTree(d.recipe),
          el("button", { type: "button", text: "Load this recipe into the board", onclick: () => { shared.board.load(d.recipe); shared.showTab("board"); } })) : el("p", { class: "muted", text: "No tensormerge recipe in its metadata." }),
      );
    } catch (e) {
      detail.replaceChildren(el("p", { class: "check bad", text: `[${e.code}] ${e.message}` }));
    }
  }

  filter.addEventListener("input", render);
  sort.addEventListener("change", render);
  document.getElementById("refresh-models").addEventListener("click", () => shared.refreshModels());
  document.getElementById("hash-models").addEventListener("click", async () => {
    try {
      await post("/api/hash", picked.size ? { paths: [...picked] } : {});
    } catch (e) {
      document.getElementById("compat").textContent = `[${e.code}] ${e.message}`;
    }
  });
  document.getElementById("compat-models").addEventListener("click", async () => {
    const out = document.getElementById("compat");
    if (picked.size < 2) { out.textContent = "Pick two or more models (A first, in the order you picked them)."; return; }
    try {
      const r = await post("/api/compat", { paths: [...picked] });
      out.className = r.compatible ? "check ok" : "check bad";
      out.textContent = r.compatible ? `These models can be merged (${r.sharedKeys} shared tensors).${r.warnings.length ? ` ${r.warnings.join(" ")}` : ""}` : r.reasons.join(" ");
    } catch (e) {
      out.className = "check bad";
      out.textContent = `[${e.code}] ${e.message}`;
    }
  });
  onTask((t) => { if (t.kind === "hash" && t.state !== "running") shared.refreshModels(); });
  shared.modelListeners.add(render);
  render();
}

/** A recipe's last row as the root, each input that is a row as a subtree. */
export function recipeTree(recipe) {
  const names = recipe.rows.map((r) => r.name);
  const node = (i, depth) => {
    const r = recipe.rows[i];
    const m = r.multiplier === undefined ? "" : `, M=${Array.isArray(r.multiplier) ? r.multiplier.join(",") : r.multiplier}`;
    const children = ["a", "b", "c"].filter((s) => r[s] !== undefined).map((s) => {
      const v = r[s];
      const rowIndex = typeof v === "string" ? names.indexOf(v) : typeof v?.row === "string" ? names.indexOf(v.row) : typeof v?.row === "number" ? v.row - 1 : -1;
      if (rowIndex >= 0 && rowIndex < i && depth < 30) return el("li", {}, `${s.toUpperCase()}: `, node(rowIndex, depth + 1));
      const label = typeof v === "string" ? v : v.var ? `__${v.var}__` : `${v.model}${v.sha256 ? ` [${v.sha256.slice(0, 10)}]` : ""}`;
      return el("li", { text: `${s.toUpperCase()}: ${label}` });
    });
    return el("span", {}, el("strong", { text: r.name }), ` = ${r.method}${m}${r.dtype ? `, ${r.dtype}` : ""}`, el("ul", {}, ...children));
  };
  return el("ul", { class: "tree" }, el("li", {}, node(recipe.rows.length - 1, 0)));
}
