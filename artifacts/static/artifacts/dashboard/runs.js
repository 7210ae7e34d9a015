// Starting a workflow, and showing its run: status, nodes, logs, the
// question a human node asks, and the session zip once the run is over.

import { api, apiPath, withToken } from "./api.js";
import { $, h, show, showError } from "./dom.js";
import { FINAL_STATUSES, RunChannel } from "./control.js";

const MAX_LOG_LINES = 2000;
const STATUS_LABELS = {
  pending: "Pending",
  running: "Running",
  waiting_for_input: "Waiting for input",
  completed: "Completed",
  failed: "Failed",
  cancelled: "Cancelled",
  skipped: "Skipped",
};

export class RunPanel {
  /** selectedAttachments(): ids ticked in the attachments table; attachments(): the current list. */
  constructor({ selectedAttachments, attachments, onConnection }) {
    this.selectedAttachments = selectedAttachments;
    this.attachments = attachments;
    this.onConnection = onConnection;
    this.sessionId = null;
    this.channel = null;
    this.run = null;
    this.workflows = [];
    this.form = $("#run-form");
    this.select = $("#workflow");
    this.bind();
  }

  bind() {
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.start();
    });
    this.select.addEventListener("change", () => this.describeWorkflow());
    $("#cancel-run").addEventListener("click", () => this.cancel());
    $("#input-form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.answer();
    });
  }

  async loadWorkflows() {
    try {
      // `workflows` is the list of file names the reference Web UI reads; `details` has the rest.
      const { details = [] } = await api("workflows");
      this.workflows = details;
    } catch (error) {
      showError($("#run-error"), `Workflows could not be listed: ${error.message}`);
      return;
    }
    this.select.replaceChildren(...this.workflows.map((w) => h("option", { value: w.name }, w.name)));
    $("#start-run").disabled = this.workflows.length === 0;
    this.describeWorkflow();
  }

  describeWorkflow() {
    const workflow = this.workflows.find((w) => w.name === this.select.value);
    $("#workflow-description").textContent = workflow ? workflow.description || "" : "No workflows are available.";
  }

  setSession(sessionId) {
    if (this.channel) this.channel.stop();
    this.sessionId = sessionId;
    this.run = null;
    $("#logs").replaceChildren();
    show($("#run"), false);
    show($("#download-all"), false);
    show($("#cancel-run"), false);
    showError($("#run-error"), "");
    this.channel = new RunChannel(sessionId, {
      onRun: (run) => this.showRun(run),
      onLog: (log) => this.appendLog(log),
      onMode: (mode) => this.onConnection(mode),
    });
    this.channel.start();
  }

  updateChosen() {
    const count = this.selectedAttachments().length;
    $("#run-attachments").textContent =
      count === 0 ? "No attachments chosen." : `${count} attachment${count === 1 ? "" : "s"} chosen.`;
    this.renderInputChoices();
  }

  async start() {
    const prompt = $("#prompt").value.trim();
    showError($("#run-error"), "");
    if (!prompt) {
      showError($("#run-error"), "Write a prompt for the run.");
      $("#prompt").focus();
      return;
    }
    const button = $("#start-run");
    button.disabled = true;
    const pushed = this.channel.pushed;
    try {
      const started = await api("workflow/execute", {
        method: "POST",
        json: {
          task_prompt: prompt,
          workflow: this.select.value,
          session_id: this.sessionId,
          attachments: this.selectedAttachments(),
        },
      });
      if (pushed === this.channel.pushed) {
        this.showRun({ run_id: started.run_id, status: "pending", nodes: [] }, { force: true });
      }
      this.channel.watch(started.run_id);
      this.channel.fetchRun(started.run_id);
    } catch (error) {
      showError($("#run-error"), describeError(error));
    } finally {
      button.disabled = false;
    }
  }

  async cancel() {
    if (!this.run) return;
    try {
      this.showRun(await api(`workflow/runs/${encodeURIComponent(this.run.run_id)}/cancel`, { method: "POST" }));
    } catch (error) {
      showError($("#run-error"), error.message);
    }
  }

  showRun(run, { force = false } = {}) {
    if (!force && this.run && run.run_id !== this.run.run_id && !FINAL_STATUSES.has(this.run.status)) return;
    // A late message about an earlier state of this run must not roll it back.
    if (this.run && run.run_id === this.run.run_id && FINAL_STATUSES.has(this.run.status) && !FINAL_STATUSES.has(run.status)) return;
    if (!this.run || this.run.run_id !== run.run_id) $("#logs").replaceChildren();
    this.run = run;
    const final = FINAL_STATUSES.has(run.status);
    show($("#run"), true);
    $("#run-id").textContent = run.run_id;
    const status = $("#run-status");
    status.textContent = STATUS_LABELS[run.status] || run.status;
    status.dataset.state = run.status;
    this.renderNodes(run.nodes || []);
    showError($("#run-failure"), run.status === "failed" ? run.error || "The run failed." : "");
    show($("#cancel-run"), !final);
    this.renderDownload(final);
    this.renderWaiting(run);
  }

  renderNodes(nodes) {
    $("#run-nodes").replaceChildren(
      ...nodes.map((node) =>
        h("li", { class: "node", dataset: { state: node.status } },
          h("span", { class: "node-dot", "aria-hidden": "true" }),
          h("span", { class: "node-id" }, node.node_id),
          h("span", { class: "node-type" }, node.type || ""),
          h("span", { class: "node-status" }, STATUS_LABELS[node.status] || node.status || ""),
        ),
      ),
    );
  }

  renderDownload(final) {
    const link = $("#download-all");
    show(link, final);
    if (final) {
      link.href = withToken(apiPath(`sessions/${encodeURIComponent(this.sessionId)}/download`));
      link.setAttribute("download", `session_${this.sessionId}.zip`);
    }
  }

  renderWaiting(run) {
    const waiting = run.status === "waiting_for_input" && run.waiting_for;
    const form = $("#input-form");
    const wasHidden = form.hidden;
    show(form, Boolean(waiting));
    if (!waiting) return;
    $("#input-prompt").textContent = run.waiting_for.prompt || `Node ${run.waiting_for.node_id} waits for input.`;
    this.renderInputChoices();
    if (wasHidden) {
      showError($("#input-error"), "");
      $("#input-text").focus();
    }
  }

  renderInputChoices() {
    const fieldset = $("#input-attachments");
    const ticked = new Set(
      Array.from(fieldset.querySelectorAll("input:checked"), (input) => input.value).concat(this.selectedAttachments()),
    );
    const items = this.attachments().map((attachment) => {
      const id = `input-att-${attachment.attachment_id}`;
      return h("label", { class: "choice", for: id },
        h("input", { type: "checkbox", id, value: attachment.attachment_id, checked: ticked.has(attachment.attachment_id) }),
        attachment.name);
    });
    fieldset.replaceChildren(h("legend", {}, "Attach"), ...(items.length ? items : [h("span", { class: "hint" }, "No attachments yet: upload one above.")]));
  }

  async answer() {
    if (!this.run) return;
    const input = $("#input-text").value;
    const attachments = Array.from($("#input-attachments").querySelectorAll("input:checked"), (i) => i.value);
    showError($("#input-error"), "");
    try {
      await this.channel.sendInput(this.run.run_id, input, attachments);
      $("#input-text").value = "";
      show($("#input-form"), false);
    } catch (error) {
      showError($("#input-error"), describeError(error));
    }
  }

  appendLog({ node_id: nodeId, stream, lines = [] }) {
    const pre = $("#logs");
    const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    for (const line of lines) {
      pre.append(h("span", { class: `log-line ${stream === "stderr" ? "stderr" : ""}` }, h("span", { class: "log-node" }, `${nodeId} `), line, "\n"));
    }
    while (pre.childNodes.length > MAX_LOG_LINES) pre.firstChild.remove();
    if (atBottom) pre.scrollTop = pre.scrollHeight;
  }
}

function describeError(error) {
  const payload = error.payload || {};
  const names = payload.attachments;
  const fields = payload.errors ? Object.values(payload.errors).flat().filter((m) => typeof m === "string") : [];
  let message = error.message;
  if (fields.length) message += ` ${fields.join(" ")}`;
  if (Array.isArray(names) && names.length) message += ` (${names.join(", ")})`;
  return message;
}
