// The board: rows A/B/C (or a base and a list of models, each with its own parameters, for a
// method the registry marks `many`), method and parameters (from the registry), multiplier or sweep, block
// weights, dtype, format, output name. Every edit is checked by the library (a dry run through
// /api/check), with the CLI's messages; Run starts the same library call the CLI makes.
import { ApiError, baseName, currentTask, el, fill, formatBytes, onTask, post } from "./api.js";
import { blockEditor } from "./blocks.js";

let nextId = 1;

function newRow(board, over = {}) {
  return {
    id: nextId++, name: uniqueName(board, "merge"), method: "weighted-sum", inputs: { a: null, b: null, c: null }, base: null, models: [],
    multiplier: "0.5", params: {}, blocksOn: false, blocks: "", clamp: false, dtype: "same", format: "safetensors", save: true,
    // A recipe's per-key values (any parameter) and block values of parameters other than α:
    // the board does not edit them, it keeps them as loaded and writes them back.
    keptWeights: {}, keptBlocks: {}, ...over,
  };
}

function uniqueName(board, stem) {
  const names = new Set(board.rows.map((r) => r.name));
  for (let k = board.rows.length + 1; ; k++) if (!names.has(`${stem}${k}`)) return `${stem}${k}`;
}

export function initBoard(shared) {
  const board = { rows: [], variables: {}, checkSeq: 0, lastPlan: null };
  const list = document.getElementById("rows");
  const check = document.getElementById("check");
  const method = (name) => shared.methods.find((m) => m.name === name);

  // --- inputs: what a picker shows and what it means -------------------------------------------
  const rowLabel = (r) => `O${board.rows.indexOf(r) + 1} ${r.name}`;
  const inputText = (input) => {
    if (!input) return "";
    if (input.kind === "model") return shared.modelByPath(input.path)?.title ?? input.path;
    if (input.kind === "var") return `__${input.name}__`;
    const r = board.rows.find((x) => x.id === input.id);
    return r ? rowLabel(r) : "";
  };
  const parseInputText = (text) => {
    const t = text.trim();
    if (t === "") return null;
    const o = /^O(\d+)(\s|$)/.exec(t);
    if (o) {
      const r = board.rows[Number(o[1]) - 1];
      return r ? { kind: "row", id: r.id } : { kind: "model", path: t };
    }
    const v = /^__(.+)__$/.exec(t);
    if (v) return { kind: "var", name: v[1] };
    const m = shared.modelByTitle(t);
    return { kind: "model", path: m ? m.path : t };
  };

  // --- the recipe the library sees ---------------------------------------------------------------
  const inputJson = (input) => {
    if (!input) return undefined;
    if (input.kind === "model") return { model: input.path };
    if (input.kind === "var") return { var: input.name };
    const r = board.rows.find((x) => x.id === input.id);
    return r ? { row: r.name } : undefined;
  };
  board.toJson = () => {
    const rows = board.rows.map((r) => {
      const m = method(r.method);
      const out = { name: r.name, method: r.method };
      for (const slot of ["a", "b", "c"]) if (m?.inputs.includes(slot) && r.inputs[slot]) out[slot] = inputJson(r.inputs[slot]);
      if (m?.many) {
        if (m.many.base && r.base) out.base = inputJson(r.base);
        out.models = r.models.map((entry) => {
          const source = inputJson(entry.input) ?? { model: "" };
          const own = {};
          for (const p of m.params.filter((x) => x.perModel)) if ((entry.params[p.name] ?? "").trim() !== "") own[p.name] = Number(entry.params[p.name]);
          const { weight, ...rest } = own;
          return { input: source, ...(weight !== undefined ? { weight } : {}), ...(Object.keys(rest).length ? { params: rest } : {}) };
        });
      }
      if (m?.usesMultiplier) out.multiplier = r.multiplier.trim();
      const params = {};
      for (const p of m?.params.slice(1) ?? []) if (!(m.many && p.perModel) && (r.params[p.name] ?? "").trim() !== "") params[p.name] = Number(r.params[p.name]);
      if (Object.keys(params).length) out.params = params;
      const has = (name) => name === "alpha" || (m?.params ?? []).some((p) => p.name === name);
      const weights = Object.fromEntries(Object.entries(r.keptWeights ?? {}).filter(([name]) => has(name)));
      if (Object.keys(weights).length) out.weights = weights;
      const blocks = { ...(r.blocksOn && r.blocks.trim() !== "" ? { alpha: r.blocks.trim() } : {}), ...Object.fromEntries(Object.entries(r.keptBlocks ?? {}).filter(([name]) => has(name))) };
      if (Object.keys(blocks).length) out.blocks = blocks;
      if (r.clamp && m?.clampable) out.clamp = true;
      if (r.dtype !== "same") out.dtype = r.dtype;
      out.format = r.format;
      if (!r.save) out.save = false;
      return out;
    });
    const bindings = Object.fromEntries(Object.entries(board.variables).filter(([, v]) => v));
    return { recipe: { format: "tensormerge-recipe", version: 1, rows }, bindings };
  };

  /** Loads a JSON recipe (as the server returns it: /api/recipes/parse, a model's embedded recipe). */
  board.load = (recipe, bindings = {}) => {
    board.rows = [];
    const names = recipe.rows.map((r) => r.name);
    const made = recipe.rows.map((r) => newRow(board, { name: r.name }));
    const parse = (v) => {
      if (v === undefined) return null;
      if (typeof v === "string") {
        const o = /^__O(\d+)__$/.exec(v);
        if (o) return made[Number(o[1]) - 1] ? { kind: "row", id: made[Number(o[1]) - 1].id } : null;
        const x = /^__(.+)__$/.exec(v);
        if (x) return { kind: "var", name: x[1] };
        if (names.includes(v)) return { kind: "row", id: made[names.indexOf(v)].id };
        const m = shared.modelByPath(v) ?? shared.modelByTitle(v);
        return { kind: "model", path: m ? m.path : v };
      }
      if (v.var !== undefined) return { kind: "var", name: v.var };
      if (v.row !== undefined) {
        const i = typeof v.row === "number" ? v.row - 1 : names.indexOf(v.row);
        return made[i] ? { kind: "row", id: made[i].id } : null;
      }
      const m = shared.modelByPath(v.model) ?? shared.modelByTitle(v.model);
      return { kind: "model", path: m ? m.path : v.model };
    };
    recipe.rows.forEach((r, i) => {
      const row = made[i];
      row.method = r.method;
      for (const slot of ["a", "b", "c"]) row.inputs[slot] = parse(r[slot]);
      row.base = parse(r.base);
      row.models = (r.models ?? []).map((entry) => {
        const own = typeof entry === "object" && entry !== null ? { ...(entry.weight !== undefined ? { weight: entry.weight } : {}), ...(entry.params ?? {}) } : {};
        const source = typeof entry === "object" && entry !== null && entry.input !== undefined ? entry.input : entry;
        return { input: parse(source), params: Object.fromEntries(Object.entries(own).map(([k, v]) => [k, String(v)])) };
      });
      row.multiplier = r.multiplier === undefined ? "0.5" : Array.isArray(r.multiplier) ? r.multiplier.join(",") : String(r.multiplier);
      row.params = Object.fromEntries(Object.entries(r.params ?? {}).map(([k, v]) => [k, String(v)]));
      if (r.blocks?.alpha !== undefined) { row.blocksOn = true; row.blocks = Array.isArray(r.blocks.alpha) ? r.blocks.alpha.join(",") : r.blocks.alpha; }
      row.keptWeights = structuredClone(r.weights ?? {});
      row.keptBlocks = Object.fromEntries(Object.entries(r.blocks ?? {}).filter(([name]) => name !== "alpha").map(([name, v]) => [name, structuredClone(v)]));
      row.clamp = r.clamp === true;
      row.dtype = r.dtype ?? "same";
      row.format = r.format ?? "safetensors";
      row.save = r.save !== false;
      board.rows.push(row);
    });
    const vars = new Set();
    for (const row of board.rows) for (const i of [...Object.values(row.inputs), row.base, ...row.models.map((e) => e.input)]) if (i?.kind === "var") vars.add(i.name);
    board.variables = Object.fromEntries([...vars].map((v) => [v, bindings[v] ?? board.variables[v] ?? null]));
    render();
  };

  // --- rendering ---------------------------------------------------------------------------------
  function renderVariables() {
    const names = Object.keys(board.variables);
    document.getElementById("variables").hidden = names.length === 0;
    document.getElementById("variable-list").replaceChildren(...names.map((name) => {
      const id = `var-${name}`;
      const input = el("input", { id, list: "model-names", value: board.variables[name] ? (shared.modelByPath(board.variables[name])?.title ?? board.variables[name]) : "", placeholder: "pick a model" });
      input.addEventListener("change", () => {
        const m = shared.modelByTitle(input.value.trim());
        board.variables[name] = input.value.trim() === "" ? null : (m ? m.path : input.value.trim());
        scheduleCheck();
      });
      return el("div", { class: "field" }, el("label", { for: id, text: `__${name}__` }), input);
    }));
  }

  function sourceList(row) {
    const id = `sources-${row.id}`;
    const earlier = board.rows.slice(0, board.rows.indexOf(row));
    return el("datalist", { id }, ...earlier.map((r) => el("option", { value: rowLabel(r) })), ...shared.models.map((m) => el("option", { value: m.title })),
      ...Object.keys(board.variables).map((v) => el("option", { value: `__${v}__` })));
  }

  function field(label, control) {
    control.id ||= `f-${Math.random().toString(36).slice(2)}`;
    return el("div", { class: "field" }, el("label", { for: control.id, text: label }), control);
  }

  function renderRow(row, index) {
    const m = method(row.method);
    const n = index + 1;
    const li = el("li", { class: "row", "data-row": String(n) });
    const changed = (fn) => (e) => { fn(e.target); scheduleCheck(); };
    const name = el("input", { value: row.name, "aria-label": `Output name of row ${n}`, class: "row-name" });
    name.addEventListener("input", changed((t) => { row.name = t.value.trim(); refreshSources(); }));
    const methodSelect = el("select", { "aria-label": `Method of row ${n}`, class: "row-method" }, ...shared.methods.map((x) => el("option", { value: x.name, selected: x.name === row.method, text: x.name })));
    methodSelect.addEventListener("change", () => { row.method = methodSelect.value; render(); });
    const button = (text, label, fn, disabled) => el("button", { type: "button", "aria-label": label, title: label, disabled, onclick: () => { fn(); render(); } }, text);
    const head = el("div", { class: "row-head" },
      el("span", { class: "row-label", text: `O${n}` }), name, methodSelect,
      m ? el("span", { class: "muted", text: m.formula }) : null,
      button("↑", `Move row ${n} up`, () => move(index, -1), index === 0),
      button("↓", `Move row ${n} down`, () => move(index, 1), index === board.rows.length - 1),
      button("Duplicate", `Duplicate row ${n}`, () => board.rows.splice(index + 1, 0, { ...structuredClone(row), id: nextId++, name: uniqueName(board, row.name + "-copy") })),
      button("Remove", `Remove row ${n}`, () => remove(index)),
    );
    const fields = el("div", { class: "row-fields" });
    for (const slot of ["a", "b", "c"]) {
      if (!m?.inputs.includes(slot)) continue;
      const input = el("input", { list: `sources-${row.id}`, value: inputText(row.inputs[slot]), class: `row-${slot}`, placeholder: "model or earlier row", autocomplete: "off" });
      input.addEventListener("change", changed((t) => { row.inputs[slot] = parseInputText(t.value); }));
      fields.append(field(`${slot.toUpperCase()} (row ${n})`, input));
    }
    if (m?.many) {
      while (row.models.length < m.many.min) row.models.push({ input: null, params: {} });
      const picker = (value, cls, label, set) => {
        const input = el("input", { list: `sources-${row.id}`, value: inputText(value), class: cls, placeholder: "model or earlier row", autocomplete: "off" });
        input.addEventListener("change", changed((t) => set(parseInputText(t.value))));
        return field(label, input);
      };
      if (m.many.base) fields.append(picker(row.base, "row-base", `Base (row ${n})`, (v) => { row.base = v; }));
      const models = el("ol", { class: "row-models" }, ...row.models.map((entry, k) => {
        const own = m.params.filter((p) => p.perModel).map((p) => {
          const input = el("input", { type: "number", step: "any", min: p.range[0], max: p.range[1], value: entry.params[p.name] ?? "", placeholder: String(p.default), title: p.summary, class: `row-model-${p.name}` });
          input.addEventListener("input", changed((t) => { entry.params[p.name] = t.value; }));
          return field(`${p.name} (row ${n}, model ${k + 1})`, input);
        });
        return el("li", { class: "row-model-entry" }, picker(entry.input, "row-model", `Model ${k + 1} (row ${n})`, (v) => { entry.input = v; }), ...own,
          button("Remove", `Remove model ${k + 1} of row ${n}`, () => row.models.splice(k, 1), row.models.length <= m.many.min));
      }));
      fields.append(models, button("Add model", `Add model to row ${n}`, () => row.models.push({ input: null, params: {} }), row.models.length >= m.many.max));
    }
    if (m?.usesMultiplier) {
      const input = el("input", { value: row.multiplier, class: "row-multiplier", placeholder: "0.3, or 0.1:0.5:0.1, or 0.2,0.4" });
      input.addEventListener("input", changed((t) => { row.multiplier = t.value; }));
      fields.append(field(`Multiplier M or sweep (row ${n})`, input));
    }
    for (const p of m?.params.slice(1) ?? []) {
      if (m.many && p.perModel) continue; // on each model above
      const input = el("input", { type: "number", step: "any", min: p.range[0], max: p.range[1], value: row.params[p.name] ?? "", placeholder: String(p.default), title: p.summary });
      input.addEventListener("input", changed((t) => { row.params[p.name] = t.value; }));
      fields.append(field(`${p.name} (row ${n})`, input));
    }
    const dtype = el("select", { class: "row-dtype" }, ...shared.info.dtypes.map((d) => el("option", { value: d, selected: d === row.dtype, text: d })));
    dtype.addEventListener("change", changed((t) => { row.dtype = t.value; }));
    fields.append(field(`Dtype (row ${n})`, dtype));
    const format = el("select", { class: "row-format" }, ...shared.info.formats.map((f) => el("option", { value: f, selected: f === row.format, text: f })));
    format.addEventListener("change", changed((t) => { row.format = t.value; }));
    fields.append(field(`Format (row ${n})`, format));
    const save = el("input", { type: "checkbox", checked: row.save, class: "row-save" });
    save.addEventListener("change", changed((t) => { row.save = t.checked; }));
    fields.append(field(`Save (row ${n})`, save));
    if (m?.clampable) {
      const clamp = el("input", { type: "checkbox", checked: row.clamp });
      clamp.addEventListener("change", changed((t) => { row.clamp = t.checked; }));
      fields.append(field(`Clamp to [A, B] (row ${n})`, clamp));
    }
    const kept = [
      ...Object.entries(row.keptWeights ?? {}).filter(([, l]) => l.length).map(([name, l]) => `${name} per key (${l.map((w) => `${w.pattern}=${w.value}`).join(", ")})`),
      ...Object.entries(row.keptBlocks ?? {}).map(([name, v]) => `${name} per block (${Array.isArray(v) ? v.join(",") : v})`),
    ];
    if (kept.length) fields.append(el("p", { class: "muted row-kept", text: `From the recipe, kept as they are (edit them in JSON): ${kept.join("; ")}` }));
    li.append(head, fields, sourceList(row));
    if (m?.usesMultiplier) li.append(blockEditor(shared, row, n, rootModelPath(row), scheduleCheck));
    return li;
  }

  /** The file at the root of a row's A (block maps follow its architecture). */
  function rootModelPath(row, depth = 0) {
    const a = method(row.method)?.many ? row.base : row.inputs.a;
    if (!a || depth > 50) return null;
    if (a.kind === "model") return a.path;
    if (a.kind === "var") return board.variables[a.name] ?? null;
    const r = board.rows.find((x) => x.id === a.id);
    return r ? rootModelPath(r, depth + 1) : null;
  }

  function refreshSources() {
    board.rows.forEach((r) => document.getElementById(`sources-${r.id}`)?.replaceWith(sourceList(r)));
  }

  function move(index, by) {
    const [r] = board.rows.splice(index, 1);
    board.rows.splice(index + by, 0, r);
  }

  function remove(index) {
    const [gone] = board.rows.splice(index, 1);
    const cut = (i) => (i?.kind === "row" && i.id === gone.id ? null : i);
    for (const r of board.rows) {
      for (const s of ["a", "b", "c"]) r.inputs[s] = cut(r.inputs[s]);
      r.base = cut(r.base);
      for (const e of r.models) e.input = cut(e.input);
    }
  }

  function render() {
    list.replaceChildren(...board.rows.map(renderRow));
    renderVariables();
    scheduleCheck();
  }

  // --- live check and the dry-run panel -----------------------------------------------------------
  let timer = null;
  function scheduleCheck() {
    clearTimeout(timer);
    timer = setTimeout(runCheck, 250);
  }

  async function runCheck() {
    const seq = ++board.checkSeq;
    const body = { ...board.toJson(), overwrite: document.getElementById("overwrite").checked };
    let answer;
    try {
      answer = await post("/api/check", body);
    } catch (e) {
      answer = { ok: false, error: { code: e instanceof ApiError ? e.code : "HTTP", message: e.message } };
    }
    if (seq !== board.checkSeq) return; // a newer edit is being checked
    for (const li of list.children) li.classList.remove("bad");
    if (answer.ok) {
      check.className = "check ok";
      check.textContent = answer.plan.warnings.length ? `OK, with warnings: ${answer.plan.warnings.join("; ")}` : "OK: the board can run.";
      board.lastPlan = answer.plan;
      renderPlan(answer.plan);
    } else {
      check.className = "check bad";
      check.textContent = `[${answer.error.code}] ${answer.error.message}`;
      const row = /row (\d+)/.exec(answer.error.message);
      if (row) list.children[Number(row[1]) - 1]?.classList.add("bad");
      board.lastPlan = null;
      document.getElementById("plan").replaceChildren(el("p", { class: "muted", text: "No plan until the board passes its checks." }));
    }
    document.getElementById("run").disabled = !answer.ok || running;
  }

  function renderPlan(plan) {
    fill(document.getElementById("plan"),
      el("p", { text: `${plan.rows} row${plan.rows === 1 ? "" : "s"}, ${plan.passes} pass${plan.passes === 1 ? "" : "es"}: read ${formatBytes(plan.bytesRead)}, write ${formatBytes(plan.bytesWritten)}` }),
      el("table", { class: "grid", id: "plan-inputs" }, el("caption", { text: "Inputs (each read once)" }),
        ...plan.inputs.map((i) => el("tr", {}, el("td", { text: i.name }), el("td", { class: "num", text: formatBytes(i.bytes) })))),
      el("table", { class: "grid", id: "plan-outputs" }, el("caption", { text: "Outputs" }),
        ...plan.outputs.map((o) => el("tr", {}, el("td", { text: `row ${o.row}` }), el("td", { text: baseName(o.path) }), el("td", { text: `M=${o.multiplier}` }), el("td", { class: "num", text: formatBytes(o.bytes) }), el("td", { text: o.state })))),
      plan.unsaved.length ? el("p", { class: "muted", text: `Not saved, computed in the pass: ${plan.unsaved.join(", ")}` }) : null,
      ...plan.disk.map((d) => el("p", { class: "disk", text: `Disk: ${d.dir} needs ${formatBytes(d.needed)}, ${d.free === null ? "free space unknown" : `${formatBytes(d.free)} free`}` })),
    );
  }

  // --- run, cancel, results -------------------------------------------------------------------------
  let running = false;
  let runId = null;
  document.getElementById("run").addEventListener("click", async () => {
    try {
      const { task } = await post("/api/runs", { ...board.toJson(), overwrite: document.getElementById("overwrite").checked });
      runId = task.id;
      // A small run can finish (and its results be shown) before this answer arrives.
      const now = currentTask();
      if (!(now?.id === task.id && now.state !== "running")) document.getElementById("results").replaceChildren(el("p", { class: "muted", text: "Running…" }));
    } catch (e) {
      check.className = "check bad";
      check.textContent = `[${e.code}] ${e.message}`;
    }
  });
  document.getElementById("cancel").addEventListener("click", () => { if (runId) post(`/api/tasks/${runId}/cancel`).catch(() => undefined); });
  document.getElementById("add-row").addEventListener("click", () => { board.rows.push(newRow(board)); render(); list.lastElementChild?.querySelector(".row-name")?.focus(); });
  document.getElementById("overwrite").addEventListener("change", scheduleCheck);

  onTask((t) => {
    if (t.kind !== "run") return;
    running = t.state === "running";
    runId = t.id;
    document.getElementById("cancel").disabled = !running;
    document.getElementById("run").disabled = running;
    if (running) return;
    const results = document.getElementById("results");
    if (t.state === "done") {
      fill(results, el("h2", { text: "Results" }), el("table", { class: "grid", id: "result-table" },
        el("tr", {}, ...["Row", "Output", "M", "Size", "sha256", "State"].map((h) => el("th", { scope: "col", text: h }))),
        ...t.result.outputs.map((o) => el("tr", {}, el("td", { text: String(o.row) }), el("td", { text: baseName(o.path) }), el("td", { text: String(o.multiplier) }),
          el("td", { class: "num", text: formatBytes(o.bytes) }), el("td", { class: "hash", text: o.sha256 ?? "-" }), el("td", { class: "state-done", text: o.state })))),
      ...t.result.warnings.map((w) => el("p", { class: "check bad", text: `warning: ${w}` })),
      el("p", { class: "muted", text: `${t.result.engine} engine (${t.result.isa}), ${t.result.seconds.toFixed(2)} s` }));
      shared.refreshModels().then(scheduleCheck);
    } else {
      results.replaceChildren(el("p", { class: `check bad state-${t.state}`, text: t.state === "cancelled" ? "Cancelled: nothing was written." : `Failed: [${t.error.code}] ${t.error.message}` }));
      scheduleCheck();
    }
  });

  shared.modelListeners.add(() => refreshSources());
  board.rows.push(newRow(board));
  render();
  return board;
}
