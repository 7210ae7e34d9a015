// Safe previews. Images are shown with <img> from the stream endpoint (the
// browser decodes them; SVG is excluded because it is a document that can
// carry script). Text and JSON are fetched and set as textContent. Anything
// else is a download link.

import { apiPath, apiText, withToken } from "./api.js";
import { formatBytes, h } from "./dom.js";

const TEXT_PREVIEW_BYTES = 256 * 1024;
const INLINE_IMAGES = new Set(["image/png", "image/jpeg", "image/gif", "image/webp", "image/avif", "image/bmp"]);
const TEXT_TYPES = new Set([
  "application/json", "application/x-ndjson", "application/yaml", "application/x-yaml",
  "application/toml", "application/csv", "application/sql",
]);

export function previewKind(mime) {
  const type = (mime || "").toLowerCase().split(";")[0].trim();
  if (INLINE_IMAGES.has(type)) return "image";
  if (type === "text/html" || type === "image/svg+xml" || type.includes("xml") || type.includes("javascript")) {
    return "download";
  }
  if (type.startsWith("text/") || TEXT_TYPES.has(type) || type.endsWith("+json")) return "text";
  return "download";
}

export function artifactUrl(sessionId, item, { download = false } = {}) {
  const id = item.attachment_id || item.artifact_id;
  const query = new URLSearchParams({ mode: "stream" });
  if (download) query.set("download", "true");
  return withToken(apiPath(`sessions/${encodeURIComponent(sessionId)}/artifacts/${encodeURIComponent(id)}?${query}`));
}

export class Preview {
  constructor({ section, title, body, closeButton }) {
    this.section = section;
    this.title = title;
    this.body = body;
    this.request = 0;
    closeButton.addEventListener("click", () => this.close());
  }

  close() {
    this.request += 1;
    this.section.hidden = true;
    this.body.replaceChildren();
  }

  async open(sessionId, item) {
    const request = ++this.request;
    this.section.hidden = false;
    this.title.textContent = `${item.name} · ${item.mime || "unknown type"} · ${formatBytes(item.size)}`;
    const download = h("a", { class: "button small", href: artifactUrl(sessionId, item, { download: true }), download: item.name }, "Download");
    const kind = previewKind(item.mime);
    if (kind === "image") {
      this.body.replaceChildren(
        h("img", { class: "preview-image", src: artifactUrl(sessionId, item), alt: item.name }),
        h("p", {}, download),
      );
    } else if (kind === "text") {
      this.body.replaceChildren(h("p", { class: "hint" }, "Loading…"));
      const content = await this.loadText(sessionId, item);
      if (request !== this.request) return;
      this.body.replaceChildren(content, h("p", {}, download));
    } else {
      this.body.replaceChildren(
        h("p", { class: "hint" }, "No preview for this type of file."),
        h("p", {}, download),
      );
    }
    this.section.scrollIntoView({ block: "nearest", behavior: "smooth" });
  }

  async loadText(sessionId, item) {
    const id = item.attachment_id || item.artifact_id;
    try {
      const { text, truncated } = await apiText(
        `sessions/${encodeURIComponent(sessionId)}/artifacts/${encodeURIComponent(id)}?mode=stream`,
        TEXT_PREVIEW_BYTES,
      );
      const viewer = h("pre", { class: "viewer", tabindex: "0", "aria-label": `Contents of ${item.name}` });
      viewer.textContent = truncated ? text : prettyJson(text, item.mime);
      const parts = [viewer];
      if (truncated) parts.push(h("p", { class: "hint" }, `Showing the first ${formatBytes(TEXT_PREVIEW_BYTES)}.`));
      return h("div", {}, parts);
    } catch (error) {
      return h("p", { class: "banner error", role: "alert" }, error.message);
    }
  }
}

function prettyJson(text, mime) {
  if (!/json/.test(mime || "")) return text;
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return text;
  }
}
