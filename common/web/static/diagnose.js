// Diagnose page: read the two images, show them (decoded by the server, so DICOM works too), let
// the user drag the node's box on the B-mode image, then show the diagnosis and each level's maps.
"use strict";
const info = JSON.parse(document.getElementById("page").dataset.page);
const state = {bus: null, cdfi: null, roi: null, answer: null, drag: null};
const $ = id => document.getElementById(id);

function showError(err) { $("error").textContent = err ? String(err.message || err) : ""; }

function readBase64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).split(",", 2)[1] || "");
    reader.onerror = () => reject(new Error(`could not read ${file.name}`));
    reader.readAsDataURL(file);
  });
}

function loadImage(src) {
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => resolve(image);
    image.onerror = () => reject(new Error("the server's image could not be shown"));
    image.src = src;
  });
}

function draw(slot) {
  const canvas = $(`${slot}-canvas`), item = state[slot];
  if (!item) return;
  canvas.width = item.image.naturalWidth; canvas.height = item.image.naturalHeight;
  const ctx = canvas.getContext("2d");
  ctx.drawImage(item.image, 0, 0);
  const box = state.drag ? state.drag.box : state.roi;
  if (box) {
    ctx.strokeStyle = "#ffd24d"; ctx.lineWidth = Math.max(2, Math.round(canvas.width / 300));
    ctx.strokeRect(box[0] + .5, box[1] + .5, box[2], box[3]);
  }
}

function showBox() {
  $("roi-text").textContent = state.roi ? state.roi.join(", ") + " (x, y, width, height in pixels)"
    : (info.has_localiser ? "none (the localiser will propose one)" : "none (the whole image)");
  draw("bus"); draw("cdfi");
}

async function choose(slot) {
  showError(null);
  const file = $(`${slot}-file`).files[0];
  if (!file) return;
  try {
    const data = await readBase64(file);
    const decoded = await clafed.request("/api/diagnose/decode", {slot, name: file.name, data});
    state[slot] = {name: file.name, data, image: await loadImage(decoded.image), source: decoded.source};
    $(`${slot}-source`).textContent = `${slot === "bus" ? "B-mode" : "CDFI"}: ${decoded.name}, ${decoded.width}x${decoded.height} px (${decoded.source})`;
    if (!$("case-id").value) $("case-id").value = file.name.replace(/\.[^.]*$/, "").replace(/_(bus|cdfi)$/i, "");
  } catch (err) { state[slot] = null; showError(err); }
  $("diagnose").disabled = !(state.bus && state.cdfi);
  showBox();
}

function imagePoint(event) {
  const canvas = $("bus-canvas"), rect = canvas.getBoundingClientRect();
  const x = (event.clientX - rect.left) * canvas.width / rect.width, y = (event.clientY - rect.top) * canvas.height / rect.height;
  return [Math.min(Math.max(Math.round(x), 0), canvas.width), Math.min(Math.max(Math.round(y), 0), canvas.height)];
}

function dragTo(event) {
  const [x, y] = imagePoint(event), [x0, y0] = state.drag.start;
  state.drag.box = [Math.min(x, x0), Math.min(y, y0), Math.abs(x - x0), Math.abs(y - y0)];
  draw("bus"); draw("cdfi");
}

$("bus-canvas").addEventListener("mousedown", event => {
  if (!state.bus) return;
  state.drag = {start: imagePoint(event), box: null};
});
$("bus-canvas").addEventListener("mousemove", event => { if (state.drag) dragTo(event); });
window.addEventListener("mouseup", event => {
  if (!state.drag) return;
  dragTo(event);
  const box = state.drag.box;
  state.drag = null;
  if (box && box[2] >= 4 && box[3] >= 4) state.roi = box;
  showBox();
});

$("bus-file").addEventListener("change", () => choose("bus"));
$("cdfi-file").addEventListener("change", () => choose("cdfi"));
$("clear-box").addEventListener("click", () => { state.roi = null; showBox(); });
if ($("propose")) $("propose").addEventListener("click", async () => {
  showError(null);
  if (!state.bus) return showError("choose the B-mode image first");
  try { state.roi = (await clafed.request("/api/diagnose/propose", {name: state.bus.name, data: state.bus.data})).roi; }
  catch (err) { showError(err); }
  showBox();
});

function showLevel(index) {
  const level = state.answer.levels[index];
  $("bus-heat").src = level.bus; $("cdfi-heat").src = level.cdfi;
}

function showAnswer(answer) {
  state.answer = answer;
  const r = answer.result;
  $("diagnosis").textContent = `Diagnosis: ${r.diagnosis}`;
  $("path").textContent = r.path;
  const body = $("probabilities").querySelector("tbody");
  body.replaceChildren(...answer.classes.map(c => clafed.row([c, clafed.fixed(r.probabilities[c])])));
  const levels = $("levels");
  levels.querySelectorAll("label").forEach(l => l.remove());
  answer.levels.forEach((level, i) => {
    const input = clafed.el("input", null, {type: "radio", name: "level", value: String(i), id: `level-${i}`});
    if (i === 0) input.checked = true;
    input.addEventListener("change", () => showLevel(i));
    const label = clafed.el("label", null, {for: `level-${i}`});
    label.append(input, ` level ${i + 1} (${level.title}): ${level.class} ${clafed.fixed(level.probability, 2)}`);
    levels.append(label);
  });
  $("bus-image").src = answer.images.bus; $("cdfi-image").src = answer.images.cdfi;
  showLevel(0);
  const stem = (r.case_id || "case").replace(/[^A-Za-z0-9._-]/g, "_");
  $("download-picture").href = answer.picture; $("download-picture").download = `${stem}_heatmap.png`;
  const json = new Blob([JSON.stringify(r, null, 2)], {type: "application/json"});
  $("download-json").href = URL.createObjectURL(json); $("download-json").download = `${stem}.json`;
  $("result").hidden = false;
}

$("diagnose").addEventListener("click", async () => {
  showError(null);
  $("diagnose").disabled = true;
  try {
    showAnswer(await clafed.request("/api/diagnose/run", {
      bus: {name: state.bus.name, data: state.bus.data}, cdfi: {name: state.cdfi.name, data: state.cdfi.data},
      roi: state.roi, case_id: $("case-id").value}));
  } catch (err) { showError(err); }
  $("diagnose").disabled = false;
});

$("opacity").addEventListener("input", () => {
  for (const id of ["bus-heat", "cdfi-heat"]) $(id).style.opacity = $("opacity").value;
});
