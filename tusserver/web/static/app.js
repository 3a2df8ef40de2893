// The demo page: uploads with tus-js-client (progress, speed, ETA, pause and resume, resume
// after a reload), the catalog list with search and paging, and downloads through signed URLs.
//
// A plain ES module with no build step and no framework. The server's facts (tus endpoint,
// whether a token is needed, whether the catalog is on) come from <body data-*>, filled in
// when the page is served: the CSP forbids inline scripts. User data (file names, API
// messages) only ever reaches the DOM as text, never as HTML.

const tus = window.tus;
const config = document.body.dataset;
// Where the server is mounted ("" on its own, "/uploads" inside a host app): API paths
// below are relative to it.
const base = config.base ?? "";
const endpoint = new URL(config.tusEndpoint, window.location.href).href;
const authRequired = config.auth === "required";
const catalogOn = config.catalog === "on";

const TOKEN_KEY = "tusserver.token";
const OPTIONS_KEY = "tusserver.options";
const PAGE_SIZE = 10;
// Seconds over which the shown speed is averaged: long enough to hide per-chunk jitter,
// short enough to follow a real change of bandwidth.
const SPEED_WINDOW = 3;

const $ = (id) => document.getElementById(id);

/** An element with attributes and children (strings become text nodes). */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === false || value == null) continue;
    if (name === "class") el.className = value;
    else if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  el.append(...children.filter((c) => c != null));
  return el;
}

// ---- formatting ------------------------------------------------------------------------

function formatBytes(n) {
  if (n == null) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  const digits = unit === 0 || value >= 100 ? 0 : value >= 10 ? 1 : 2;
  return `${Number(value.toFixed(digits))} ${units[unit]}`;
}

function formatSpeed(bytesPerSecond) {
  const mb = bytesPerSecond / 1e6;
  return `${mb.toFixed(mb >= 10 ? 0 : mb >= 1 ? 1 : 2)} MB/s`;
}

function formatEta(seconds) {
  if (!Number.isFinite(seconds)) return "";
  const s = Math.max(0, Math.ceil(seconds));
  if (s < 60) return `${s} s left`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s left`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min left`;
}

function formatDuration(seconds) {
  if (seconds == null) return "–";
  const s = Math.round(seconds);
  const hours = Math.floor(s / 3600);
  const minutes = Math.floor((s % 3600) / 60);
  const rest = String(s % 60).padStart(2, "0");
  return hours ? `${hours}:${String(minutes).padStart(2, "0")}:${rest}` : `${minutes}:${rest}`;
}

function percent(sent, total) {
  return total > 0 ? (sent / total) * 100 : 0;
}

// ---- status, errors, token -------------------------------------------------------------

function say(text) {
  $("status").textContent = text;
}

function showError(text) {
  const box = $("error");
  box.textContent = text;
  box.hidden = !text;
}

function getToken() {
  return window.sessionStorage.getItem(TOKEN_KEY) || "";
}

function authHeaders() {
  const token = getToken();
  return token ? { Authorization: `Bearer ${token}` } : {};
}

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** A JSON API call; failures become ApiError with the server's {"error": {code, message}}. */
async function api(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json", ...authHeaders() };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(`${base}${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
  } catch (err) {
    throw new ApiError(0, "ERR_NETWORK", `the server did not answer (${err.message})`);
  }
  let data = null;
  try {
    data = await response.json();
  } catch {
    // Not JSON (a proxy's error page): the status line says enough.
  }
  if (!response.ok) {
    const error = data && data.error ? data.error : {};
    throw new ApiError(
      response.status,
      error.code || `HTTP ${response.status}`,
      error.message || response.statusText || "request failed",
    );
  }
  return data;
}

function describe(err) {
  if (err instanceof ApiError) return `${err.message} (${err.code})`;
  return err && err.message ? err.message : String(err);
}

// ---- options ---------------------------------------------------------------------------

