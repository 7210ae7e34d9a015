// Every request the dashboard makes goes through this module, so that
// credentials are added in one place: a session token kept in
// sessionStorage, sent as a Bearer header where headers can be set (fetch,
// XHR) and as ?token= where they cannot (WebSocket, <img>, downloads).

const TOKEN_KEY = "mac.dashboard.token";
const body = document.body;
const API_ROOT = body.dataset.apiRoot || "/api/";
const WS_ROOT = body.dataset.wsRoot || "/ws";

export class ApiError extends Error {
  constructor(status, payload) {
    super(errorSentence(status, payload));
    this.status = status;
    this.code = payload && typeof payload.code === "string" ? payload.code : "";
    this.payload = payload || {};
  }
}

export function getToken() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(token) {
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
}

const SESSION_KEY = "mac.dashboard.session";

/** The session this tab was last in (its token is the one kept), or "". */
export function rememberedSession() {
  return sessionStorage.getItem(SESSION_KEY) || "";
}

export function rememberSession(sessionId) {
  sessionStorage.setItem(SESSION_KEY, sessionId);
}

/**
 * The session and token a link opened the page with (`?session=S&token=T`).
 * The token leaves the address bar at once, but is not adopted here: a link
 * can come from anyone, and switching into their session silently would let
 * them receive what this person uploads next. The page asks first.
 */
export function linkFromLocation() {
  const url = new URL(location.href);
  const sessionId = url.searchParams.get("session") || "";
  const token = url.searchParams.get("token") || "";
  if (token) {
    url.searchParams.delete("token");
    history.replaceState(null, "", url);
  }
  return { sessionId, token };
}

export function apiPath(path) {
  return API_ROOT + path.replace(/^\//, "");
}

/** A same-origin URL carrying the token, for places that cannot send headers. */
export function withToken(url) {
  const absolute = new URL(url, location.origin);
  const token = getToken();
  if (token) absolute.searchParams.set("token", token);
  return absolute.pathname + absolute.search;
}

export function wsUrl(path, params = {}) {
  const url = new URL(WS_ROOT + path, location.origin);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(key, value);
  }
  const token = getToken();
  if (token) url.searchParams.set("token", token);
  return url.toString();
}

export function openSocket(path, params) {
  return new WebSocket(wsUrl(path, params));
}

/**
 * A socket whose messages arrive parsed: `onPayload(payload, socket)` for
 * each JSON message (anything else is ignored), `onClose(socket)` when it
 * closes. Throws, like `new WebSocket`, when it cannot even be opened.
 */
export function openJsonSocket(path, params, onPayload, onClose) {
  const socket = openSocket(path, params);
  socket.onmessage = (message) => {
    let payload;
    try {
      payload = JSON.parse(message.data);
    } catch {
      return;
    }
    onPayload(payload, socket);
  };
  socket.onclose = () => onClose(socket);
  return socket;
}

export function authHeaders(method = "GET") {
  const headers = {};
  const token = getToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  if (!["GET", "HEAD", "OPTIONS"].includes(method)) {
    // Only matters when the browser also holds a Django login (the admin).
    const csrf = document.querySelector('meta[name="csrf-token"]');
    if (csrf && csrf.content) headers["X-CSRFToken"] = csrf.content;
  }
  return headers;
}

/** fetch() an API path; resolves to parsed JSON (or null), rejects with ApiError. */
export async function api(path, { method = "GET", json, signal, headers = {} } = {}) {
  const init = { method, signal, headers: { Accept: "application/json", ...authHeaders(method), ...headers } };
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  }
  const response = await fetch(apiPath(path), init);
  const payload = await readJson(response);
  if (!response.ok) throw new ApiError(response.status, payload);
  return payload;
}

/** fetch() an API path for its text; the text and whether it was cut short. */
export async function apiText(path, maxBytes) {
  const headers = { ...authHeaders(), Range: `bytes=0-${maxBytes - 1}` };
  const response = await fetch(apiPath(path), { headers });
  if (!response.ok) throw new ApiError(response.status, await readJson(response));
  const text = await response.text();
  const range = response.headers.get("Content-Range") || "";
  const total = Number(range.split("/")[1]);
  return { text, truncated: response.status === 206 && total > maxBytes };
}

