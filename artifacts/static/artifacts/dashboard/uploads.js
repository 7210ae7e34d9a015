// Drag-and-drop and file-picker uploads, a few at a time, each with its own
// progress bar and, when the server refuses it, the server's own sentence.

import { resumableUpload, uploadFile } from "./api.js";
import { formatBytes, h } from "./dom.js";

const PARALLEL_UPLOADS = 3;
// Files from this size on go by tus: chunked, resumable after a dropped
// connection or a reload, with a pause button.
export const RESUMABLE_FROM_BYTES = 8 * 1024 * 1024;

export class Uploads {
  constructor({ dropzone, input, list, limitNote, onUploaded }) {
    this.dropzone = dropzone;
    this.input = input;
    this.list = list;
    this.limitNote = limitNote;
    this.onUploaded = onUploaded;
    this.sessionId = null;
    this.maxBytes = null;
    this.queue = [];
    this.running = 0;
    this.bind();
  }

  setSession(sessionId) {
    this.sessionId = sessionId;
    this.list.replaceChildren();
  }

  setLimit(maxBytes) {
    this.maxBytes = Number.isInteger(maxBytes) ? maxBytes : null;
    this.limitNote.textContent = this.maxBytes === null ? "" : `Up to ${formatBytes(this.maxBytes)} per file.`;
  }

  bind() {
    this.input.addEventListener("change", () => {
      this.add(this.input.files);
      this.input.value = "";
    });
    for (const type of ["dragenter", "dragover"]) {
      this.dropzone.addEventListener(type, (event) => {
        if (!hasFiles(event)) return;
        event.preventDefault();
        event.dataTransfer.dropEffect = "copy";
        this.dropzone.classList.add("dragging");
      });
    }
    this.dropzone.addEventListener("dragleave", (event) => {
      if (!this.dropzone.contains(event.relatedTarget)) this.dropzone.classList.remove("dragging");
    });
    this.dropzone.addEventListener("drop", (event) => {
      event.preventDefault();
      this.dropzone.classList.remove("dragging");
      this.add(event.dataTransfer.files);
    });
  }

  add(files) {
    if (!this.sessionId) return;
    for (const file of Array.from(files || [])) {
      const item = this.renderItem(file);
      this.list.prepend(item.element);
      if (this.maxBytes !== null && file.size > this.maxBytes) {
        this.fail(item, `${file.name} is ${formatBytes(file.size)}; the server accepts up to ${formatBytes(this.maxBytes)}.`);
        continue;
      }
      this.queue.push({ file, item, sessionId: this.sessionId });
    }
    this.pump();
  }

  pump() {
    while (this.running < PARALLEL_UPLOADS && this.queue.length) {
      const job = this.queue.shift();
      this.running += 1;
      this.send(job).finally(() => {
        this.running -= 1;
        this.pump();
      });
    }
  }

  async send({ file, item, sessionId }) {
    item.element.dataset.state = "uploading";
    const progress = (loaded, total) => {
      item.progress.max = total;
      item.progress.value = loaded;
      item.status.textContent = `${Math.round((loaded / total) * 100)}%`;
    };
    const resumable = file.size >= RESUMABLE_FROM_BYTES && window.tus && window.tus.isSupported;
    const upload = resumable
      ? resumableUpload(sessionId, file, progress)
      : uploadFile(`uploads/${encodeURIComponent(sessionId)}`, file, progress);
    if (resumable) this.addPause(item, upload);
    try {
      const attachment = await upload.promise;
      item.progress.value = item.progress.max;
      if (item.pause) item.pause.remove();
      item.element.dataset.state = "done";
      item.status.textContent = "Uploaded";
      if (sessionId === this.sessionId) this.onUploaded(attachment);
    } catch (error) {
      this.fail(item, error.message, error.status);
    }
  }

  addPause(item, upload) {
    item.element.dataset.resumable = "true";
    item.pause = h("button", { type: "button", class: "button small upload-pause" }, "Pause");
    item.pause.addEventListener("click", () => {
      const paused = item.element.dataset.state === "paused";
      item.element.dataset.state = paused ? "uploading" : "paused";
      item.pause.textContent = paused ? "Pause" : "Resume";
      if (paused) upload.resume();
      else {
        upload.pause();
        item.status.textContent = "Paused";
      }
    });
    item.status.after(item.pause);
  }

  fail(item, message, status) {
    if (item.pause) item.pause.remove();
    item.element.dataset.state = "error";
    item.progress.hidden = true;
    item.status.textContent = status ? `Failed (${status})` : "Not sent";
    item.error.textContent = message;
    item.error.hidden = false;
  }

  renderItem(file) {
    const progress = h("progress", { max: file.size || 1, value: 0, "aria-label": `Upload of ${file.name}` });
    const status = h("span", { class: "upload-status" }, "Waiting");
    const error = h("p", { class: "upload-error", role: "alert", hidden: true });
    const element = h(
      "li",
      { class: "upload", dataset: { state: "queued" } },
      h("div", { class: "upload-head" },
        h("span", { class: "upload-name" }, file.name),
        h("span", { class: "upload-size" }, formatBytes(file.size)),
        status),
      progress,
      error,
    );
    return { element, progress, status, error };
  }
}

function hasFiles(event) {
  return Array.from(event.dataTransfer?.types || []).includes("Files");
}
