// The engine's dashboard: fetches /v1/dashboard and draws it with Chart.js, every few seconds.
// Page URL options: ?hours=24 (window), ?refresh=10 (seconds), #key=<API key> (kept in
// localStorage, never sent anywhere but this server's /v1/dashboard).
"use strict";

const params = new URLSearchParams(location.search);
const HOURS = params.get("hours") || "24";
const REFRESH_S = Math.max(2, Number(params.get("refresh") || 10));
const PALETTE = ["#3366cc", "#dc3912", "#ff9900", "#109618", "#990099", "#0099c6",
                 "#dd4477", "#66aa00", "#b82e2e", "#316395"];
const charts = {};
window.dashboard = { charts, data: null, loads: 0 };

function apiKey() {
  const match = location.hash.match(/key=([^&]+)/);
  if (match) {
    localStorage.setItem("engine-dashboard-key", decodeURIComponent(match[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
  return localStorage.getItem("engine-dashboard-key");
}

const usd = (v) => "$" + Number(v || 0).toFixed(6);
const ms = (v) => (v === null || v === undefined ? "–" : Number(v).toFixed(1));
const pct = (v) => (100 * Number(v || 0)).toFixed(1) + "%";
const clock = (t) => new Date(t * 1000).toISOString().slice(5, 16).replace("T", " ");

function draw(id, type, labels, datasets, options) {
  const config = {
    type,
    data: { labels, datasets },
    options: Object.assign({ animation: false, responsive: true, maintainAspectRatio: false,
                             plugins: { legend: { position: "bottom", labels: { boxWidth: 10 } } } },
                           options || {}),
  };
  if (charts[id]) {
    charts[id].data = config.data;
    charts[id].update();
  } else {
    charts[id] = new Chart(document.getElementById(id), config);
  }
}

function colour(i) { return PALETTE[i % PALETTE.length]; }

function drawSpend(by, spend) {
  const names = Object.keys(spend.series).sort();
  const datasets = names.map((name, i) => ({
    label: name || "(none)", data: spend.series[name], backgroundColor: colour(i), stack: "s",
  }));
  draw("spend-" + by, "bar", spend.t.map(clock), datasets,
       { scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true } } });
}

function drawProviders(providers) {
  const ids = Object.keys(providers).sort();
  const col = (f) => ids.map((p) => providers[p][f]);
  draw("provider-requests", "bar", ids, [
    { label: "requests", data: col("requests"), backgroundColor: colour(0) },
    { label: "failures", data: col("failures"), backgroundColor: colour(1) },
  ]);
  draw("provider-errors", "bar", ids, [
    { label: "error rate %", data: ids.map((p) => 100 * providers[p].error_rate),
      backgroundColor: colour(1) },
  ], { scales: { y: { beginAtZero: true, suggestedMax: 100 } } });
  draw("provider-latency", "bar", ids, [
    { label: "p50", data: col("latency_p50_ms"), backgroundColor: colour(0) },
    { label: "p95", data: col("latency_p95_ms"), backgroundColor: colour(2) },
  ]);
  rows("providers", ids.map((p) => {
    const v = providers[p];
    return [cell(p), cell(v.status, v.status, v.reason), cell(v.breaker, v.breaker),
            num(v.requests), num(pct(v.error_rate)), num(ms(v.latency_p50_ms)),
            num(ms(v.latency_p95_ms)), num(usd(v.cost_usd))];
  }));
}

function drawBudgets(budgets) {
  const labels = [], used = [], table = [];
  for (const [ws, v] of Object.entries(budgets.workspaces)) {
    for (const [period, spent, limit] of [["day", v.day_usd, v.daily_limit_usd],
                                          ["month", v.month_usd, v.monthly_limit_usd]]) {
      const share = limit ? spent / limit : null;
      labels.push(ws + " (" + period + ")");
      used.push(share === null ? 0 : 100 * share);
      table.push([cell(ws + " / " + period), num(usd(spent)),
                  num(limit ? usd(limit) : "no limit"), num(share === null ? "–" : pct(share))]);
    }
  }
  for (const [key, v] of Object.entries(budgets.keys)) {
    const share = v.budget_usd ? v.spent_usd / v.budget_usd : 0;
    labels.push("key " + key);
    used.push(100 * share);
    table.push([cell("key " + key), num(usd(v.spent_usd)), num(usd(v.budget_usd)), num(pct(share))]);
  }
  draw("budget-burn", "bar", labels, [
    { label: "% of limit used", data: used,
      backgroundColor: used.map((u) => (u >= 90 ? "#b3261e" : u >= 70 ? "#ff9900" : "#109618")) },
  ], { indexAxis: "y", scales: { x: { beginAtZero: true, suggestedMax: 100 } } });
  rows("budgets", table);
}

function cell(text, cls, title) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "–" : String(text);
  if (cls) td.className = cls;
  if (title) td.title = title;
  return td;
}

function num(text) { const td = cell(text); td.classList.add("num"); return td; }

function rows(tableId, cells) {
  const body = document.querySelector("#" + tableId + " tbody");
  body.replaceChildren(...cells.map((r) => { const tr = document.createElement("tr");
                                             tr.append(...r); return tr; }));
}

function render(data) {
  window.dashboard.data = data;
  document.getElementById("total-cost").textContent = usd(data.total_cost_usd);
  document.getElementById("total-attempts").textContent = String(data.total_attempts);
  document.getElementById("window").textContent =
    data.window.hours + " h by " + data.window.bucket + (data.workspace ? " · " + data.workspace : "");
  document.getElementById("updated").textContent = new Date(data.generated * 1000).toLocaleTimeString();
  for (const by of ["model", "provider", "workspace", "key"]) drawSpend(by, data.spend[by]);
  drawProviders(data.providers);
  drawBudgets(data.budgets);
  const open = Object.entries(data.breakers);
  rows("breakers", open.length ? open.map(([k, s]) => [cell(k), cell(s, s)])
                               : [[cell("every breaker is closed", "closed"), cell("")]]);
  rows("failovers", data.failovers.map((f) => [
    cell(clock(f.ts)), cell(f.request_id),
    cell(f.attempts.map((a) => a.model + " " + a.outcome).join(" → ")),
  ]));
}

async function load() {
  const key = apiKey();
  const headers = key ? { authorization: "Bearer " + key } : {};
  const error = document.getElementById("error");
  try {
    const resp = await fetch("/v1/dashboard?hours=" + encodeURIComponent(HOURS), { headers });
    const body = await resp.json();
    if (!resp.ok) throw new Error(body.error ? body.error.message : resp.statusText);
    error.hidden = true;
    render(body);
  } catch (e) {
    error.textContent = "cannot load: " + e.message +
      (String(e.message).includes("API key") ? " (open /dashboard#key=YOUR_KEY)" : "");
    error.hidden = false;
  } finally {
    window.dashboard.loads += 1;
    setTimeout(load, REFRESH_S * 1000);
  }
}

load();
