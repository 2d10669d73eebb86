// The admin console: plain JS over the JSON admin API. The token lives in sessionStorage
// (gone when the tab closes) and travels as `Authorization: Bearer`. Everything shown is set
// with textContent, never as HTML, so names and errors from the server cannot run code.
"use strict";

const ROOT = document.body.dataset.root || "";
const API = ROOT + "/admin/api";
const TOKEN_KEY = "gateway-admin-token";
const $ = (id) => document.getElementById(id);
let keyNames = {};

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const c of cells) {
    const td = document.createElement("td");
    if (c instanceof Node) td.appendChild(c); else td.textContent = c === null || c === undefined ? "-" : String(c);
    tr.appendChild(td);
  }
  return tr;
}

function fmtTime(ts) {
  if (ts === null || ts === undefined) return "-";
  return new Date(ts * 1000).toISOString().replace("T", " ").slice(0, 19);
}

function say(id, text, ok) {
  const m = $(id);
  m.textContent = text || "";
  m.className = "msg " + (ok ? "ok" : "error");
}

class ApiFailure extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(method, path, body, raw) {
  const headers = { "Authorization": "Bearer " + (sessionStorage.getItem(TOKEN_KEY) || "") };
  const init = { method, headers };
  if (body !== undefined) {
    headers["Content-Type"] = raw ? "text/plain" : "application/json";
    init.body = raw ? body : JSON.stringify(body);
  }
  const resp = await fetch(API + path, init);
  let data = null;
  try { data = await resp.json(); } catch (e) { data = null; }
  if (!resp.ok) {
    const message = (data && data.error && data.error.message) || ("HTTP " + resp.status);
    if (resp.status === 401 && path !== "/session") logout("Your session ended: " + message);
    throw new ApiFailure(resp.status, message);
  }
  return data;
}

// --- login ----------------------------------------------------------------------------------

function showApp(on) {
  $("login").hidden = on;
  $("nav").hidden = !on;
  if (!on) for (const s of document.querySelectorAll("section.page")) s.hidden = true;
}

function logout(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  showApp(false);
  say("login-msg", message || "", false);
}

async function login(token) {
  sessionStorage.setItem(TOKEN_KEY, token);
  try {
    await api("GET", "/session");
  } catch (e) {
    sessionStorage.removeItem(TOKEN_KEY);
    say("login-msg", e.message, false);
    return;
  }
  say("login-msg", "", true);
  showApp(true);
  show(location.hash.slice(1) || "credentials");
}

// --- tabs ------------------------------------------------------------------------------------

const LOADERS = { credentials: loadCredentials, keys: loadKeys, usage: loadUsage, requests: loadRequests };

function show(tab) {
  if (!LOADERS[tab]) tab = "credentials";
  for (const s of document.querySelectorAll("section.page")) s.hidden = s.id !== tab;
  for (const b of document.querySelectorAll("nav button[data-tab]")) b.classList.toggle("active", b.dataset.tab === tab);
  history.replaceState(null, "", "#" + tab);
  LOADERS[tab]().catch((e) => console.error(e));
}

// --- credentials -------------------------------------------------------------------------------

async function loadCredentials() {
  const body = $("cred-table").tBodies[0];
  let data;
  try { data = await api("GET", "/credentials"); } catch (e) { say("cred-msg", e.message); return; }
  body.replaceChildren();
  for (const c of data.credentials) {
    const cooling = Object.entries(c.cooling_until || {})
      .map(([m, until]) => m + " until " + fmtTime(until)).join("; ");
    const quota = (c.quota || []).map((q) => q.model + " " + Math.round(q.remaining_fraction * 100) + "%").join("; ");
    const project = [c.project, c.tier].filter(Boolean).join(" / ");
    let action = el("span", "");
    if (c.id !== "(none)" && c.state !== "STATE_UNSPECIFIED") {
      const enable = c.state === "DISABLED";
      action = el("button", enable ? "Enable" : "Disable", enable ? "" : "quiet");
      action.dataset.credential = c.id;
      action.addEventListener("click", async () => {
        try {
          await api("POST", "/credentials/" + encodeURIComponent(c.id) + (enable ? "/enable" : "/disable"));
          say("cred-msg", "credential " + c.id + (enable ? " enabled" : " disabled"), true);
        } catch (e) { say("cred-msg", e.message); }
        loadCredentials();
      });
    }
    const tr = row([c.id, c.kind + (c.auth ? " (" + c.auth + ")" : ""), el("span", c.state, "state state-" + c.state),
                    project || "-", cooling || "-", quota || "-", c.last_error || c.detail || "-",
                    c.requests + " / " + c.failures + " failed", action]);
    tr.dataset.credential = c.id;
    body.appendChild(tr);
  }
}

