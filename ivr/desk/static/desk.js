// The agent desk page. Plain JS, no build step. Every value from the desk is inserted
// with textContent (never innerHTML): the page shows what callers typed and said.
"use strict";

const REASONS = {
  caller_request: ["Caller asked for an agent", "Penelepon meminta petugas"],
  invalid_input: ["Invalid input, 3 tries", "Masukan tidak valid"],
  verification_failed: ["Verification failed", "Verifikasi gagal"],
  service_unavailable: ["Membership service unavailable", "Layanan kepesertaan tidak tersedia"],
  locked: ["Locked after failed verifications", "Terkunci karena verifikasi gagal"],
};
const MEMBER = { AKTIF: "Active (AKTIF)", TIDAK_AKTIF: "Not active (TIDAK AKTIF)" };
const STATES = {
  offline: "Offline", ready: "Ready", paused: "Paused", ringing: "Ringing",
  on_call: "On a call", wrap_up: "Wrap-up",
};
const PAUSES = { break: "break", meeting: "meeting", after_call_work: "after-call work" };
const OUTCOMES = {
  completed: "completed in the IVR", transfer: "transferred", no_input: "no input",
  abandoned: "caller hung up", error: "error",
};
const DISPOSITIONS = {
  answered: "Answered", escalated_to_branch: "Escalated to branch office",
  data_update_needed: "Data update needed", complaint: "Complaint", other: "Other",
};
const PHASES = { ringing: "Ringing", connected: "Connected", ended: "Call ended" };
const DIAL_RESULTS = {
  answer: "answered", busy: "busy", noanswer: "no answer", congestion: "network busy",
  chanunavail: "unreachable", cancel: "agent hung up first", hangup: "ended",
};

const $ = (id) => document.getElementById(id);
const words = (id) => String(id || "").replace(/_/g, " ");
const reasonWords = (id) => (REASONS[id] || [id ? words(id) : "No reason given", ""]);
const memberWords = (s) => (s ? MEMBER[s] || words(s) : "unknown");

let events = null;           // the EventSource
let queueSnapshot = { waiting: [], callbacks: [], at: 0 };
let me = null;
let call = null;             // {id, phase, context, at}
let noteMax = 1000;

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function clock(seconds) {
  if (seconds === null || seconds === undefined || isNaN(seconds)) return "–";
  const s = Math.max(0, Math.floor(seconds));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  const mm = h ? String(m).padStart(2, "0") : String(m);
  return (h ? h + ":" : "") + mm + ":" + String(r).padStart(2, "0");
}

// Today's times as the time of day only (the board is read at a glance).
function shortTime(iso) {
  const d = new Date(iso);
  if (isNaN(d)) return String(iso || "");
  const today = d.toDateString() === new Date().toDateString();
  return today ? d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }) : localTime(iso);
}

function localTime(iso) {
  const d = new Date(iso);
  return isNaN(d) ? String(iso || "") : d.toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
}

async function api(path, options = {}) {
  const init = { credentials: "same-origin", headers: {}, ...options };
  if (init.json !== undefined) {
    init.method = init.method || "POST";
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(init.json);
    delete init.json;
  }
  const response = await fetch(path, init);
  let data = null;
  try { data = await response.json(); } catch (e) { data = null; }
  if (response.status === 401 && path !== "/login") showLogin();
  if (!response.ok) {
    const error = new Error((data && data.error) || ("HTTP " + response.status));
    error.status = response.status;
    throw error;
  }
  return data;
}

// --- login / logout ---------------------------------------------------------------

function showLogin(message) {
  if (events) { events.close(); events = null; }
  me = null; call = null;
  $("desk-view").hidden = true;
  $("banner-desk").hidden = true;
  $("banner-asterisk").hidden = true;
  $("login-view").hidden = false;
  $("login-error").textContent = message || "";
  $("login-password").value = "";
  $("login-username").focus();
}

async function login(event) {
  event.preventDefault();
  const form = $("login-form");
  $("login-error").textContent = "";
  try {
    const response = await fetch("/login", {
      method: "POST", credentials: "same-origin",
      body: new URLSearchParams(new FormData(form)),
    });
    if (response.ok) { $("login-password").value = ""; start(); return; }
    let data = null;
    try { data = await response.json(); } catch (e) { data = null; }
    $("login-error").textContent = (data && data.error) || ("Login failed (HTTP " + response.status + ")");
  } catch (e) {
    $("login-error").textContent = "The desk cannot be reached.";
  }
}