// tus-js-client's own protocol names. Its parallel uploads concatenate partial uploads, which
// only tus has, so the IETF draft uploads in one sequence.
const PROTOCOLS = ["tus-v1", "ietf-draft-05"];

function loadOptions() {
  try {
    const saved = JSON.parse(window.localStorage.getItem(OPTIONS_KEY) || "{}");
    if (saved.chunkSize != null) $("chunk-size").value = String(saved.chunkSize);
    if (PROTOCOLS.includes(saved.protocol)) $("protocol").value = saved.protocol;
    $("parallel").checked = Boolean(saved.parallel);
    if (saved.parts) $("parallel-count").value = String(saved.parts);
  } catch {
    // A damaged entry: keep the defaults.
  }
  syncParallel();
}

function syncParallel() {
  const tus = $("protocol").value === "tus-v1";
  $("parallel").disabled = !tus;
  $("parallel-count").disabled = !tus || !$("parallel").checked;
}

function currentOptions() {
  const parts = Math.min(8, Math.max(2, Number($("parallel-count").value) || 3));
  const protocol = $("protocol").value;
  return {
    protocol,
    chunkSize: Number($("chunk-size").value) || 0,
    parallel: $("parallel").checked,
    parts,
  };
}

function saveOptions() {
  syncParallel();
  window.localStorage.setItem(OPTIONS_KEY, JSON.stringify(currentOptions()));
}

// ---- uploads ---------------------------------------------------------------------------

const active = new Set();

/** One file's upload and its row: progress, speed, ETA, pause/resume. */
class UploadRow {
  constructor(file) {
    this.file = file;
    this.upload = null;
    this.fingerprint = null;
    this.fromStorage = false;
    this.startedAt = 0;
    this.resetSpeed();

    this.progressBar = h("progress", { max: 100, value: 0, "aria-label": `Progress of ${file.name}` });
    this.figures = h("span", { class: "figures" }, "waiting");
    this.stateText = h("span", { class: "state" });
    this.badge = h("span", { class: "badge", hidden: true }, "resumed");
    this.toggle = h("button", { type: "button", class: "secondary", onclick: () => this.onToggle() }, "Pause");
    this.dismiss = h(
      "button",
      { type: "button", class: "link", hidden: true, onclick: () => this.remove() },
      "Dismiss",
    );
    this.el = h(
      "li",
      { class: "upload", "data-state": "waiting" },
      h(
        "div",
        { class: "upload-head" },
        h("span", { class: "name" }, file.name),
        this.badge,
        h("span", { class: "size" }, formatBytes(file.size)),
      ),
      this.progressBar,
      h("div", { class: "upload-foot" }, this.figures, this.stateText, this.toggle, this.dismiss),
    );
    this.setState("waiting", "Waiting");
  }

  setState(state, text) {
    this.state = state;
    this.el.dataset.state = state;
    this.stateText.textContent = text;
    this.toggle.hidden = !["uploading", "paused", "error"].includes(state);
    this.toggle.textContent = state === "uploading" ? "Pause" : state === "error" ? "Retry" : "Resume";
    this.dismiss.hidden = !["done", "error", "paused"].includes(state);
  }

  resetSpeed() {
    this.sample = null;
    this.speed = null;
  }

