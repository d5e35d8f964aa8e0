// Polls the JSON endpoints; every request is a GET, nothing is written anywhere.
"use strict";
const POLL_MS = 2000;
let selectedRun = null;
let experiment = new URLSearchParams(location.search).get("experiment") || "convopt";

async function getJSON(path) {
  const response = await fetch(path, {credentials: "same-origin"});
  if (!response.ok) throw new Error(path + ": " + response.status);
  return response.json();
}

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "-" : text;
  if (cls) td.className = cls;
  return td;
}

function esc(text) {
  return String(text).replace(/[&<>"']/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
}

function fmt(x) { return typeof x === "number" ? x.toPrecision(4) : "-"; }

async function loadExperiments() {
  const data = await getJSON("/api/experiments");
  const select = document.getElementById("experiment");
  select.innerHTML = "";
  const names = data.experiments.includes(experiment) ? data.experiments : [experiment, ...data.experiments];
  for (const name of names) {
    const option = document.createElement("option");
    option.value = option.textContent = name;
    option.selected = name === experiment;
    select.appendChild(option);
  }
  select.onchange = () => { experiment = select.value; selectedRun = null; pollRuns(); };
}

async function pollRuns() {
  const data = await getJSON("/api/runs?experiment=" + encodeURIComponent(experiment));
  const body = document.querySelector("#runs-table tbody");
  body.innerHTML = "";
  for (const run of data.runs) {
    const tr = document.createElement("tr");
    tr.className = "run" + (run.run_id === selectedRun ? " selected" : "");
    tr.dataset.runId = run.run_id;
    tr.dataset.status = run.status;
    tr.append(cell(run.name), cell(run.status, run.status), cell(run.preset), cell(run.seed),
              cell(run.step.toLocaleString()), cell(fmt(run.eval)));
    tr.onclick = () => { selectedRun = run.run_id; pollRun(); pollRuns(); };
    body.appendChild(tr);
  }
  if (!selectedRun && data.runs.length) { selectedRun = data.runs[0].run_id; pollRun(); }
}

async function pollRun() {
  if (!selectedRun) return;
  const data = await getJSON("/api/run/" + selectedRun);
  if (data.run_id !== selectedRun) return;
  const chart = document.getElementById("convergence");
  document.getElementById("run-title").textContent = data.name + " (" + data.status + ")";
  const sampled = Object.values(data.sampled || {});
  document.getElementById("run-counts").textContent =
    data.total_points.toLocaleString() + " metric points shown, " + data.interventions + " intervention(s)" +
    (sampled.length ? "; a sample up to step " + Math.max(...sampled).toLocaleString() + ", every point after" : "");
  chart.dataset.points = data.total_points;
  chart.dataset.interventions = data.interventions;
  chart.dataset.status = data.status;
  await Plotly.react(chart, data.figure.data, data.figure.layout, {responsive: true});
}

async function pollStudies() {
  const data = await getJSON("/api/studies");
  const box = document.getElementById("studies");
  if (!data.studies.length) { box.textContent = data.note || "no A/B studies in this storage"; return; }
  const parts = [];
  for (const name of data.studies) {
    const s = await getJSON("/api/study/" + encodeURIComponent(name));
    const label = arm => (s.labels && s.labels[arm]) || arm;  // one short line; the full spec on hover
    const rows = Object.entries(s.arms).map(([arm, c]) =>
      `<tr><td class="arm" title="${esc(arm)}">${esc(label(arm))}${arm === s.baseline ? " (baseline)" : ""}</td>` +
      `<td>${c.complete}/${c.planned}</td>` +
      `<td>${c.running}</td><td>${c.failed}</td></tr>`).join("");
    const comps = s.comparisons.map(c =>
      `<tr><td class="arm" title="${esc(c.arm)}">${esc(label(c.arm))} - ${esc(label(s.baseline))}</td>` +
      `<td class="ci">${fmt(c.mean_difference)} ` +
      `[${fmt(c.difference_ci_low)}, ${fmt(c.difference_ci_high)}]</td><td>${fmt(c.p_adjusted)}</td>` +
      `<td>${c.significant ? "yes" : "no"}</td></tr>`).join("");
    parts.push(`<h3>${esc(name)}</h3><table class="study" data-study="${esc(name)}"><tr><th>arm</th><th>done</th>` +
      `<th>running</th><th>failed</th></tr>${rows}</table>` +
      (comps ? `<table><tr><th>${esc(s.metric)}</th><th>difference [95% CI]</th><th>p (Holm)</th><th>sig.</th></tr>` +
      `${comps}</table>` : "") + `<p class="muted">${esc(s.verdict)}</p>`);
  }
  box.innerHTML = parts.join("");
}

async function pollRegistry() {
  const data = await getJSON("/api/registry");
  document.getElementById("registry-name").textContent = data.name;
  const body = document.querySelector("#registry-table tbody");
  body.innerHTML = "";
  if (!data.versions.length) { body.innerHTML = "<tr><td colspan=3 class=muted>no versions</td></tr>"; return; }
  for (const v of data.versions) {
    const tr = document.createElement("tr");
    // the evidence in words (p-value, effect, CI), not every tag: the rest is on the version's page
    tr.append(cell(v.version), cell(v.aliases.join(", ")), cell(v.evidence || null, "evidence"));
    body.appendChild(tr);
  }
}

function guard(fn) {
  return async () => {
    try { await fn(); document.getElementById("status").textContent = "updated " + new Date().toLocaleTimeString(); }
    catch (e) { document.getElementById("status").textContent = String(e); }
  };
}

loadExperiments().then(guard(pollRuns));
setInterval(guard(pollRuns), POLL_MS);
setInterval(guard(pollRun), POLL_MS);
guard(pollStudies)(); setInterval(guard(pollStudies), 5 * POLL_MS);
guard(pollRegistry)(); setInterval(guard(pollRegistry), 5 * POLL_MS);
