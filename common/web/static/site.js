// Site results: the per-case table of one evaluation, sortable, filtered, a case's picture on click.
"use strict";
const site = {data: JSON.parse(document.getElementById("page").dataset.page), cases: [], key: "case_id", descending: false};

function value(c, key) {
  if (key.startsWith("p:")) return c.probabilities[key.slice(2)] ?? -1;
  if (key === "heatmap") return c.heatmap ? 1 : 0;
  return String(c[key] ?? "");
}

function shown() {
  const filter = document.getElementById("filter").value;
  let cases = site.cases;
  if (filter === "wrong") cases = cases.filter(c => c.correct === false);
  else if (filter.startsWith("class:")) cases = cases.filter(c => c.label === filter.slice(6));
  const sign = site.descending ? -1 : 1;
  return [...cases].sort((a, b) => { const x = value(a, site.key), y = value(b, site.key); return x < y ? -sign : x > y ? sign : 0; });
}

function open(c, tr) {
  document.querySelectorAll("#cases tr.selected").forEach(t => t.classList.remove("selected"));
  tr.classList.add("selected");
  const url = `/site/${encodeURIComponent(site.data.run)}/case/${encodeURIComponent(c.case_id)}/picture`;
  document.getElementById("case-picture").src = url;
  document.getElementById("case-caption").textContent =
    `${c.case_id}: predicted ${c.predicted}${c.label ? `, recorded ${c.label}` : ""}${c.heatmap ? "" : " (no heatmap drawn at evaluation)"}`;
  document.getElementById("case-view").hidden = false;
}

function table() {
  const cases = shown();
  const rows = cases.map(c => {
    const tr = clafed.row([c.case_id, c.label || "–", c.predicted, ...site.data.classes.map(k => clafed.fixed(c.probabilities[k])),
                           c.heatmap ? "yes" : "–"]);
    if (c.correct === false) tr.classList.add("wrong");
    tr.dataset.case = c.case_id;
    tr.addEventListener("click", () => open(c, tr));
    return tr;
  });
  document.querySelector("#cases tbody").replaceChildren(...rows);
  document.getElementById("count").textContent = `${cases.length} of ${site.cases.length} cases`;
}

document.querySelectorAll("#cases th[data-key]").forEach(th => th.addEventListener("click", () => {
  site.descending = site.key === th.dataset.key ? !site.descending : false;
  site.key = th.dataset.key;
  table();
}));
document.getElementById("filter").addEventListener("change", table);
clafed.request(`/api/site/${encodeURIComponent(site.data.run)}/cases`)
  .then(answer => { site.cases = answer.cases; table(); })
  .catch(err => { document.getElementById("count").textContent = String(err.message || err); });