  async begin() {
    const options = currentOptions();
    const upload = new tus.Upload(this.file, {
      endpoint,
      // Either protocol reaches the same uploads: an upload stored under one resumes under the
      // other (docs/protocol.md, "IETF draft: overview").
      protocol: options.protocol,
      chunkSize: options.chunkSize > 0 ? options.chunkSize : Infinity,
      parallelUploads: options.parallel && options.protocol === "tus-v1" ? options.parts : 1,
      metadata: {
        filename: this.file.name,
        filetype: this.file.type || "application/octet-stream",
      },
      // The stored URL is only for resuming: once done, a new pick is a new upload.
      removeFingerprintOnSuccess: true,
      retryDelays: [0, 1000, 3000, 5000, 10000],
      // Read at each request, so a token pasted after a 401 applies on "Retry".
      onBeforeRequest: (req) => {
        const token = getToken();
        if (token) req.setHeader("Authorization", `Bearer ${token}`);
      },
      onAfterResponse: (req, res) => this.onResponse(req, res),
      onProgress: (sent, total) => this.onProgress(sent, total),
      onSuccess: () => this.onSuccess(),
      onError: (err) => this.onError(err),
    });
    this.upload = upload;
    this.fingerprint = await upload.options.fingerprint(this.file, upload.options);
    // tus-js-client keeps the URL of every unfinished upload in localStorage, keyed by the
    // file's fingerprint (name, type, size, modification time, endpoint): picking the same
    // file after a reload finds it, and the upload asks the server where it stopped.
    const previous = await upload.findPreviousUploads();
    if (previous.length > 0) {
      previous.sort((a, b) => Date.parse(b.creationTime) - Date.parse(a.creationTime));
      upload.resumeFromPreviousUpload(previous[0]);
      this.fromStorage = true;
    }
    this.start();
    renderUnfinished();
  }

  start() {
    this.resetSpeed();
    this.startedAt = performance.now();
    this.startBytes = 0;
    this.setState("uploading", this.fromStorage ? "Looking up the stored upload…" : "Uploading");
    active.add(this);
    this.upload.start();
  }

  async onToggle() {
    if (this.state === "uploading") {
      this.setState("paused", "Paused");
      this.figures.textContent = `${this.progressBar.value.toFixed(0)}% · paused`;
      // abort() without terminating: the bytes the server has stay there, resumable.
      await this.upload.abort();
    } else {
      this.start();
    }
  }

  onResponse(req, res) {
    const method = req.getMethod();
    if (method === "POST" && res.getStatus() === 201 && this.fromStorage) {
      // The stored URL was gone (expired, or another user's): tus-js-client starts afresh.
      this.fromStorage = false;
      this.setState("uploading", "Stored upload gone from the server; started again");
      return;
    }
    // A successful HEAD (tus answers 200, the IETF draft 204) means the client continues an
    // upload the server already has, from the offset it reports: after a reload (the stored
    // URL) or a pause.
    const status = res.getStatus();
    if (method !== "HEAD" || status < 200 || status > 299) return;
    const offset = Number(res.getHeader("Upload-Offset"));
    if (!Number.isFinite(offset)) return;
    this.startBytes = offset;
    // With parallel uploads each part answers its own HEAD: no single offset to show.
    const parallel = this.upload.options.parallelUploads > 1;
    const share = parallel
      ? "where its parts stopped"
      : `${formatBytes(offset)} (${percent(offset, this.file.size).toFixed(0)}%)`;
    if (this.fromStorage) {
      this.badge.hidden = false;
      this.el.dataset.resumed = "true";
      this.resumedFrom = share;
      this.fromStorage = false;
      this.setState("uploading", `Resumed after reload from ${share}`);
    } else {
      this.setState("uploading", `Continued from ${share}`);
    }
  }

  onProgress(sent, total) {
    const now = performance.now();
    const value = percent(sent, total);
    this.progressBar.value = value;
    if (this.sample === null || sent < this.sample.bytes) {
      // First event of a (re)start, or a retry that went back: no rate from this step.
      this.sample = { at: now, bytes: sent };
    } else {
      const seconds = (now - this.sample.at) / 1000;
      if (seconds >= 0.25) {
        const rate = (sent - this.sample.bytes) / seconds;
        // Exponential average weighted by elapsed time, so it smooths the same however
        // often the browser reports progress.
        const weight = 1 - Math.exp(-seconds / SPEED_WINDOW);
        this.speed = this.speed === null ? rate : this.speed + weight * (rate - this.speed);
        this.sample = { at: now, bytes: sent };
      }
    }
    const parts = [`${value.toFixed(value < 10 ? 1 : 0)}%`];
    if (this.speed !== null && this.speed > 0) {
      parts.push(formatSpeed(this.speed), formatEta((total - sent) / this.speed));
    }
    this.figures.textContent = parts.join(" · ");
  }

