// The session dashboard: wires the session picker, uploads, attachments,
// the live artifact feed, previews and workflow runs together.

import {
  ApiError,
  api,
  linkFromLocation,
  rememberSession,
  rememberedSession,
  setToken,
} from "./dashboard/api.js";
import { $, extensionOf, formatBytes, formatTime, h, show, showError } from "./dashboard/dom.js";
import { ArtifactFeed } from "./dashboard/feed.js";
import { Preview, previewKind } from "./dashboard/preview.js";
import { RunPanel } from "./dashboard/runs.js";
import { Uploads } from "./dashboard/uploads.js";

const SESSION_ID = /^[A-Za-z0-9_-]{1,64}$/;
const REFRESH_DELAY_MS = 250;
const FEED_LABELS = { connecting: "Connecting…", live: "Live", polling: "Polling", offline: "Offline", stopped: "Stopped" };
const CHANGE_LABELS = { created: "Created", updated: "Updated", deleted: "Deleted" };

const state = {
  sessionId: null,
  feed: null,
  attachments: [],
  selected: new Set(),
  refreshTimer: null,
};

const preview = new Preview({
  section: $("#preview"),
  title: $("#preview-title"),
  body: $("#preview-body"),
  closeButton: $("#preview-close"),
});

const uploads = new Uploads({
  dropzone: $("#dropzone"),
  input: $("#file-input"),
  list: $("#uploads"),
  limitNote: $("#upload-limit"),
  onUploaded: (attachment) => {
    state.selected.add(attachment.attachment_id);
    if (!state.attachments.some((a) => a.attachment_id === attachment.attachment_id)) {
      state.attachments = [...state.attachments, attachment];
      renderAttachments();
    }
    scheduleRefresh();
  },
});

const runs = new RunPanel({
  selectedAttachments: () => state.attachments.map((a) => a.attachment_id).filter((id) => state.selected.has(id)),
  attachments: () => state.attachments,
  onConnection: (mode) => setPill($("#connection"), mode, mode === "live" ? "Connected" : "Reconnecting…"),
});

function setPill(element, stateName, label) {
  element.dataset.state = stateName;
  element.textContent = label;
}

// Sessions

async function openSession(sessionId, { create = false } = {}) {
  showError($("#session-error"), "");
  let session;
  try {
    session = create
      ? await api("sessions", { method: "POST", json: {} })
      : await api(`sessions/${encodeURIComponent(sessionId)}`);
  } catch (error) {
    showError($("#session-error"), error.status === 404 ? `There is no session “${sessionId}”.` : error.message);
    return;
  }
  // An access-controlled server may hand out a token with a new session.
  if (session.token) setToken(session.token);
  enterSession(session);
}

function enterSession(session) {
  if (state.feed) state.feed.stop();
  state.sessionId = session.session_id;
  state.attachments = [];
  state.selected = new Set();
  $("#session-id").value = session.session_id;
  $("#session-name").textContent = session.session_id;
  // Always on screen: which session this page is in, so a switch never goes unnoticed.
  $("#current-session-id").textContent = session.session_id;
  show($("#current-session"), true);
  document.title = `Session ${session.session_id} – Session dashboard`;
  rememberSession(session.session_id);
  const url = new URL(location.href);
  url.searchParams.set("session", session.session_id);
  history.replaceState(null, "", url);
  show($("#welcome"), false);
  show($("#workspace"), true);
  preview.close();
  showSessionFacts(session);
  clearFeed();
  uploads.setSession(session.session_id);
  runs.setSession(session.session_id);
  loadAttachments();
  state.feed = new ArtifactFeed(session.session_id, {
    onEvents: addEvents,
    onMode: (mode) => setPill($("#feed-mode"), mode, FEED_LABELS[mode] || mode),
    onNotice: (text) => {
      $("#feed-note").textContent = text;
      show($("#feed-note"), true);
    },
  });
  state.feed.start();
}

function showSessionFacts(session) {
  $("#session-status").textContent = session.status || "–";
  $("#session-files").textContent = session.counts ? String(session.counts.attachments) : "–";
  $("#session-bytes").textContent = session.counts ? formatBytes(session.counts.attachment_bytes) : "–";
}

function scheduleRefresh() {
  clearTimeout(state.refreshTimer);
  state.refreshTimer = setTimeout(refreshSession, REFRESH_DELAY_MS);
}

async function refreshSession() {
  const sessionId = state.sessionId;
  try {
    const session = await api(`sessions/${encodeURIComponent(sessionId)}`);
    if (sessionId === state.sessionId) showSessionFacts(session);
  } catch {
    // The feed reports a session that is gone; nothing more to say here.
  }
  await loadAttachments();
}

// Attachments

async function loadAttachments() {
  const sessionId = state.sessionId;
  try {
    const { attachments } = await api(`uploads/${encodeURIComponent(sessionId)}`);
    if (sessionId !== state.sessionId) return;
    state.attachments = attachments;
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    return;
  }
  renderAttachments();
}

function renderAttachments() {
  const body = $("#attachments tbody");
  body.replaceChildren(...state.attachments.map(attachmentRow));
  show($("#attachments-empty"), state.attachments.length === 0);
  runs.updateChosen();
}