async function addCredential() {
  let content = $("cred-paste").value;
  const file = $("cred-file").files[0];
  if (!content.trim() && file) content = await file.text();
  if (!content.trim()) { say("cred-msg", "paste a credential or choose a file"); return; }
  try {
    const out = await api("POST", "/credentials", content, true);
    say("cred-msg", "added credential " + out.credential.id + " (" + out.credential.kind + ")", true);
    $("cred-paste").value = "";
    $("cred-file").value = "";
  } catch (e) { say("cred-msg", e.message); }
  loadCredentials();
}

// --- keys ----------------------------------------------------------------------------------------

function limitsOf(prefix) {
  const v = (name) => $(prefix + name).value.trim();
  const out = { name: v("name"), models: v("models").split(",").map((s) => s.trim()).filter(Boolean) };
  for (const [field, id] of [["rpm", "rpm"], ["tpm", "tpm"], ["quota", "quota"], ["max_concurrent", "concurrent"]]) {
    out[field] = v(id) === "" ? null : v(id);
  }
  return out;
}

async function createKey(ev) {
  ev.preventDefault();
  const body = limitsOf("key-");
  const expires = $("key-expires").value.trim();
  if (expires) body.expires = expires;
  try {
    const out = await api("POST", "/keys", body);
    $("new-key").textContent = out.key;
    $("new-key-box").hidden = false;
    say("key-msg", "created key " + out.record.id + " (" + out.record.name + ")", true);
    $("key-form").reset();
  } catch (e) { say("key-msg", e.message); }
  loadKeys();
}

function keyButton(text, cls, action) {
  const b = el("button", text, cls);
  b.addEventListener("click", action);
  return b;
}

async function keyAction(id, action) {
  try {
    await api("POST", "/keys/" + id + "/" + action);
    say("key-msg", "key " + id + ": " + action + (action.endsWith("e") ? "d" : "ed"), true);
  } catch (e) { say("key-msg", e.message); }
  loadKeys();
}

function startEdit(k) {
  $("edit-form").hidden = false;
  $("edit-title").textContent = k.id + " (" + k.name + ")";
  $("edit-id").value = k.id;
  $("edit-name").value = k.name;
  $("edit-models").value = k.models.join(",");
  $("edit-rpm").value = k.rpm ?? "";
  $("edit-tpm").value = k.tpm ?? "";
  $("edit-quota").value = k.quota ?? "";
  $("edit-concurrent").value = k.max_concurrent ?? "";
  $("edit-expires").value = "";
}

async function saveEdit(ev) {
  ev.preventDefault();
  const body = limitsOf("edit-");
  const expires = $("edit-expires").value.trim();
  if (expires) body.expires = expires.toLowerCase() === "never" ? null : expires;
  try {
    const out = await api("PATCH", "/keys/" + $("edit-id").value, body);
    say("key-msg", "saved key " + out.record.id, true);
    $("edit-form").hidden = true;
  } catch (e) { say("key-msg", e.message); }
  loadKeys();
}

async function loadKeys() {
  let data;
  try { data = await api("GET", "/keys"); } catch (e) { say("key-msg", e.message); return; }
  const body = $("key-table").tBodies[0];
  body.replaceChildren();
  keyNames = {};
  for (const k of data.keys) {
    keyNames[k.id] = k.name;
    const actions = el("span");
    if (k.state !== "revoked") {
      actions.appendChild(keyButton("Edit", "quiet", () => startEdit(k)));
      actions.appendChild(k.enabled ? keyButton("Disable", "quiet", () => keyAction(k.id, "disable"))
                                    : keyButton("Enable", "", () => keyAction(k.id, "enable")));
      const revoke = keyButton("Revoke", "danger", () => {
        // Two clicks: a revoked key cannot come back.
        if (revoke.dataset.armed) { keyAction(k.id, "revoke"); return; }
        revoke.dataset.armed = "1";
        revoke.textContent = "Really revoke?";
      });
      revoke.className = "danger revoke";
      actions.appendChild(revoke);
    }
    const used = k.tokens_used + (k.quota_remaining !== null ? " (" + k.quota_remaining + " left)" : "");
    const tr = row([k.id, k.name, k.prefix + "…", el("span", k.state, "state state-" + k.state),
                    k.models.join(", ") || "all", k.rpm, k.tpm, k.quota, used, k.max_concurrent,
                    fmtTime(k.expires_at), actions]);
    tr.dataset.key = k.id;
    tr.dataset.name = k.name;
    body.appendChild(tr);
  }
}

// --- usage -------------------------------------------------------------------------------------

const COLOURS = ["#3b6fd8", "#e8710a", "#1e8e3e", "#d93025", "#9334e6", "#12b5cb", "#f9ab00", "#5f6368"];
const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