  onSuccess() {
    active.delete(this);
    // Time and bytes since the last (re)start: what this page sent, not what a reload kept.
    const seconds = Math.max(0.001, (performance.now() - this.startedAt) / 1000);
    const sent = Math.max(0, this.file.size - this.startBytes);
    let summary = `${formatBytes(sent)} in ${seconds.toFixed(1)} s`;
    // Below a MiB the rate is mostly request latency: not worth showing.
    if (sent >= 1024 * 1024) summary += ` · ${formatSpeed(sent / seconds)}`;
    this.progressBar.value = 100;
    this.figures.textContent = this.startBytes > 0 ? `last ${summary}` : summary;
    this.setState("done", this.resumedFrom ? `Done · resumed after reload from ${this.resumedFrom}` : "Done");
    say(`${this.file.name} uploaded.`);
    renderUnfinished();
    refreshFilesSoon();
  }

  onError(err) {
    active.delete(this);
    const res = err && err.originalResponse;
    if (res && res.getStatus() === 429 && this.state === "uploading") {
      this.retryLater(res);
      return;
    }
    let detail = err && err.message ? err.message.split("\n")[0] : String(err);
    if (res) {
      // The tus routes answer "ERR_CODE: message" as text; show that rather than the
      // client's long composite message.
      const body = (res.getBody() || "").split("\n")[0].trim();
      detail = `${res.getStatus()} ${body || "error"}`;
    }
    this.setState("error", `Failed: ${detail}`);
    showError(`Upload of ${this.file.name} failed: ${detail}`);
  }

  // Past the server's rate limit (its burst admits a large folder, so this is rare, but
  // parallel parts multiply the creations): tus-js-client retries no 4xx but 409 and 423, so
  // wait as long as Retry-After says, plus a random spread that doubles with each refusal so
  // the rest of the folder does not come back in the same second, then start again.
  retryLater(res) {
    const seconds = Number(res.getHeader("Retry-After")) || 1;
    this.refusals = (this.refusals || 0) + 1;
    const delay = (seconds + Math.random() * Math.min(30, 2 ** this.refusals)) * 1000;
    this.setState("waiting", `Server busy (429): trying again in ${Math.ceil(delay / 1000)} s`);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      if (this.state === "waiting") this.start();
    }, delay);
  }

  remove() {
    clearTimeout(this.retryTimer);
    if (this.state === "paused" && this.upload) this.upload.abort();
    active.delete(this);
    this.el.remove();
    renderUnfinished();
  }
}

function addFiles(files) {
  showError("");
  for (const file of files) {
    const row = new UploadRow(file);
    $("uploads").prepend(row.el);
    row.begin().catch((err) => row.onError(err));
  }
}

/** Unfinished uploads tus-js-client remembers for this endpoint, with what the server has. */
async function renderUnfinished() {
  const storage = tus.defaultOptions.urlStorage;
  const list = $("unfinished-list");
  let entries = [];
  try {
    entries = storage ? await storage.findAllUploads() : [];
  } catch {
    entries = [];
  }
  const busy = [...active].map((row) => `tus::${row.fingerprint}::`);
  entries = entries.filter(
    (entry) =>
      entry.urlStorageKey.includes(`-${endpoint}::`) &&
      !busy.some((prefix) => entry.urlStorageKey.startsWith(prefix)),
  );
  list.replaceChildren();
  $("unfinished").hidden = entries.length === 0;
  for (const entry of entries) {
    const name = (entry.metadata && entry.metadata.filename) || "unnamed";
    const stored = h("span", { class: "hint" });
    const item = h(
      "li",
      {},
      h("span", { class: "name" }, name),
      h("span", { class: "size" }, formatBytes(entry.size)),
      stored,
      h(
        "button",
        {
          type: "button",
          class: "link",
          "aria-label": `Forget the unfinished upload of ${name}`,
          onclick: async () => {
            await storage.removeUpload(entry.urlStorageKey);
            renderUnfinished();
          },
        },
        "Forget",
      ),
    );
    list.append(item);
    if (entry.uploadUrl) serverOffset(entry).then((text) => (stored.textContent = text));
  }
}

