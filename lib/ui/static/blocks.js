// Block weights editor: a preset (SuperMerger's lists, lib/blocks) or one value per block of the
// architecture of the row's model A. The text is what the library reads (a preset name or a list).
import { el, get } from "./api.js";

const mapsByPath = new Map();

function mapFor(shared, path) {
  if (!path) return Promise.resolve(shared.blocks.maps.sd);
  if (!mapsByPath.has(path)) mapsByPath.set(path, get("/api/blocks", { path }).then((r) => r.map ?? null, () => shared.blocks.maps.sd));
  return mapsByPath.get(path);
}

export function blockEditor(shared, row, n, modelPath, onChange) {
  const box = el("div", { class: "blocks" });
  const toggleId = `blocks-on-${row.id}`;
  const toggle = el("input", { type: "checkbox", id: toggleId, checked: row.blocksOn });
  const presetId = `preset-${row.id}`;
  const preset = el("select", { id: presetId }, el("option", { value: "", text: "custom values" }),
    ...shared.blocks.presets.map((p) => el("option", { value: p.name, text: p.name, selected: p.name === row.blocks })));
  const textId = `blocks-text-${row.id}`;
  const text = el("input", { id: textId, value: row.blocks, size: 60, placeholder: "a preset name or one value per block, comma-separated" });
  const grid = el("div", { class: "block-grid", role: "group", "aria-label": `Block values of row ${n}` });
  const body = el("div", { hidden: !row.blocksOn },
    el("div", { class: "toolbar" }, el("label", { for: presetId, text: "Preset" }), preset, el("label", { for: textId, text: "Values" }), text), grid);
  box.append(el("label", {}, toggle, ` Block weights (row ${n})`), body);

  let names = [];
  const valuesOf = (spec) => {
    const p = shared.blocks.presets.find((x) => x.name === spec.trim());
    if (p) return p.values.length === names.length ? p.values : null;
    const list = spec.split(",").map((s) => s.trim());
    return list.length === names.length && list.every((s) => s !== "" && Number.isFinite(Number(s))) ? list.map(Number) : null;
  };
  const drawGrid = () => {
    const values = valuesOf(row.blocks) ?? names.map(() => "");
    grid.replaceChildren(...names.map((b, i) => {
      const input = el("input", { type: "number", step: "any", value: values[i] === "" ? "" : String(values[i]), "aria-label": `${b} (row ${n})` });
      input.addEventListener("input", () => {
        const all = [...grid.querySelectorAll("input")].map((x) => x.value.trim() || "0");
        row.blocks = all.join(",");
        text.value = row.blocks;
        preset.value = "";
        onChange();
      });
      return el("label", {}, b, input);
    }));
  };
  mapFor(shared, modelPath).then((map) => {
    names = map ? map.names : [];
    if (!map) grid.replaceChildren(el("p", { class: "muted", text: "Model A's architecture has no block map: use per-key patterns in a JSON recipe." }));
    else drawGrid();
  });
  toggle.addEventListener("change", () => { row.blocksOn = toggle.checked; body.hidden = !toggle.checked; onChange(); });
  preset.addEventListener("change", () => { if (preset.value) { row.blocks = preset.value; text.value = preset.value; drawGrid(); onChange(); } });
  text.addEventListener("input", () => { row.blocks = text.value; drawGrid(); onChange(); });
  return box;
}