function drawChart(byDay, days, measure) {
  const chart = $("usage-chart");
  chart.replaceChildren();
  const width = 900, height = 260, left = 60, bottom = 30, top = 10;
  const dayList = [];
  const today = new Date();
  for (let i = days - 1; i >= 0; i--) {
    dayList.push(new Date(Date.UTC(today.getUTCFullYear(), today.getUTCMonth(), today.getUTCDate() - i))
      .toISOString().slice(0, 10));
  }
  const models = [...new Set(byDay.map((d) => d.model))].sort();
  const totals = {};
  for (const d of byDay) {
    totals[d.day] = totals[d.day] || {};
    totals[d.day][d.model] = (totals[d.day][d.model] || 0) + d[measure];
  }
  const max = Math.max(1, ...dayList.map((day) => Object.values(totals[day] || {}).reduce((a, b) => a + b, 0)));
  const plotH = height - top - bottom;
  const slot = (width - left - 10) / dayList.length;
  chart.appendChild(svg("line", { x1: left, y1: top + plotH, x2: width - 10, y2: top + plotH, stroke: "#9aa0a6" }));
  chart.appendChild(svg("text", { x: left - 6, y: top + 10, "text-anchor": "end", "font-size": 11 }, String(max)));
  chart.appendChild(svg("text", { x: left - 6, y: top + plotH, "text-anchor": "end", "font-size": 11 }, "0"));
  dayList.forEach((day, i) => {
    let y = top + plotH;
    models.forEach((model, m) => {
      const value = (totals[day] || {})[model] || 0;
      if (!value) return;
      const h = (value / max) * plotH;
      y -= h;
      const bar = svg("rect", { x: left + i * slot + 1, y, width: Math.max(1, slot - 2), height: h,
                                fill: COLOURS[m % COLOURS.length], class: "bar" });
      bar.dataset.day = day;
      bar.dataset.model = model;
      bar.dataset.value = value;
      bar.appendChild(svg("title", {}, day + " " + model + ": " + value));
      chart.appendChild(bar);
    });
    if (days <= 31 ? i % Math.ceil(days / 10) === 0 : i % 15 === 0) {
      chart.appendChild(svg("text", { x: left + i * slot + slot / 2, y: height - 10, "text-anchor": "middle",
                                      "font-size": 10 }, day.slice(5)));
    }
  });
  const legend = $("usage-legend");
  legend.replaceChildren();
  models.forEach((model, m) => {
    const s = el("span");
    const swatch = el("i");
    swatch.style.background = COLOURS[m % COLOURS.length];
    s.appendChild(swatch);
    s.appendChild(document.createTextNode(model));
    legend.appendChild(s);
  });
  if (!models.length) legend.appendChild(el("span", "no usage in this period"));
}

async function loadUsage() {
  const select = $("usage-key");
  const chosen = select.value;
  const keys = await api("GET", "/keys");
  select.replaceChildren(el("option", "all keys"));
  select.firstChild.value = "";
  for (const k of keys.keys) {
    const o = el("option", k.id + " · " + k.name);
    o.value = k.id;
    select.appendChild(o);
  }
  select.value = chosen;
  const days = Number($("usage-days").value);
  const q = "?days=" + days + (select.value ? "&key_id=" + select.value : "");
  const data = await api("GET", "/usage" + q);
  drawChart(data.by_day, days, $("usage-measure").value);
  const body = $("usage-table").tBodies[0];
  body.replaceChildren();
  for (const s of data.summary) {
    body.appendChild(row([data.keys[s.key_id] || s.key_id, s.model, s.requests, s.errors, s.prompt_tokens,
                          s.completion_tokens, s.thought_tokens, s.total_tokens]));
  }
}

// --- requests ------------------------------------------------------------------------------------

async function loadRequests() {
  const data = await api("GET", "/requests?limit=100");
  const body = $("req-table").tBodies[0];
  body.replaceChildren();
  for (const r of data.requests) {
    const served = r.credential_kind ? r.credential_kind + (r.credential_id ? "/" + r.credential_id : "") : "-";
    body.appendChild(row([fmtTime(r.created_at), r.key, r.api, r.op, r.model, r.status, r.prompt_tokens,
                          r.completion_tokens, r.total_tokens, r.latency_ms, served, r.request_id]));
  }
}

// --- wiring ----------------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", (ev) => { ev.preventDefault(); login($("login-token").value.trim()); });
  $("logout").addEventListener("click", () => logout("Logged out."));
  for (const b of document.querySelectorAll("nav button[data-tab]")) b.addEventListener("click", () => show(b.dataset.tab));
  $("cred-refresh").addEventListener("click", loadCredentials);
  $("cred-add").addEventListener("click", addCredential);
  $("key-form").addEventListener("submit", createKey);
  $("edit-form").addEventListener("submit", saveEdit);
  $("edit-cancel").addEventListener("click", () => { $("edit-form").hidden = true; });
  for (const id of ["usage-key", "usage-days", "usage-measure"]) $(id).addEventListener("change", loadUsage);
  $("req-refresh").addEventListener("click", loadRequests);
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) login(token); else showApp(false);
});