async function serverOffset(entry) {
  try {
    const res = await fetch(entry.uploadUrl, {
      method: "HEAD",
      headers: { "Tus-Resumable": "1.0.0", ...authHeaders() },
      cache: "no-store",
    });
    if (res.status === 404 || res.status === 410) return "gone from the server";
    if (!res.ok) return `server answered ${res.status}`;
    const offset = Number(res.headers.get("Upload-Offset"));
    return `${percent(offset, entry.size).toFixed(0)}% on the server`;
  } catch {
    return "";
  }
}

// ---- the catalog -----------------------------------------------------------------------

const listing = { page: 1, search: "", totalPages: 1, seq: 0 };
const thumbnails = [];
let refreshTimer = null;

function refreshFilesSoon() {
  refreshFiles();
  // The sha256 and the media probe may finish a moment after the upload: look again once.
  window.clearTimeout(refreshTimer);
  refreshTimer = window.setTimeout(refreshFiles, 2000);
}

async function refreshFiles() {
  if (!catalogOn) return;
  const seq = ++listing.seq;
  const query = new URLSearchParams({
    page: String(listing.page),
    page_size: String(PAGE_SIZE),
    sort_by: "created_at",
    sort_order: "desc",
  });
  if (listing.search) query.set("search", listing.search);
  const table = $("files");
  table.setAttribute("aria-busy", "true");
  try {
    const data = await api(`/api/v1/files?${query}`);
    if (seq !== listing.seq) return; // a newer request was made meanwhile
    if (data.total_pages > 0 && listing.page > data.total_pages) {
      listing.page = data.total_pages;
      refreshFiles();
      return;
    }
    renderFiles(data);
  } catch (err) {
    if (seq !== listing.seq) return;
    renderFiles({ items: [], total_count: 0, page: 1, total_pages: 0 });
    showError(`Could not list files: ${describe(err)}`);
  } finally {
    if (seq === listing.seq) table.removeAttribute("aria-busy");
  }
}

function renderFiles(data) {
  for (const url of thumbnails.splice(0)) URL.revokeObjectURL(url);
  const body = $("files-body");
  body.replaceChildren(...data.items.map(fileRow));
  listing.totalPages = Math.max(1, data.total_pages);
  $("files-empty").hidden = data.items.length > 0;
  $("files-empty").textContent = listing.search ? `Nothing matches “${listing.search}”.` : "No files yet.";
  const count = `${data.total_count} file${data.total_count === 1 ? "" : "s"}`;
  $("page-info").textContent = `Page ${data.page} of ${listing.totalPages} · ${count}`;
  $("prev").disabled = listing.page <= 1;
  $("next").disabled = listing.page >= listing.totalPages;
}

function fileRow(file) {
  const media = file.media || {};
  const label = h(
    "div",
    { class: "file" },
    h(
      "div",
      {},
      h("span", { class: "name" }, file.filename || file.id),
      h("span", { class: "type" }, file.content_type || ""),
    ),
  );
  if (file.thumbnail_url) {
    const img = h("img", { class: "thumb", alt: "", width: 48, height: 27 });
    label.prepend(img);
    loadThumbnail(file.thumbnail_url, img);
  }
  const name = h("td", { class: "file-name" }, label);
  const sha = file.sha256
    ? h("code", { title: file.sha256 }, `${file.sha256.slice(0, 12)}…`)
    : h("span", { class: "hint" }, "hashing…");
  const created = file.created_at ? new Date(file.created_at) : null;
  return h(
    "tr",
    { "data-file-id": file.id },
    name,
    h("td", { class: "num" }, formatBytes(file.size)),
    h("td", {}, sha),
    h("td", {}, created ? h("time", { datetime: file.created_at }, created.toLocaleString()) : "–"),
    h("td", { class: "num" }, formatDuration(media.duration_seconds)),
    h(
      "td",
      { class: "actions" },
      h(
        "button",
        {
          type: "button",
          "aria-label": `Download ${file.filename || file.id}`,
          onclick: (event) => download(file, event.currentTarget),
        },
        "Download",
      ),
    ),
  );
}

