// The web UI: sign in with a bearer token, list sessions, open one, play it.
//
// The token lives in sessionStorage (this tab only) and goes in the Authorization
// header of every request; it is never put in a URL, not even for downloads (fetched
// as blobs). Its payload is decoded here only to show who is signed in and to hide
// what the role may not do; the server enforces every permission.
"use strict";

(function () {
  const TOKEN_KEY = "lucid.token";
  const LIST_REFRESH_MS = 3000;
  const DOWNLOAD_ROLES = new Set(["admin", "session_manager"]);  // chunks:download
  const LIVE = new Set(["created", "starting", "recording", "paused", "stopped", "processing"]);
  const STAGES = ["created", "starting", "recording", "stopped", "processing", "completed"];

  const $ = (id) => document.getElementById(id);
  let timer = null;
  let player = null;

  // token

  function token() { return sessionStorage.getItem(TOKEN_KEY); }

  function claims(text) {
    try {
      const part = text.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      const json = decodeURIComponent(Array.from(atob(part.padEnd(part.length + (4 - part.length % 4) % 4, "=")),
        (c) => "%" + c.charCodeAt(0).toString(16).padStart(2, "0")).join(""));
      return JSON.parse(json);
    } catch (err) {
      return {};
    }
  }

  function canDownload() { return DOWNLOAD_ROLES.has(claims(token() || "").role); }

  async function api(path, options = {}) {
    const headers = Object.assign({}, options.headers || {}, {
      Authorization: `Bearer ${token()}`,
    });
    const response = await fetch(`/api/v1${path}`, Object.assign({}, options, { headers, cache: "no-store" }));
    if (response.status === 401) {
      signOut("Your token was refused (expired or revoked): sign in again.");
    }
    return response;
  }

  async function errorText(response) {
    try {
      const body = await response.json();
      return `${response.status}: ${body.error.message}`;
    } catch (err) {
      return `HTTP ${response.status}`;
    }
  }

  function signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    if (player) { player.close(); player = null; }
    route();
    if (message) $("signin-error").textContent = message;
  }

  // views

  function showView(id) {
    for (const view of document.querySelectorAll(".view")) view.hidden = view.id !== id;
    clearInterval(timer);
    timer = null;
    if (player && id !== "session") { player.close(); player = null; }
  }

  function route() {
    const text = token();
    $("whoami").hidden = $("signout").hidden = !text;
    if (!text) { showView("signin"); return; }
    const c = claims(text);
    $("whoami").textContent = `${c.sub || "?"} (${c.role || "?"})`;
    const match = location.hash.match(/^#\/sessions\/([A-Za-z0-9_-]{1,128})$/);
    if (match) openSession(match[1]);
    else listSessions();
  }

  function cell(row, text, cls) {
    const td = document.createElement("td");
    td.textContent = text == null ? "" : String(text);
    if (cls) td.className = cls;
    row.appendChild(td);
    return td;
  }

  function bytes(n) {
    if (n == null) return "";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
  }

  // sessions list

  async function loadSessions() {
    const query = new URLSearchParams({ limit: "200" });
    for (const name of ["status", "project", "environment"]) {
      const value = $(`filter-${name}`).value.trim();
      if (value) query.set(name, value);
    }
    const response = await api(`/sessions?${query}`);
    if (!response.ok) {
      $("sessions-error").textContent = await errorText(response);
      return;
    }
    $("sessions-error").textContent = "";
    const page = await response.json();
    const rows = $("session-rows");
    rows.textContent = "";
    for (const s of page.items) {
      const tr = document.createElement("tr");
      tr.className = "link";
      tr.dataset.id = s.session_id;
      const name = cell(tr, "");
      const link = document.createElement("a");
      link.href = `#/sessions/${s.session_id}`;
      link.textContent = s.name;
      name.appendChild(link);
      const status = cell(tr, "");
      const badge = document.createElement("span");
      badge.className = `status ${s.status}`;
      badge.textContent = s.status;
      status.appendChild(badge);
      cell(tr, s.project || "");
      cell(tr, s.created_at.replace("T", " ").slice(0, 19));
      cell(tr, s.chunk_count, "num");
      cell(tr, bytes(s.stored_bytes), "num");
      tr.addEventListener("click", (e) => {
        if (e.target.tagName !== "A") location.hash = `#/sessions/${s.session_id}`;
      });
      rows.appendChild(tr);
    }
    $("session-total").textContent = `${page.items.length} of ${page.total} sessions`;
    $("session-updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  }

  function listSessions() {
    showView("sessions");
    loadSessions();
    timer = setInterval(() => { if ($("filter-live").checked) loadSessions(); }, LIST_REFRESH_MS);
  }

  // one session

  function fill(dl, entries) {
    dl.textContent = "";
    for (const [key, value] of entries) {
      if (value == null || value === "") continue;
      const dt = document.createElement("dt");
      dt.textContent = key;
      const dd = document.createElement("dd");
      dd.textContent = typeof value === "object" ? JSON.stringify(value) : String(value);
      dl.append(dt, dd);
    }
  }

  function withoutSecrets(config) {
    const out = {};
    for (const [k, v] of Object.entries(config || {})) {
      if (!/password|secret|token/i.test(k)) out[k] = v;
    }
    return out;
  }

  function renderSession(s) {
    $("session-name").textContent = s.name;
    $("session-status").textContent = s.status;
    $("session-status").className = `status ${s.status}`;
    $("session-id").textContent = s.session_id;
    const connection = withoutSecrets(s.rdp_config || s.x11_config);
    const config = [
      ["source", s.source], ["project", s.project], ["environment", s.environment],
      ["tags", (s.tags || []).join(", ")], ["created", s.created_at], ["started", s.started_at],
      ["ended", s.ended_at], ["hash", s.hash_algorithm], ["Merkle root", s.root],
    ];
    for (const [k, v] of Object.entries(connection)) config.push([`connection ${k}`, v]);
    for (const [k, v] of Object.entries(withoutSecrets(s.recording_config))) config.push([`recording ${k}`, v]);
    fill($("config"), config);
    const stages = $("stages");
    stages.textContent = "";
    const at = STAGES.indexOf(s.status);
    for (const [i, stage] of STAGES.entries()) {
      const li = document.createElement("li");
      li.textContent = stage;
      li.className = at < 0 ? "todo" : i < at ? "done" : i === at ? "current" : "todo";
      stages.appendChild(li);
    }
    if (at < 0) {
      const li = document.createElement("li");
      li.textContent = s.status + (s.status_reason ? `: ${s.status_reason}` : "");
      li.className = "bad";
      stages.appendChild(li);
    }
    const anchor = s.anchor || {};
    fill($("anchor"), [
      ["state", anchor.state || (s.anchor ? "" : "not anchored")],
      ["chain", anchor.chain], ["location", anchor.location],
      ["transaction", anchor.transaction], ["block", anchor.block],
      ["last error", anchor.last_error],
    ]);
    $("receipt").textContent = s.anchor ? JSON.stringify(s.anchor, null, 2) : "";
    $("downloads").hidden = !canDownload();
  }

  async function loadDetails(id) {
    const response = await api(`/sessions/${id}`);
    if (!response.ok) { $("session-error").textContent = await errorText(response); return null; }
    const s = await response.json();
    renderSession(s);
    const stats = await api(`/sessions/${id}/statistics`);
    if (stats.ok) {
      const x = await stats.json();
      fill($("stats"), [
        ["duration", `${x.duration_s.toFixed(1)} s`], ["chunks", x.chunk_count],
        ["frames", x.frame_count], ["keyframes", x.keyframe_count],
        ["unchanged", x.unchanged_count], ["dropped", x.dropped_count],
        ["raw", bytes(x.raw_bytes)], ["stored", bytes(x.stored_bytes)],
        ["compression", x.compression_ratio && `${x.compression_ratio.toFixed(1)}x`],
        ["average fps", x.average_fps && x.average_fps.toFixed(2)],
      ]);
    } else {
      fill($("stats"), [["statistics", await errorText(stats)]]);
    }
    const chunks = await api(`/sessions/${id}/chunks?limit=500`);
    const rows = $("chunk-rows");
    rows.textContent = "";
    if (chunks.ok) {
      const page = await chunks.json();
      for (const c of page.items) {
        const tr = document.createElement("tr");
        cell(tr, c.sequence, "num");
        cell(tr, c.start_s != null ? c.start_s.toFixed(2) : "", "num");
        cell(tr, c.end_s != null ? c.end_s.toFixed(2) : "", "num");
        cell(tr, c.frame_count, "num");
        cell(tr, `${c.width}x${c.height}`);
        cell(tr, bytes(c.stored_size), "num");
        cell(tr, (c.leaf_hash || "").slice(0, 16) + "...", "hash");
        rows.appendChild(tr);
      }
      $("chunk-total").textContent = `${page.items.length} of ${page.total} chunks`;
    }
    return s;
  }

  async function openSession(id) {
    showView("session");
    $("session-error").textContent = "";
    $("download-status").textContent = "";
    if (player && player.sessionId !== id) { player.close(); player = null; }
    const s = await loadDetails(id);
    if (!s) return;
    if (!player) {
      player = new window.LucidPlayer({ api, sessionId: id, root: $("session") });
      window.lucidPlayer = player;
      try {
        await player.start();
      } catch (err) {
        $("session-error").textContent = String(err.message || err);
      }
    }
    if (LIVE.has(s.status)) {
      timer = setInterval(() => loadDetails(id), LIST_REFRESH_MS);
    }
  }

  async function download(path, fallbackName) {
    const status = $("download-status");
    status.textContent = "downloading...";
    const response = await api(path);
    if (!response.ok) { status.textContent = await errorText(response); return; }
    const blob = await response.blob();
    const disposition = response.headers.get("Content-Disposition") || "";
    const match = disposition.match(/filename="([^"]+)"/);
    const url = URL.createObjectURL(blob);
    const a = document.createElement("a");
    a.href = url;
    a.download = match ? match[1] : fallbackName;
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
    status.textContent = `saved ${a.download} (${bytes(blob.size)})`;
  }

  // wiring

  document.addEventListener("DOMContentLoaded", () => {
    $("signin-form").addEventListener("submit", async (e) => {
      e.preventDefault();
      const text = $("token").value.trim().replace(/^Bearer\s+/i, "");
      $("token").value = "";
      if (text.split(".").length !== 3) {
        $("signin-error").textContent = "That is not a JWT (three dot-separated parts).";
        return;
      }
      sessionStorage.setItem(TOKEN_KEY, text);
      const check = await fetch("/api/v1/sessions?limit=1", {
        headers: { Authorization: `Bearer ${text}` }, cache: "no-store",
      });
      if (check.status === 401) {
        sessionStorage.removeItem(TOKEN_KEY);
        $("signin-error").textContent = await errorText(check);
        return;
      }
      $("signin-error").textContent = "";
      if (!location.hash) location.hash = "#/sessions";
      route();
    });
    $("signout").addEventListener("click", () => signOut(""));
    $("filters").addEventListener("input", () => loadSessions());
    $("filters").addEventListener("submit", (e) => e.preventDefault());
    $("download-bundle").addEventListener("click", () => {
      const id = player && player.sessionId;
      if (id) download(`/sessions/${id}/export`, `${id}.tar`);
    });
    $("download-mp4").addEventListener("click", () => {
      const id = player && player.sessionId;
      if (id) download(`/sessions/${id}/render.mp4`, `${id}.mp4`);
    });
    window.addEventListener("hashchange", route);
    route();
  });
})();