/**
 * POST one file as multipart/form-data with XMLHttpRequest, which (unlike
 * fetch) reports upload progress. Returns { promise, abort }.
 */
export function uploadFile(path, file, onProgress) {
  const xhr = new XMLHttpRequest();
  const promise = new Promise((resolve, reject) => {
    xhr.open("POST", apiPath(path));
    xhr.responseType = "text";
    for (const [name, value] of Object.entries(authHeaders("POST"))) xhr.setRequestHeader(name, value);
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.onprogress = (event) => {
      if (event.lengthComputable) onProgress(event.loaded, event.total);
    };
    xhr.onload = () => {
      const payload = parseJson(xhr.responseText);
      if (xhr.status >= 200 && xhr.status < 300) resolve(payload);
      else reject(new ApiError(xhr.status, payload));
    };
    xhr.onerror = () => reject(new ApiError(0, { detail: "The connection failed during the upload." }));
    xhr.onabort = () => reject(new ApiError(0, { detail: "The upload was cancelled.", code: "aborted" }));
    const form = new FormData();
    form.append("file", file, file.name);
    xhr.send(form);
  });
  return { promise, abort: () => xhr.abort() };
}

/**
 * Upload one file with the tus protocol (the vendored tus-js-client), in
 * chunks, so that a dropped connection is retried and a page reload resumes
 * from the server's offset: the upload's URL is remembered in localStorage
 * under a fingerprint of the session and the file. Resolves to the
 * attachment's metadata. Returns { promise, pause, resume }.
 */
export function resumableUpload(sessionId, file, onProgress, chunkSize = RESUMABLE_CHUNK_BYTES) {
  let upload = null;
  const promise = new Promise((resolve, reject) => {
    let attachmentId = null;
    upload = new window.tus.Upload(file, {
      endpoint: new URL(apiPath(`uploads/${encodeURIComponent(sessionId)}/tus/`), location.origin).href,
      chunkSize,
      // Past a minute: a 423 from a server whose previous worker died on
      // another host lasts until that worker's lease lapses (MAC_TUS_LEASE, 30 s).
      retryDelays: [0, 1000, 3000, 5000, 10000, 20000, 30000],
      metadata: { filename: file.name, filetype: file.type || "" },
      storeFingerprintForResuming: true,
      removeFingerprintOnSuccess: true,
      fingerprint: async (f) => ["mac-tus", sessionId, f.name, f.type, f.size, f.lastModified].join("|"),
      onBeforeRequest: (request) => {
        for (const [name, value] of Object.entries(authHeaders(request.getMethod()))) request.setHeader(name, value);
      },
      onAfterResponse: (_request, response) => {
        attachmentId = response.getHeader("Attachment-Id") || attachmentId;
      },
      onProgress: (loaded, total) => onProgress(loaded, total),
      onError: (error) => {
        const response = error.originalResponse;
        const status = response ? response.getStatus() : 0;
        reject(new ApiError(status, parseJson(response ? response.getBody() : "") || { detail: error.message }));
      },
      onSuccess: async () => {
        try {
          resolve(await api(`sessions/${encodeURIComponent(sessionId)}/artifacts/${encodeURIComponent(attachmentId)}`));
        } catch (error) {
          reject(error);
        }
      },
    });
    upload.findPreviousUploads().then((previous) => {
      if (previous.length) upload.resumeFromPreviousUpload(previous[0]);
      upload.start();
    }, reject);
  });
  return { promise, pause: () => upload.abort(), resume: () => upload.start() };
}

const RESUMABLE_CHUNK_BYTES = 8 * 1024 * 1024;

async function readJson(response) {
  if (response.status === 204) return null;
  return parseJson(await response.text());
}

function parseJson(text) {
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

const STATUS_SENTENCES = {
  0: "The server could not be reached.",
  401: "This session needs a token.",
  403: "This token does not give access to the session.",
  404: "Not found.",
  413: "The file is larger than the server accepts.",
  415: "The server does not accept this kind of request.",
  422: "The server refused the file.",
  503: "The server is busy; try again shortly.",
};

function errorSentence(status, payload) {
  if (payload && typeof payload.detail === "string" && payload.detail) return payload.detail;
  return STATUS_SENTENCES[status] || `The server answered ${status}.`;
}