async function loadThumbnail(url, img) {
  // With auth on, an <img src> would go without the bearer token: fetch it, show a blob.
  try {
    const res = await fetch(url, { headers: authHeaders() });
    if (!res.ok) return;
    const objectUrl = URL.createObjectURL(await res.blob());
    thumbnails.push(objectUrl);
    img.src = objectUrl;
  } catch {
    // No thumbnail is fine.
  }
}

async function download(file, button) {
  showError("");
  button.disabled = true;
  try {
    const grant = await api("/api/v1/delivery/download-url", {
      method: "POST",
      body: { file_id: file.id },
    });
    // A navigation, not a fetch: the bytes stream to disk (from S3 directly, where the
    // URL is presigned), and the CSP's connect-src does not need the storage's origin.
    const anchor = h("a", { href: grant.url, download: file.filename || "", rel: "noopener", hidden: true });
    document.body.append(anchor);
    anchor.click();
    anchor.remove();
    say(`Downloading ${file.filename}.`);
  } catch (err) {
    showError(`Download of ${file.filename} failed: ${describe(err)}`);
  } finally {
    button.disabled = false;
  }
}

// ---- wiring ----------------------------------------------------------------------------

function setUpAuth() {
  if (!authRequired) {
    $("auth").hidden = true;
    $("mode").textContent = "Authentication is off: uploads belong to the local anonymous user.";
    return;
  }
  $("mode").textContent = "This server needs a bearer token.";
  $("auth-hint").textContent =
    "Uploads and the file list need a token. It is kept in this tab only (sessionStorage). " +
    "On the server: tusserver token --sub alice";
  $("token").value = getToken();
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("token").value.trim();
    if (token) window.sessionStorage.setItem(TOKEN_KEY, token);
    else window.sessionStorage.removeItem(TOKEN_KEY);
    showError("");
    say(token ? "Token set." : "Token cleared.");
    refreshFiles();
    renderUnfinished();
  });
  $("token-forget").addEventListener("click", () => {
    window.sessionStorage.removeItem(TOKEN_KEY);
    $("token").value = "";
    say("Token forgotten.");
    refreshFiles();
  });
}

function setUpUploads() {
  if (!tus || !tus.isSupported) {
    showError("This browser cannot run tus-js-client (no XMLHttpRequest or Blob.slice).");
    $("choose").disabled = true;
    return;
  }
  loadOptions();
  for (const id of ["protocol", "chunk-size", "parallel", "parallel-count"]) {
    $(id).addEventListener("change", saveOptions);
  }
  const input = $("file-input");
  $("choose").addEventListener("click", () => input.click());
  input.addEventListener("change", () => {
    addFiles([...input.files]);
    input.value = ""; // so picking the same file again fires "change" again
  });
  const drop = $("drop");
  for (const name of ["dragenter", "dragover"]) {
    drop.addEventListener(name, (event) => {
      event.preventDefault();
      drop.classList.add("over");
    });
  }
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    addFiles([...event.dataTransfer.files]);
  });
  renderUnfinished();
}

function setUpCatalog() {
  if (!catalogOn) {
    $("catalog").hidden = true;
    return;
  }
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    showError("");
    listing.search = $("search").value.trim();
    listing.page = 1;
    refreshFiles();
  });
  $("prev").addEventListener("click", () => {
    listing.page = Math.max(1, listing.page - 1);
    refreshFiles();
  });
  $("next").addEventListener("click", () => {
    listing.page = Math.min(listing.totalPages, listing.page + 1);
    refreshFiles();
  });
  refreshFiles();
}

setUpAuth();
setUpUploads();
setUpCatalog();
document.body.dataset.ready = "true";