async function logout() {
  try { await fetch("/logout", { method: "POST", credentials: "same-origin" }); } catch (e) { /* shown below */ }
  clearCall();
  showLogin("Logged out.");
}

// --- start and the event stream -----------------------------------------------------

async function start() {
  try {
    me = await api("/api/me");
  } catch (e) {
    if (e.status !== 401) showLogin("The desk cannot be reached.");
    return;
  }
  $("login-view").hidden = true;
  $("desk-view").hidden = false;
  renderMe(me);
  try {
    const choices = await api("/api/dispositions");
    noteMax = choices.note_max || noteMax;
    const select = $("wrapup-disposition");
    select.replaceChildren(el("option", "Choose…"));
    select.firstChild.value = "";
    for (const d of choices.dispositions) {
      const option = el("option", DISPOSITIONS[d] || words(d));
      option.value = d;
      select.append(option);
    }
  } catch (e) { /* the stream's banner says when the desk is away */ }
  connect();
}

function connect() {
  if (events) events.close();
  events = new EventSource("/api/events");
  events.addEventListener("open", () => { $("banner-desk").hidden = true; });
  events.addEventListener("error", () => {
    $("banner-desk").hidden = false;
    if (events && events.readyState === EventSource.CLOSED) {
      // A refused stream (session over) is not retried by the browser: ask why.
      events.close(); events = null;
      setTimeout(recheck, 3000);
    }
  });
  const on = (name, handler) => events.addEventListener(name, (message) => {
    let data;
    try { data = JSON.parse(message.data); } catch (e) { return; }
    handler(data);
  });
  on("me", renderMe);
  on("queue", renderQueue);
  on("asterisk", renderAsterisk);
  on("ringing", (data) => openCall(data.call_id, "ringing", data));
  on("connected", (data) => openCall(data.call_id, "connected", data));
  on("ended", (data) => endCall(data.call_id));
}

async function recheck() {
  try {
    await api("/api/me");
    connect();
  } catch (e) {
    if (e.status !== 401) setTimeout(recheck, 3000);
  }
}

// --- presence -----------------------------------------------------------------------

function renderMe(data) {
  me = data;
  $("agent-name").textContent = data.name || data.agent || "";
  const state = $("agent-state");
  let label = STATES[data.state] || words(data.state);
  if (data.state === "paused" && data.pause_reason) label += ": " + (PAUSES[data.pause_reason] || words(data.pause_reason));
  state.textContent = label;
  state.className = "state " + (data.state || "");
  $("btn-ready").classList.toggle("active", data.state === "ready");
  $("btn-pause").classList.toggle("active", data.state === "paused");
  $("btn-offline").classList.toggle("active", data.state === "offline");
  if (data.state === "paused" && data.pause_reason in PAUSES) $("pause-reason").value = data.pause_reason;
  if (data.call_id && (!call || call.id !== data.call_id)) {
    const phase = data.state === "ringing" ? "ringing" : data.state === "wrap_up" ? "ended" : "connected";
    openCall(data.call_id, phase, {});
  } else if (!data.call_id && call && call.phase === "ringing") {
    clearCall();                       // the ring stopped before the agent answered
  }
}

async function setState(state, reason) {
  $("presence-error").textContent = "";
  try {
    renderMe(await api("/api/me/state", { json: reason ? { state, reason } : { state } }));
  } catch (e) {
    $("presence-error").textContent = e.message;
  }
}

function renderAsterisk(data) {
  const up = data.state === "up";
  $("asterisk-state").textContent = words(data.state);
  $("banner-asterisk").hidden = up;
}

// --- the queue board ----------------------------------------------------------------

function renderQueue(data) {
  // a queue update without "callbacks": they did not change
  queueSnapshot = { waiting: data.waiting || [], callbacks: data.callbacks || queueSnapshot.callbacks,
                    at: performance.now() };
  const agents = data.agents || {};
  $("count-ready").textContent = agents.ready ?? 0;
  $("count-on-call").textContent = agents.on_call ?? 0;
  $("count-paused").textContent = agents.paused ?? 0;
  $("queue-count").textContent = queueSnapshot.waiting.length ? "(" + queueSnapshot.waiting.length + " waiting)" : "";
  const rows = queueSnapshot.waiting.map((entry) => {
    const row = document.createElement("tr");
    row.dataset.callId = entry.call_id;
    if (call && call.id === entry.call_id) row.className = "current";
    row.append(
      el("td", entry.position, "num"),
      el("td", clock(entry.waiting_s), "wait"),
      el("td", entry.kind === "callback" ? "callback" : "caller"),
      el("td", reasonWords(entry.transfer_reason)[0]),
      el("td", entry.verified ? "yes" : "no", entry.verified ? "yes" : "no"),
      el("td", entry.member_status ? memberWords(entry.member_status) : "–",
         entry.member_status ? "member-" + entry.member_status : ""),
    );
    return row;
  });
  $("queue-table").tBodies[0].replaceChildren(...rows);
  $("queue-empty").hidden = rows.length > 0;
  renderCallbacks(queueSnapshot.callbacks);
}

