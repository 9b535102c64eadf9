// The workflow graph: nodes laid out in columns by dependency depth, edges as curves, drawn as SVG.

import type { NodeState } from "runwire";

/** One node of the workflow, as the demo's `run.started` event describes it. */
export interface GraphNode {
  key: string;
  label: string;
  deps: string[];
}

const SVG = "http://www.w3.org/2000/svg";
const W = 168;
const H = 64;
const GAP_X = 56;
const GAP_Y = 28;
const PAD = 16;

/** Reads `data.graph` of a `run.started` event; `undefined` when it is missing or malformed. */
export function parseGraph(value: unknown): GraphNode[] | undefined {
  if (!Array.isArray(value)) return undefined;
  const nodes: GraphNode[] = [];
  for (const v of value) {
    if (typeof v !== "object" || v === null) return undefined;
    const { key, label, deps } = v as Record<string, unknown>;
    if (typeof key !== "string") return undefined;
    nodes.push({
      key,
      label: typeof label === "string" ? label : key,
      deps: Array.isArray(deps) ? deps.filter((d): d is string => typeof d === "string") : [],
    });
  }
  return nodes;
}

function el<K extends keyof SVGElementTagNameMap>(tag: K, attrs: Record<string, string | number>): SVGElementTagNameMap[K] {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  return e;
}

interface Placed {
  node: GraphNode;
  x: number;
  y: number;
  g: SVGGElement;
  status: SVGTextElement;
  meta: SVGTextElement;
  bar: SVGRectElement;
}

/** A drawn graph; `update` recolours it from the run's node states. */
export class GraphView {
  private placed = new Map<string, Placed>();

  constructor(private svg: SVGSVGElement, nodes: GraphNode[]) {
    svg.replaceChildren();
    const depth = new Map<string, number>();
    const byKey = new Map(nodes.map((n) => [n.key, n]));
    const depthOf = (key: string, seen: Set<string>): number => {
      const known = depth.get(key);
      if (known !== undefined) return known;
      const n = byKey.get(key);
      if (!n || seen.has(key)) return 0;
      seen.add(key);
      const d = n.deps.length ? Math.max(...n.deps.map((k) => depthOf(k, seen) + 1)) : 0;
      depth.set(key, d);
      return d;
    };
    const columns: GraphNode[][] = [];
    for (const n of nodes) (columns[depthOf(n.key, new Set())] ??= []).push(n);
    const rows = Math.max(1, ...columns.map((c) => c?.length ?? 0));
    const width = PAD * 2 + columns.length * W + (columns.length - 1) * GAP_X;
    const height = PAD * 2 + rows * H + (rows - 1) * GAP_Y;
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    svg.style.maxWidth = `${width}px`;

    const edges = el("g", { class: "edges" });
    svg.append(edges);
    columns.forEach((col, ci) => {
      const colHeight = col.length * H + (col.length - 1) * GAP_Y;
      col.forEach((node, ri) => {
        const x = PAD + ci * (W + GAP_X);
        const y = PAD + (height - 2 * PAD - colHeight) / 2 + ri * (H + GAP_Y);
        const g = el("g", { class: "node", "data-node": node.key, "data-status": "pending", transform: `translate(${x},${y})` });
        g.append(el("rect", { class: "box", width: W, height: H, rx: 10 }));
        const title = el("text", { class: "label", x: 14, y: 25 });
        title.textContent = node.label;
        const status = el("text", { class: "status", x: W - 14, y: 25, "text-anchor": "end" });
        const meta = el("text", { class: "meta", x: 14, y: 45 });
        meta.textContent = "waiting";
        g.append(el("rect", { class: "track", x: 14, y: 53, width: W - 28, height: 3, rx: 1.5 }));
        const bar = el("rect", { class: "fill", x: 14, y: 53, width: 0, height: 3, rx: 1.5 });
        g.append(title, status, meta, bar);
        svg.append(g);
        this.placed.set(node.key, { node, x, y, g, status, meta, bar });
      });
    });
    for (const p of this.placed.values()) {
      for (const dep of p.node.deps) {
        const from = this.placed.get(dep);
        if (!from) continue;
        const x1 = from.x + W;
        const y1 = from.y + H / 2;
        const x2 = p.x;
        const y2 = p.y + H / 2;
        const mid = (x1 + x2) / 2;
        edges.append(
          el("path", {
            class: "edge",
            "data-from": dep,
            "data-to": p.node.key,
            d: `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}`,
          }),
        );
      }
    }
  }

  /** Shows each node's status, progress and duration (`now` ticks running nodes). */
  update(nodes: NodeState[], now: number): void {
    const states = new Map(nodes.map((n) => [n.key, n]));
    for (const [key, p] of this.placed) {
      const n = states.get(key);
      const status = n?.status ?? "pending";
      p.g.setAttribute("data-status", status);
      p.status.textContent = { pending: "", running: "●", completed: "✓", failed: "✕", skipped: "–" }[status];
      let meta = "waiting";
      let progress = 0;
      if (status === "running") {
        const started = n?.started_at ? Date.parse(n.started_at) : now;
        progress = n?.progress ?? 0;
        meta = `running · ${formatMs(Math.max(0, now - started))}`;
      } else if (status === "completed") {
        progress = 100;
        meta = `done in ${formatMs(n?.duration_ms ?? 0)}`;
      } else if (status === "failed") {
        progress = n?.progress ?? 100;
        meta = n?.duration_ms !== undefined ? `failed after ${formatMs(n.duration_ms)}` : "failed";
      } else if (status === "skipped") {
        meta = "skipped";
      }
      p.meta.textContent = meta;
      p.bar.setAttribute("width", String(((W - 28) * Math.min(100, progress)) / 100));
    }
    for (const edge of this.svg.querySelectorAll<SVGPathElement>(".edge")) {
      const from = states.get(edge.dataset.from ?? "")?.status;
      const to = states.get(edge.dataset.to ?? "")?.status;
      edge.classList.toggle("done", from === "completed" || from === "skipped");
      edge.classList.toggle("active", from === "completed" && to === "running");
    }
  }
}

/** 850 ms, 2.4 s, 1 m 05 s. */
export function formatMs(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  const s = Math.round(ms / 1000);
  return `${Math.floor(s / 60)} m ${String(s % 60).padStart(2, "0")} s`;
}
