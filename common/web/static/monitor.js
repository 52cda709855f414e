// Run monitor: polls /api/run every 2 s and redraws the status, sites, phases, curves and ledger.
"use strict";
const monitor = {mode: document.getElementById("monitor").dataset.mode, timer: null};
const PERIOD_MS = 2000;

// Per phase: the losses, and the accuracies with the validation AUC, over the rounds.
const CHARTS = [
  ["loss", [["loss", "#2563eb", "", "training"], ["val_loss", "#dc2626", "5 3", "validation"]]],
  ["accuracy / AUC", [["accuracy", "#2563eb", "", "training accuracy"], ["val_accuracy", "#dc2626", "5 3", "validation"],
                      ["val_auc", "#059669", "2 2", "validation AUC"]]],
];

function chart(phase, points, what, series) {
  const W = 340, H = 190, P = 34, svgNS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(svgNS, "svg");
  svg.setAttribute("width", W); svg.setAttribute("height", H); svg.setAttribute("data-phase", phase);
  const values = points.flatMap(p => series.map(([k]) => p[k])).filter(v => v !== null && v !== undefined);
  const rounds = points.map(p => p.round);
  const [lo, hi] = values.length ? [Math.min(...values), Math.max(...values)] : [0, 1];
  const [r0, r1] = [Math.min(...rounds), Math.max(...rounds)];
  const x = r => P + (r1 === r0 ? (W - 2 * P) / 2 : (r - r0) / (r1 - r0) * (W - 2 * P));
  const y = v => H - P - (hi === lo ? (H - 2 * P) / 2 : (v - lo) / (hi - lo) * (H - 2 * P));
  const add = (tag, attributes, text) => {
    const node = document.createElementNS(svgNS, tag);
    for (const [k, v] of Object.entries(attributes)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    svg.append(node); return node;
  };
  add("line", {x1: P, y1: H - P, x2: W - P, y2: H - P, stroke: "#9ca3af"});
  add("line", {x1: P, y1: P, x2: P, y2: H - P, stroke: "#9ca3af"});
  add("text", {x: P, y: 14}, `${phase}: ${what}`);
  add("text", {x: 2, y: y(hi) + 4}, clafed.fixed(hi, 2)); add("text", {x: 2, y: y(lo) + 4}, clafed.fixed(lo, 2));
  add("text", {x: x(r0) - 3, y: H - P + 14}, String(r0)); if (r1 !== r0) add("text", {x: x(r1) - 3, y: H - P + 14}, String(r1));
  add("text", {x: W / 2 - 14, y: H - 6}, "round");
  let legend = P + 6;
  series.forEach(([key, colour, dash, label]) => {
    add("text", {x: legend, y: 28}, label).style.fill = colour;  // CSSOM: allowed by the page policy
    legend += 6 * label.length + 14;
    const pts = points.filter(p => p[key] !== null && p[key] !== undefined);
    if (!pts.length) return;
    add("polyline", {points: pts.map(p => `${x(p.round)},${y(p[key])}`).join(" "), fill: "none", stroke: colour,
                     "stroke-width": 2, "stroke-dasharray": dash});
    for (const p of pts) add("circle", {cx: x(p.round), cy: y(p[key]), r: 3, fill: colour});
  });
  const figure = clafed.el("figure");
  figure.append(svg);
  return figure;
}

function show(run) {
  document.getElementById("status").textContent = run.status + (run.finished ? ` at ${run.finished}` : "");
  document.getElementById("current").textContent = run.current ? `${run.current.phase} round ${run.current.round} (${run.current.time})` : "–";
  document.getElementById("rounds").textContent = String(run.rounds_completed);
  document.getElementById("read-at").textContent = `read at ${run.read_at}`;
  document.getElementById("report-link").hidden = !run.report;
  document.querySelector("#sites tbody").replaceChildren(...run.sites.map(s => clafed.row([s.name, s.role, s.cohort || "–"])));
  document.querySelector("#phases tbody").replaceChildren(...run.phases.map(p => clafed.row([p.phase, p.completed, p.planned ?? "–"])));
  document.getElementById("charts").replaceChildren(...Object.entries(run.series).flatMap(([phase, points]) =>
    CHARTS.map(([what, series]) => chart(phase, points, what, series))));
  const problems = run.problems;  // sites that could not take part are among them
  document.getElementById("problems").replaceChildren(...(problems.length ? problems : ["none"]).map(p => clafed.el("li", p)));
  document.querySelector("#ledger tbody").replaceChildren(...[...run.ledger].reverse().map(e =>
    clafed.row([e.phase, e.round, clafed.el("code", e.sha256), Object.entries(e.sites).map(([s, n]) => `${s} (${n})`).join(", ")])));
}

async function poll() {
  try {
    show(await clafed.request(`/api/run${monitor.mode ? `?mode=${encodeURIComponent(monitor.mode)}` : ""}`));
  } catch (err) {
    document.getElementById("status").textContent = `could not read the run: ${err.message || err}`;
  }
  monitor.timer = setTimeout(poll, PERIOD_MS);
}
poll();