// A callback's status in words: waiting in line, when it is tried next, or how it ended.
function callbackStatus(cb) {
  if (cb.status === "queued") return "waiting in line";
  if (cb.status === "scheduled") {
    const due = new Date(cb.due_at);
    if (isNaN(due) || due <= Date.now()) return "about to join the line";
    return (cb.attempts.length ? "next attempt " : "due ") + shortTime(cb.due_at);
  }
  return cb.status;     // completed, failed
}

function renderCallbacks(callbacks) {
  const open = callbacks.filter((cb) => cb.status === "queued" || cb.status === "scheduled").length;
  $("callbacks-count").textContent = callbacks.length ? "(" + open + " open)" : "";
  const rows = callbacks.map((cb) => {
    const row = document.createElement("tr");
    row.dataset.callId = cb.call_id;
    row.dataset.status = cb.status;
    const attempts = el("td", (cb.attempts || []).length ? null : "–", "attempts");
    for (const a of cb.attempts || []) {
      attempts.append(el("div", a.n + ". " + (DIAL_RESULTS[a.result] || words(a.result)) +
                                " " + shortTime(a.at)));
    }
    row.append(
      el("td", shortTime(cb.joined_at)),
      el("td", cb.number_masked),
      el("td", callbackStatus(cb), "callback-" + cb.status),
      attempts,
    );
    return row;
  });
  $("callbacks-table").tBodies[0].replaceChildren(...rows);
  $("callbacks-empty").hidden = rows.length > 0;
}

function tick() {
  const elapsed = (performance.now() - queueSnapshot.at) / 1000;
  const cells = $("queue-table").tBodies[0].rows;
  queueSnapshot.waiting.forEach((entry, i) => {
    if (cells[i]) cells[i].cells[1].textContent = clock(entry.waiting_s + elapsed);
  });
  if (call && call.context) renderQueueTime(call.context);
}

// --- the screen pop -----------------------------------------------------------------

async function openCall(callId, phase, eventData) {
  if (!callId) return;
  const same = call && call.id === callId;
  if (!same) {
    call = { id: callId, phase, context: null, kind: eventData.kind || null, at: Date.now() };
    $("wrapup-form").reset();
    $("wrapup-error").textContent = "";
    $("wrapup-saved").textContent = "";
    $("wrapup-done").hidden = true;
    updateCounter();
  }
  call.phase = phase;
  if (phase !== "ringing" && !call.answeredAt) call.answeredAt = Date.now();
  const waiting = queueSnapshot.waiting.find((entry) => entry.call_id === callId);
  if (eventData.kind) call.kind = eventData.kind;
  else if (!call.kind && waiting) call.kind = waiting.kind;
  renderPhase();
  try {
    const context = await api("/api/calls/" + encodeURIComponent(callId));
    if (!call || call.id !== callId) return;
    call.context = context;
    call.at = Date.now();
    renderContext(context);
  } catch (e) {
    if (call && call.id === callId) $("pop-error").textContent = "Context not available: " + e.message;
  }
}

function endCall(callId) {
  if (!call || call.id !== callId) return;
  if (call.phase === "ringing") { clearCall(); return; }    // never answered here
  call.phase = "ended";
  renderPhase();
}

function clearCall() {
  call = null;
  $("pop-call").hidden = true;
  $("wrapup-form").hidden = true;
  $("pop-idle").hidden = false;
  renderQueue({ waiting: queueSnapshot.waiting, callbacks: queueSnapshot.callbacks, agents: countsNow() });
}

function countsNow() {
  return { ready: $("count-ready").textContent, on_call: $("count-on-call").textContent,
           paused: $("count-paused").textContent };
}

function renderPhase() {
  $("pop-idle").hidden = true;
  $("pop-call").hidden = false;
  const phase = $("pop-phase");
  phase.textContent = PHASES[call.phase] || words(call.phase);
  phase.className = "phase " + call.phase;
  $("pop-callid").textContent = call.id;
  $("pop-kind").textContent = call.kind === "callback" ? "Callback: the caller's number is dialled after you answer" : "";
  $("wrapup-form").hidden = call.phase !== "ended";
  $("pop-error").textContent = "";
  for (const row of $("queue-table").tBodies[0].rows) {
    row.classList.toggle("current", row.dataset.callId === call.id);
  }
}

