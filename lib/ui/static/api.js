// The page's client of the JSON API (lib/ui/API.md) and of the task event stream.

/** An API error as the server sent it: { code, message }. */
export class ApiError extends Error {
  constructor(status, body) {
    super(body?.error?.message ?? `HTTP ${status}`);
    this.status = status;
    this.code = body?.error?.code ?? "HTTP";
  }
}

async function request(method, path, body) {
  const res = await fetch(path, {
    method,
    headers: body === undefined ? {} : { "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
  });
  const value = await res.json().catch(() => ({}));
  if (!res.ok) throw new ApiError(res.status, value);
  return value;
}

export const get = (path, query) => request("GET", query ? `${path}?${new URLSearchParams(query)}` : path);
export const post = (path, body = {}) => request("POST", path, body);

const listeners = new Set();
let lastTask = null;

/** Calls `fn(task)` with the current task state now and on every change (every tab sees the same task). */
export function onTask(fn) {
  listeners.add(fn);
  if (lastTask) fn(lastTask);
  return () => listeners.delete(fn);
}

export function currentTask() {
  return lastTask;
}

/** Resolves with the task's final state once it is no longer running. */
export function waitForTask(id) {
  return new Promise((resolve) => {
    const off = onTask((t) => {
      if (t && t.id === id && t.state !== "running") {
        off();
        resolve(t);
      }
    });
  });
}

export function connectEvents() {
  const source = new EventSource("/api/events");
  source.addEventListener("task", (e) => {
    const task = JSON.parse(e.data);
    if (!task) return;
    lastTask = task;
    for (const fn of [...listeners]) fn(task);
  });
  return source;
}

// Small DOM helpers shared by the pages.
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "text") node.textContent = v;
    else if (v === true) node.setAttribute(k, "");
    else node.setAttribute(k, String(v));
  }
  for (const c of children.flat()) if (c !== null && c !== undefined && c !== false) node.append(c instanceof Node ? c : String(c));
  return node;
}

export function formatBytes(n) {
  if (n === null || n === undefined) return "-";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return `${i === 0 ? v : v.toFixed(v < 10 ? 2 : 1)} ${units[i]}`;
}

export function baseName(path) {
  return path.split(/[\\/]/).pop();
}

/** replaceChildren without the null/false placeholders of conditional parts. */
export function fill(node, ...children) {
  node.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
}
