// The session's artifact events, followed from a cursor: over the
// WebSocket subscription while it works, by long-polling while it does not.
// Both transports resume from the same cursor and every event is accepted
// once, by sequence, so switching between them neither loses nor repeats.

import { ApiError, api, openJsonSocket } from "./api.js";

const LONG_POLL_SECONDS = 25;
const PAGE_LIMIT = 200;
const FIRST_RETRY_MS = 2000;
const MAX_RETRY_MS = 30000;

export class ArtifactFeed {
  /**
   * onEvents(events): new events, in sequence order.
   * onMode(mode): "connecting" | "live" | "polling" | "offline" | "stopped".
   * onNotice(text): something the reader should know (events skipped, session gone).
   */
  constructor(sessionId, { onEvents, onMode, onNotice }) {
    this.sessionId = sessionId;
    this.onEvents = onEvents;
    this.onMode = onMode;
    this.onNotice = onNotice;
    this.cursor = 0;
    this.seen = new Set();
    this.mode = "connecting";
    this.stopped = false;
    this.socket = null;
    this.retryMs = FIRST_RETRY_MS;
    this.retryTimer = null;
    this.polling = false;
    this.pollAbort = null;
  }

  start() {
    this.setMode("connecting");
    this.connectSocket();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    if (this.pollAbort) this.pollAbort.abort();
    if (this.socket) this.socket.close(1000);
    this.setMode("stopped");
  }

  setMode(mode) {
    if (this.mode === mode) return;
    this.mode = mode;
    this.onMode(mode);
  }

  accept(events, nextCursor) {
    const fresh = [];
    for (const event of events) {
      if (this.seen.has(event.sequence)) continue;
      this.seen.add(event.sequence);
      fresh.push(event);
      this.cursor = Math.max(this.cursor, event.sequence);
    }
    if (Number.isInteger(nextCursor)) this.cursor = Math.max(this.cursor, nextCursor);
    if (fresh.length) this.onEvents(fresh.sort((a, b) => a.sequence - b.sequence));
  }

  connectSocket() {
    if (this.stopped) return;
    try {
      this.socket = openJsonSocket(
        `/sessions/${encodeURIComponent(this.sessionId)}/artifacts`,
        { after: this.cursor },
        (payload, socket) => this.onSocketMessage(socket, payload),
        (closed) => {
          if (this.socket === closed) this.socketLost();
        },
      );
    } catch {
      this.socketLost();
    }
  }

  onSocketMessage(socket, payload) {
    const data = payload.data || {};
    if (payload.type === "connection") {
      this.retryMs = FIRST_RETRY_MS;
      this.stopPolling();
      this.setMode("live");
    } else if (payload.type === "artifact_created") {
      this.accept(data.events || [], data.next_cursor);
    } else if (payload.type === "error") {
      this.onSocketError(socket, data);
    }
  }

  onSocketError(socket, data) {
    if (Number.isInteger(data.resume_after)) {
      this.skipTo(data);
      socket.send(JSON.stringify({ type: "subscribe", after: this.cursor }));
    } else if (data.code === "session_not_found" || data.code === "invalid_session_id") {
      this.onNotice(data.detail || "This session no longer exists.");
      this.stop();
    }
  }

  skipTo(data) {
    this.onNotice(
      data.code === "cursor_expired"
        ? "Some older events are no longer kept; the feed continues from the oldest one left."
        : "The feed was ahead of the server; it continues from the server's last event."
    );
    if (data.resume_after < this.cursor) this.seen.clear();
    this.cursor = data.resume_after;
  }

  socketLost() {
    this.socket = null;
    if (this.stopped) return;
    this.startPolling();
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.connectSocket(), this.retryMs);
    this.retryMs = Math.min(this.retryMs * 2, MAX_RETRY_MS);
  }

  startPolling() {
    if (this.polling) return;
    this.polling = true;
    this.setMode("polling");
    this.pollLoop();
  }

  stopPolling() {
    this.polling = false;
    if (this.pollAbort) this.pollAbort.abort();
  }

  async pollLoop() {
    let failures = 0;
    while (this.polling && !this.stopped) {
      this.pollAbort = new AbortController();
      try {
        const page = await this.fetchPage(this.pollAbort.signal);
        failures = 0;
        this.setMode("polling");
        this.accept(page.events || [], page.next_cursor);
      } catch (error) {
        if (error.name === "AbortError" || !this.polling) break;
        const next = this.handlePollError(error);
        if (next === "stop") return;
        if (next === "now") continue;
        failures += 1;
        if (failures > 1) this.setMode("offline");
        await sleep(Math.min(1000 * 2 ** failures, MAX_RETRY_MS));
      }
    }
  }

  fetchPage(signal) {
    const query = new URLSearchParams({
      after: String(this.cursor),
      wait_seconds: String(LONG_POLL_SECONDS),
      limit: String(PAGE_LIMIT),
    });
    return api(`sessions/${encodeURIComponent(this.sessionId)}/artifact-events?${query}`, { signal });
  }

  /** "now": poll again at once; "later": after a pause; "stop": give up. */
  handlePollError(error) {
    if (!(error instanceof ApiError)) return "later";
    if (error.status === 410 && Number.isInteger(error.payload.resume_after)) {
      this.skipTo(error.payload);
      return "now";
    }
    if (error.status === 404 || error.status === 400) {
      this.onNotice(error.message);
      this.stop();
      return "stop";
    }
    return "later";
  }
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