function renderContext(ctx) {
  const [english, indonesian] = reasonWords(ctx.transfer_reason);
  $("pop-reason").textContent = english;
  $("pop-reason-id").textContent = indonesian;

  const identity = $("pop-identity");
  if (ctx.verified) {
    identity.replaceChildren(el("span", "VERIFIED", "badge verified"),
      el("span", "Card", "muted"), el("span", ctx.card || "–", "card-number mono"));
  } else {
    identity.replaceChildren(el("span", "unverified", "badge unverified"),
      el("span", ctx.identifier_masked ? "Identifier typed" : "No identifier typed", "muted"));
    if (ctx.identifier_masked) identity.append(el("span", ctx.identifier_masked, "mono"));
  }

  $("pop-started").textContent = ctx.started_at ? localTime(ctx.started_at) : "–";
  const member = $("pop-member");
  member.textContent = ctx.verified ? memberWords(ctx.member_status) : "not known (unverified)";
  member.className = ctx.verified && ctx.member_status ? "member-" + ctx.member_status : "";
  $("pop-ivr").textContent = clock(ctx.ivr_seconds);
  renderQueueTime(ctx);

  const keys = (ctx.menu_keys || []).map((k) => el("span", k));
  $("pop-keys").replaceChildren(...(keys.length ? keys : [el("i", "none", "muted")]));
  $("pop-transcript").replaceChildren(...(ctx.transcript || []).map((line) => el("li", line)));

  const history = (ctx.history || []).map((h) => {
    const row = document.createElement("tr");
    row.append(el("td", localTime(h.started_at)), el("td", OUTCOMES[h.outcome] || words(h.outcome)),
               el("td", h.transfer_reason ? reasonWords(h.transfer_reason)[0] : "–"),
               el("td", h.disposition ? DISPOSITIONS[h.disposition] || words(h.disposition) : "–"));
    return row;
  });
  $("pop-history").tBodies[0].replaceChildren(...history);
  $("pop-history").hidden = history.length === 0;
  $("pop-history-none").hidden = history.length > 0;

  if (ctx.wrapup) {
    $("wrapup-saved").textContent = "Saved: " + (DISPOSITIONS[ctx.wrapup.disposition] || words(ctx.wrapup.disposition));
  }
}

function renderQueueTime(ctx) {
  // The desk's figure once the queue has one; until then counted here, live while ringing.
  const q = ctx.queue;
  let text = "–";
  if (q && q.waited_s !== null && q.waited_s !== undefined && (q.result || q.answered_by)) {
    text = clock(q.waited_s);
  } else if (q && q.joined_at) {
    const until = call && call.answeredAt ? call.answeredAt : Date.now();
    text = clock((until - Date.parse(q.joined_at)) / 1000);
    if (!call || !call.answeredAt) text += " (waiting)";
  }
  $("pop-queue").textContent = text;
}

// --- wrap-up ------------------------------------------------------------------------

function updateCounter() {
  const n = $("wrapup-note").value.length;
  const counter = $("wrapup-count");
  counter.textContent = n + " / " + noteMax;
  counter.className = n > noteMax ? "error" : "muted";
}

async function saveWrapup(event) {
  event.preventDefault();
  if (!call) return;
  $("wrapup-error").textContent = "";
  $("wrapup-saved").textContent = "";
  const disposition = $("wrapup-disposition").value;
  if (!disposition) { $("wrapup-error").textContent = "Choose a disposition."; return; }
  try {
    const saved = await api("/api/calls/" + encodeURIComponent(call.id) + "/wrapup",
      { json: { disposition, note: $("wrapup-note").value } });
    $("wrapup-saved").textContent = "Saved: " + (DISPOSITIONS[saved.disposition] || words(saved.disposition));
    $("wrapup-done").hidden = false;
  } catch (e) {
    $("wrapup-error").textContent = e.message;
  }
}

// --- wiring -------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", login);
  $("btn-logout").addEventListener("click", logout);
  $("btn-ready").addEventListener("click", () => setState("ready"));
  $("btn-pause").addEventListener("click", () => setState("paused", $("pause-reason").value));
  $("btn-offline").addEventListener("click", () => setState("offline"));
  $("wrapup-form").addEventListener("submit", saveWrapup);
  $("wrapup-note").addEventListener("input", updateCounter);
  $("wrapup-done").addEventListener("click", clearCall);
  setInterval(tick, 1000);
  start();
});
