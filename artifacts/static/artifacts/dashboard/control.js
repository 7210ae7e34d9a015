// The session's control socket, /ws?session_id=…: run status, node logs and
// human input. When it is down, runs are followed over REST instead, and
// answers go to the REST twin of human_input.

import { api, openJsonSocket } from "./api.js";

const FIRST_RETRY_MS = 1000;
const MAX_RETRY_MS = 30000;
const RUN_POLL_MS = 1500;
const INPUT_TIMEOUT_MS = 15000;
export const FINAL_STATUSES = new Set(["completed", "failed", "cancelled"]);

export class RunChannel {
  /** onRun(run), onLog({run_id, node_id, stream, lines}), onMode("live" | "polling"). */
  constructor(sessionId, { onRun, onLog, onMode }) {
    this.sessionId = sessionId;
    this.onRun = onRun;
    this.onLog = onLog;
    this.onMode = onMode;
    this.socket = null;
    this.live = false;
    this.stopped = false;
    this.retryMs = FIRST_RETRY_MS;
    this.retryTimer = null;
    this.pollTimer = null;
    this.watchedRun = null;
    this.pendingInput = null;
    // Counts run_status messages: a REST answer requested before the latest
    // one may describe an older state, and must not overwrite it.
    this.pushed = 0;
  }

  start() {
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    clearTimeout(this.pollTimer);
    if (this.socket) this.socket.close(1000);
  }

  connect() {
    if (this.stopped) return;
    try {
      this.socket = openJsonSocket(
        "",
        { session_id: this.sessionId },
        (payload) => this.receive(payload),
        (closed) => {
          if (this.socket === closed) this.lost();
        },
      );
    } catch {
      this.lost();
    }
  }

  receive(payload) {
    const data = payload.data || {};
    // This socket also pushes artifact_created; the feed has its own
    // subscription, so those are ignored here. It does not send
    // "unsubscribe": with a Redis socket timeout set, stopping the socket's
    // follower has been seen to lose the run messages that follow, and the
    // duplicates are cheap.
    if (payload.type === "connection") {
      this.live = true;
      this.retryMs = FIRST_RETRY_MS;
      this.onMode("live");
      this.refresh();
    } else if (payload.type === "run_status") {
      this.pushed += 1;
      this.onRun(data);
    } else if (payload.type === "node_log") {
      this.onLog(data);
    } else if (payload.type === "input_received") {
      this.settleInput(null, data);
    } else if (payload.type === "error" && this.pendingInput) {
      this.settleInput(data);
    }
  }

  lost() {
    this.socket = null;
    this.live = false;
    this.settleInput({ detail: "The connection closed before the answer was confirmed." });
    if (this.stopped) return;
    this.onMode("polling");
    this.schedulePoll();
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.connect(), this.retryMs);
    this.retryMs = Math.min(this.retryMs * 2, MAX_RETRY_MS);
  }

  /** Follow this run over REST while the socket is down. */
  watch(runId) {
    this.watchedRun = runId;
    if (!this.live) this.schedulePoll();
  }

  schedulePoll() {
    clearTimeout(this.pollTimer);
    if (this.stopped || this.live || !this.watchedRun) return;
    this.pollTimer = setTimeout(async () => {
      const run = await this.fetchRun(this.watchedRun);
      if (run && FINAL_STATUSES.has(run.status)) this.watchedRun = null;
      this.schedulePoll();
    }, RUN_POLL_MS);
  }

  async fetchRun(runId) {
    const pushed = this.pushed;
    try {
      const run = await api(`workflow/runs/${encodeURIComponent(runId)}`);
      if (pushed === this.pushed) this.onRun(run);
      return run;
    } catch {
      return null;
    }
  }

  /** The session's latest run, e.g. after a reconnect or a page load. */
  async refresh() {
    const pushed = this.pushed;
    try {
      const page = await api(`workflow/runs?session_id=${encodeURIComponent(this.sessionId)}`);
      const runs = page.runs || [];
      if (runs.length && pushed === this.pushed) this.onRun(runs[0]);
    } catch {
      // The dashboard still works without the run list (e.g. no workflows app).
    }
  }

  async sendInput(runId, input, attachments) {
    if (!this.live || !this.socket) {
      return api(`workflow/runs/${encodeURIComponent(runId)}/input`, { method: "POST", json: { input, attachments } });
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => this.settleInput({ detail: "The server did not confirm the answer." }), INPUT_TIMEOUT_MS);
      this.pendingInput = { resolve, reject, timer };
      this.socket.send(JSON.stringify({ type: "human_input", data: { input, attachments, run_id: runId } }));
    });
  }

  settleInput(error, data) {
    const pending = this.pendingInput;
    if (!pending) return;
    this.pendingInput = null;
    clearTimeout(pending.timer);
    if (error) pending.reject(Object.assign(new Error(error.detail || "The answer was refused."), { payload: error }));
    else pending.resolve(data);
  }
}
