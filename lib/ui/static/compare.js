// Compare: one line per model, how far each block moved from the base (relative L2 distance per
// block, computed by the library's streaming pass), drawn as an SVG chart.
import { currentTask, el, onTask, post, baseName } from "./api.js";

const COLORS = ["#0b61c4", "#d1242f", "#1a7f37", "#8250df", "#bf8700", "#0e7490", "#c2410c", "#6e7781"];
const NS = "http://www.w3.org/2000/svg";

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

export function initCompare(shared) {
  const list = document.getElementById("compare-models");
  const status = document.getElementById("compare-status");
  let taskId = null;

  const addPicker = (value = "") => {
    const n = list.children.length + 1;
    const input = el("input", { list: "model-names", value, "aria-label": `Compared model ${n}`, class: "compare-model" });
    const remove = el("button", { type: "button", text: "Remove", "aria-label": `Remove compared model ${n}`, onclick: () => li.remove() });
    const li = el("li", {}, input, " ", remove);
    list.append(li);
    return input;
  };
  document.getElementById("compare-add").addEventListener("click", () => addPicker().focus());
  addPicker();

  document.getElementById("compare-run").addEventListener("click", async () => {
    const titles = [document.getElementById("compare-base").value, ...[...list.querySelectorAll("input")].map((i) => i.value)].map((t) => t.trim()).filter(Boolean);
    const paths = titles.map((t) => shared.modelByTitle(t)?.path ?? t);
    if (paths.length < 2) { status.className = "check bad"; status.textContent = "Pick a base and at least one model to compare with it."; return; }
    try {
      const { task } = await post("/api/compare", { paths });
      taskId = task.id;
      status.className = "check"; status.textContent = "Comparing…";
      // A small comparison can finish (and its event arrive) before this answer.
      const now = currentTask();
      if (now && now.id === taskId) show(now);
    } catch (e) { status.className = "check bad"; status.textContent = `[${e.code}] ${e.message}`; }
  });

  onTask((t) => show(t));
  function show(t) {
    if (t.kind !== "compare" || t.id !== taskId || t.state === "running") return;
    if (t.state !== "done") { status.className = "check bad"; status.textContent = `${t.state}: ${t.error ? `[${t.error.code}] ${t.error.message}` : ""}`; return; }
    status.className = "check ok";
    status.textContent = `${t.result.series.length} model${t.result.series.length === 1 ? "" : "s"} against ${t.result.base.name}, by ${t.result.groupingLabel}`;
    document.getElementById("compare-chart").replaceChildren(...chart(t.result));
  }
}

/** A line chart: x = blocks in order, y = relative L2 distance, one series per model. */
export function chart(report) {
  const w = 960, h = 360, left = 56, right = 16, top = 16, bottom = 64;
  const n = report.blocks.length;
  const values = report.series.flatMap((s) => s.values.filter((v) => v !== null));
  const max = Math.max(1e-12, ...values) * 1.08;
  const x = (i) => left + (n <= 1 ? 0 : (i * (w - left - right)) / (n - 1));
  const y = (v) => top + (h - top - bottom) * (1 - v / max);
  const root = svg("svg", { viewBox: `0 0 ${w} ${h}`, role: "img", "aria-labelledby": "compare-title", id: "compare-svg" },
    svg("title", { id: "compare-title" }, `Relative L2 distance per block from ${report.base.name}`));
  for (let k = 0; k <= 4; k++) {
    const v = (max * k) / 4;
    root.append(svg("line", { x1: left, x2: w - right, y1: y(v), y2: y(v), stroke: "#d0d7de" }),
      svg("text", { x: left - 6, y: y(v) + 4, "text-anchor": "end", "font-size": 11, fill: "#5c6670" }, v.toPrecision(2)));
  }
  report.blocks.forEach((b, i) => {
    if (n > 30 && i % Math.ceil(n / 30) !== 0) return;
    root.append(svg("text", { x: x(i), y: h - bottom + 14, "font-size": 10, fill: "#5c6670", transform: `rotate(60 ${x(i)} ${h - bottom + 14})` }, b));
  });
  report.series.forEach((s, j) => {
    const color = COLORS[j % COLORS.length];
    const g = svg("g", { class: "series", "data-model": s.name });
    let d = "";
    s.values.forEach((v, i) => {
      if (v === null) return;
      d += `${d === "" || s.values[i - 1] === null ? "M" : "L"}${x(i).toFixed(1)},${y(v).toFixed(1)} `;
      g.append(svg("circle", { cx: x(i), cy: y(v), r: 3, fill: color }, svg("title", {}, `${s.name} ${report.blocks[i]}: ${v.toPrecision(4)}`)));
    });
    g.prepend(svg("path", { d: d.trim(), fill: "none", stroke: color, "stroke-width": 2 }));
    root.append(g);
  });
  const legend = el("figcaption", { class: "legend" }, ...report.series.map((s, j) => {
    const span = el("span", { text: baseName(s.path) });
    span.style.setProperty("--c", COLORS[j % COLORS.length]);
    return span;
  }));
  return [root, legend];
}
