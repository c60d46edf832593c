// Entry point: tabs, shared data (info, methods, blocks, models), the task footer.
import { connectEvents, el, fill, formatBytes, get, onTask, post, baseName } from "./api.js";
import { initBoard } from "./board.js";
import { initModels } from "./models.js";
import { initRecipes } from "./recipes.js";
import { initCompare } from "./compare.js";

const shared = {
  info: null,
  methods: [],
  blocks: null,
  models: [],
  modelListeners: new Set(),
  /** Reloads the model list (after a run, a hash) and tells every page. */
  async refreshModels() {
    shared.models = (await get("/api/models")).models;
    const list = document.getElementById("model-names");
    list.replaceChildren(...shared.models.map((m) => el("option", { value: m.title })));
    for (const fn of shared.modelListeners) fn(shared.models);
  },
  modelByTitle(title) {
    return shared.models.find((m) => m.title === title) ?? shared.models.find((m) => m.name === title);
  },
  modelByPath(path) {
    return shared.models.find((m) => m.path === path);
  },
  showTab(name) {
    document.getElementById(`tab-${name}`).click();
  },
};

function initTabs() {
  const tabs = [...document.querySelectorAll("[role=tab]")];
  const select = (tab) => {
    for (const t of tabs) {
      const on = t === tab;
      t.setAttribute("aria-selected", String(on));
      t.tabIndex = on ? 0 : -1;
      document.getElementById(t.getAttribute("aria-controls")).hidden = !on;
    }
  };
  tabs.forEach((tab, i) => {
    tab.addEventListener("click", () => select(tab));
    tab.addEventListener("keydown", (e) => {
      const next = e.key === "ArrowRight" ? tabs[(i + 1) % tabs.length] : e.key === "ArrowLeft" ? tabs[(i + tabs.length - 1) % tabs.length] : null;
      if (next) { select(next); next.focus(); }
    });
  });
}

/** The footer: whatever task runs (in any tab), one bar per pass, each output's state. */
function initTaskFooter() {
  const footer = document.getElementById("task");
  const cancel = document.getElementById("task-cancel");
  let current = null;
  cancel.addEventListener("click", () => { if (current) post(`/api/tasks/${current.id}/cancel`).catch(() => undefined); });
  onTask((t) => {
    current = t;
    footer.hidden = false;
    const state = t.state === "running" ? (t.phase ?? "starting") : t.state;
    fill(document.getElementById("task-title"),el("strong", { text: t.title }), " — ", el("span", { class: `state-${t.state}`, id: "task-state", text: state }),
      t.error ? el("span", { class: "state-failed", text: ` [${t.error.code}] ${t.error.message}` }) : null);
    const bars = [];
    if (t.hashing && t.state === "running") {
      const f = t.hashing.bytesTotal ? t.hashing.bytesDone / t.hashing.bytesTotal : 0;
      bars.push(bar(`hashing ${baseName(t.hashing.path)}`, f, `${formatBytes(t.hashing.bytesDone)} / ${formatBytes(t.hashing.bytesTotal)}`));
    }
    for (const p of t.passes) {
      const label = t.kind === "run" || t.kind === "reproduce" ? `pass ${p.pass}/${p.passes}` : t.kind;
      bars.push(bar(label, p.fraction, `${Math.round(p.fraction * 100)}%`));
    }
    document.getElementById("task-bars").replaceChildren(...bars);
    document.getElementById("task-outputs").replaceChildren(...t.outputs.map((o) => el("li", {}, baseName(o.path), " ", el("span", { class: `state-${o.state.replace(" ", "-")}`, text: o.state }))));
    cancel.disabled = t.state !== "running";
  });
}

function bar(label, fraction, text) {
  const id = `bar-${Math.random().toString(36).slice(2)}`;
  return el("div", { class: "bar" }, el("label", { for: id, text: label }), el("progress", { id, max: "1", value: String(Math.min(1, fraction)), "aria-valuetext": text }), el("span", { class: "pct", text }));
}

async function main() {
  initTabs();
  const [info, methods, blocks] = await Promise.all([get("/api/info"), get("/api/methods"), get("/api/blocks")]);
  Object.assign(shared, { info, methods: methods.methods, blocks });
  document.getElementById("folders").textContent = `models: ${info.modelDirs.join(", ")} · outputs: ${info.outDir}`;
  await shared.refreshModels();
  initTaskFooter();
  const board = initBoard(shared);
  shared.board = board;
  initModels(shared);
  initRecipes(shared);
  initCompare(shared);
  connectEvents();
  document.body.dataset.ready = "true";
}

main().catch((e) => {
  document.querySelector("main").prepend(el("p", { class: "check bad", role: "alert", text: `The page could not start: ${e.message}` }));
});