function attachmentRow(attachment) {
  const id = attachment.attachment_id;
  const checkbox = h("input", {
    type: "checkbox",
    value: id,
    checked: state.selected.has(id),
    "aria-label": `Use ${attachment.name} in the next run`,
    onchange: (event) => {
      if (event.target.checked) state.selected.add(id);
      else state.selected.delete(id);
      runs.updateChosen();
    },
  });
  return h("tr", { dataset: { attachmentId: id } },
    h("td", {}, checkbox),
    h("td", { class: "name" }, h("span", { title: attachment.path || attachment.name }, attachment.name)),
    h("td", { class: "mime" }, attachment.mime || ""),
    h("td", { class: "num" }, formatBytes(attachment.size)),
    h("td", { class: "source" }, h("span", { class: "tag" }, attachment.source || "")),
    h("td", { class: "actions-cell" }, previewButton(attachment)),
  );
}

function previewButton(item) {
  const label = previewKind(item.mime) === "download" ? "Open" : "Preview";
  return h("button", {
    type: "button",
    class: "button small",
    "aria-label": `${label} ${item.name}`,
    onclick: () => preview.open(state.sessionId, item),
  }, label);
}

// The live artifact feed

function clearFeed() {
  $("#feed").replaceChildren();
  show($("#feed-note"), false);
  updateFeedEmpty();
}

function addEvents(events) {
  const list = $("#feed");
  for (const event of events) {
    const row = eventRow(event);
    // Newest first; events normally arrive in order, but keep the list sorted anyway.
    const later = Array.from(list.children).find((child) => Number(child.dataset.sequence) < event.sequence);
    list.insertBefore(row, later || null);
  }
  applyFilters();
  scheduleRefresh();
}

function eventRow(event) {
  const deleted = event.change_type === "deleted";
  const meta = [event.path, formatBytes(event.size), event.mime, event.node_id ? `node ${event.node_id}` : "", formatTime(event.timestamp)]
    .filter(Boolean)
    .join(" · ");
  return h("li", {
      class: "event",
      dataset: { sequence: String(event.sequence), mime: event.mime || "", ext: extensionOf(event.name || ""), change: event.change_type },
    },
    h("span", { class: "change", dataset: { change: event.change_type } }, CHANGE_LABELS[event.change_type] || event.change_type),
    h("div", { class: "event-main" },
      h("span", { class: "event-name" }, event.name),
      h("span", { class: "event-meta" }, meta)),
    deleted ? null : previewButton(event),
  );
}

function currentFilters() {
  const type = $("#filter-type").value;
  const exts = $("#filter-ext").value
    .split(/[\s,]+/)
    .map((ext) => ext.replace(/^\./, "").toLowerCase())
    .filter(Boolean);
  return { type, exts };
}

function applyFilters() {
  const { type, exts } = currentFilters();
  for (const row of $("#feed").children) {
    const mime = row.dataset.mime;
    const byType = !type || (type.endsWith("/") ? mime.startsWith(type) : mime === type);
    const byExt = exts.length === 0 || exts.includes(row.dataset.ext);
    row.hidden = !(byType && byExt);
  }
  updateFeedEmpty();
}

function updateFeedEmpty() {
  const rows = $("#feed").children;
  const visible = Array.from(rows).some((row) => !row.hidden);
  const empty = $("#feed-empty");
  empty.textContent = rows.length === 0 ? "Nothing has happened in this session yet." : "No events match these filters.";
  show(empty, !visible);
}

// Start-up

function bindSessionForm() {
  $("#session-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const id = $("#session-id").value.trim();
    if (!SESSION_ID.test(id)) {
      showError($("#session-error"), "A session id is 1 to 64 letters, digits, “_” or “-”.");
      $("#session-id").focus();
      return;
    }
    openSession(id);
  });
  $("#new-session").addEventListener("click", () => openSession(null, { create: true }));
  $("#filter-type").addEventListener("change", applyFilters);
  $("#filter-ext").addEventListener("input", applyFilters);
  $("#feed-filters").addEventListener("submit", (event) => event.preventDefault());
}

async function loadLimits() {
  try {
    const limits = await api("limits");
    uploads.setLimit(limits.max_upload_bytes, limits.resumable_max_upload_bytes, limits.max_request_bytes);
  } catch {
    // Without the limits, the server still answers 413 with its reason.
  }
}

// A link into a session (`/?session=S&token=T`) may come from anyone: the
// page asks before it switches, and says which session it would leave.
// Reloading the session this tab is already in needs no question.

function handleLink() {
  const { sessionId, token } = linkFromLocation();
  const current = rememberedSession();
  if (!sessionId || !SESSION_ID.test(sessionId)) return;
  if (sessionId === current && !token) {
    openSession(sessionId);
    return;
  }
  // Meanwhile the page stays in the session it was in.
  if (current) openSession(current);
  askToOpen(sessionId, token, current);
}

function askToOpen(sessionId, token, current) {
  const banner = $("#link-confirm");
  $("#link-session-id").textContent = sessionId;
  $("#link-current").textContent = current
    ? `You are in session ${current}; it stays as it is.`
    : "You are not in any session yet.";
  show(banner, true);
  const decide = (accepted) => {
    show(banner, false);
    $("#link-open").onclick = null;
    $("#link-stay").onclick = null;
    if (accepted) {
      if (token) setToken(token);
      openSession(sessionId);
      return;
    }
    const url = new URL(location.href);
    if (current) url.searchParams.set("session", current);
    else url.searchParams.delete("session");
    history.replaceState(null, "", url);
  };
  $("#link-open").onclick = () => decide(true);
  $("#link-stay").onclick = () => decide(false);
  $("#link-open").focus();
}

function main() {
  bindSessionForm();
  loadLimits();
  runs.loadWorkflows();
  handleLink();
  document.body.dataset.ready = "true";
}

main();
