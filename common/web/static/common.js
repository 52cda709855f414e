// Helpers the pages share: JSON requests with readable errors, and DOM building without innerHTML.
"use strict";
const clafed = {
  async request(url, body) {
    const options = body === undefined ? {credentials: "same-origin"} :
      {method: "POST", credentials: "same-origin", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)};
    const response = await fetch(url, options);
    let answer = null;
    try { answer = await response.json(); } catch (e) { answer = {detail: response.statusText}; }
    if (!response.ok) {
      const detail = answer.detail ?? answer.error ?? response.statusText;
      throw new Error(Array.isArray(detail) ? detail.map(d => `${(d.loc || []).join(".")}: ${d.msg}`).join("; ") : String(detail));
    }
    return answer;
  },
  el(tag, text, attributes) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    for (const [k, v] of Object.entries(attributes || {})) node.setAttribute(k, v);
    return node;
  },
  row(cells) {
    const tr = document.createElement("tr");
    for (const c of cells) tr.append(c instanceof Node ? (() => { const td = document.createElement("td"); td.append(c); return td; })() : clafed.el("td", c));
    return tr;
  },
  fixed(value, digits = 3) { return value === null || value === undefined ? "–" : Number(value).toFixed(digits); },
};
