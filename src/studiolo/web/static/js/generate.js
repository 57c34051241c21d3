// The generator: form -> POST /api/v1/generations (JSON, or multipart with an init image and a painted mask),
// then one card per job fed by its event stream (queue position, steps, previews, results, errors).
import { api, ApiError, apiPath, clearFieldErrors, el, refreshSession, showFieldErrors, toast } from "./app.js";

const form = document.getElementById("gen-form");
const prompt = document.getElementById("prompt");
const count = document.getElementById("prompt-count");
const seed = document.getElementById("seed");
const lock = document.getElementById("seed-lock");
const jobsBox = document.getElementById("jobs");
const empty = document.getElementById("jobs-empty");
const template = document.getElementById("job-template");

// The server's limit (STUDIOLO_MAX_PROMPT_CHARS), rendered into the page: the one number, counted the way the
// server counts (code points of the prompt as sent, trimmed), not UTF-16 units.
const LIMIT = Number(prompt.dataset.limit);
const fmt = new Intl.NumberFormat();
const promptLength = () => [...prompt.value.trim()].length;
const updateCount = () => {
  count.textContent = `${fmt.format(promptLength())} / ${fmt.format(LIMIT)}`;
  count.classList.toggle("over", promptLength() > LIMIT);
};
prompt.addEventListener("input", updateCount);
updateCount();
prompt.addEventListener("keydown", (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) form.requestSubmit(); });

document.getElementById("seed-dice").addEventListener("click", () => {
  seed.value = String(crypto.getRandomValues(new Uint32Array(1))[0]);
});

// --- init image + mask ---------------------------------------------------------------------------------
const fileInput = document.getElementById("init-file");
const dropzone = document.getElementById("dropzone");
const editor = document.getElementById("init-editor");
const preview = document.getElementById("init-preview");
const canvas = document.getElementById("mask-canvas");
const maskOn = document.getElementById("mask-on");
const brush = document.getElementById("brush");
const strength = document.getElementById("strength");
let initFile = null;
let painted = false;

strength.addEventListener("input", () => { document.getElementById("strength-out").textContent = strength.value; });

function useFile(file) {
  if (!file) return;
  if (!["image/png", "image/jpeg", "image/webp"].includes(file.type)) {
    toast("Use a PNG, JPEG or WebP image.", { kind: "error" });
    return;
  }
  initFile = file;
  const url = URL.createObjectURL(file);
  preview.onload = () => {
    canvas.width = preview.naturalWidth;
    canvas.height = preview.naturalHeight;
    painted = false;
  };
  preview.src = url;
  editor.hidden = false;
}
fileInput.addEventListener("change", () => useFile(fileInput.files[0]));
dropzone.addEventListener("click", (e) => { if (e.target === dropzone || e.target.tagName === "P") fileInput.click(); });
for (const type of ["dragenter", "dragover"]) {
  dropzone.addEventListener(type, (e) => { e.preventDefault(); dropzone.classList.add("over"); });
}
for (const type of ["dragleave", "drop"]) {
  dropzone.addEventListener(type, (e) => { e.preventDefault(); dropzone.classList.remove("over"); });
}
dropzone.addEventListener("drop", (e) => useFile(e.dataTransfer.files[0]));
document.getElementById("init-remove").addEventListener("click", () => {
  initFile = null; editor.hidden = true; fileInput.value = ""; maskOn.checked = false; clearMask();
});
function clearMask() { canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height); painted = false; }
document.getElementById("mask-clear").addEventListener("click", clearMask);

// White strokes on a transparent canvas over the image; the mask sent is white-on-black (white = repaint).
let drawing = false;
function paint(e) {
  if (!drawing || !maskOn.checked) return;
  const r = canvas.getBoundingClientRect();
  const scale = canvas.width / r.width;
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#fff";
  ctx.beginPath();
  ctx.arc((e.clientX - r.left) * scale, (e.clientY - r.top) * scale, (Number(brush.value) * scale) / 2, 0, Math.PI * 2);
  ctx.fill();
  painted = true;
}
canvas.addEventListener("pointerdown", (e) => { if (!maskOn.checked) return; drawing = true; canvas.setPointerCapture(e.pointerId); paint(e); });
canvas.addEventListener("pointermove", paint);
canvas.addEventListener("pointerup", () => { drawing = false; });
canvas.addEventListener("pointercancel", () => { drawing = false; });

function maskBlob() {
  const out = document.createElement("canvas");
  out.width = canvas.width;
  out.height = canvas.height;
  const ctx = out.getContext("2d");
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, out.width, out.height);
  ctx.drawImage(canvas, 0, 0);
  return new Promise((resolve) => out.toBlob(resolve, "image/png"));
}

// --- submit ------------------------------------------------------------------------------------------
function params() {
  const p = { prompt: prompt.value.trim(), n: Number(form.n.value || 1), model: form.model.value };
  const style = form.querySelector("input[name=style]:checked")?.value;
  if (style && style !== "none") p.style = style;
  const size = form.size_choice.value;
  if (size.startsWith("size:")) p.size = size.slice(5);
  else if (size.startsWith("ratio:")) p.aspect_ratio = size.slice(6);
  if (form.quality.value) p.quality = form.quality.value;
  if (seed.value !== "") p.seed = Number(seed.value);
  if (form.negative_prompt.value.trim()) p.negative_prompt = form.negative_prompt.value.trim();
  const tags = form.tags.value.split(",").map((t) => t.trim()).filter(Boolean);
  if (tags.length) p.tags = tags;
  return p;
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  clearFieldErrors(form);
  const problem = !prompt.value.trim() ? "Write a prompt first."
    : promptLength() > LIMIT ? `The prompt is longer than ${fmt.format(LIMIT)} characters.` : null;
  if (problem) {
    showFieldErrors(form, new ApiError(422, { error: { code: "invalid_input", message: problem, details: { field: "prompt" } } }));
    return;
  }
  const button = document.getElementById("generate");
  button.disabled = true;
  const p = params();
  try {
    let body = p;
    if (initFile) {
      body = new FormData();
      p.strength = Number(strength.value);
      body.append("params", JSON.stringify(p));
      body.append("init_image", initFile);
      if (maskOn.checked && painted) {
        body.append("kind", "inpaint");
        body.append("mask_image", await maskBlob(), "mask.png");
      } else {
        body.append("kind", "img2img");
      }
    }
    const accepted = await api("generations", { method: "POST", body });
    if (!lock.checked) seed.value = "";
    follow({ id: accepted.id, status: accepted.status, queue_position: accepted.queue_position,
      queue_position_capped: accepted.queue_position_capped, params: p,
      urls: accepted.urls, outputs: [], progress: { step: 0, total: 0 } });
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    showFieldErrors(form, error);
  } finally {
    button.disabled = false;
  }
});

// --- job cards ---------------------------------------------------------------------------------------
const TERMINAL = new Set(["succeeded", "failed", "canceled"]);

function follow(job) {
  empty.hidden = true;
  const card = template.content.firstElementChild.cloneNode(true);
  card.id = "job-" + job.id;
  card.dataset.jobId = job.id;
  const q = (s) => card.querySelector(s);
  q(".job-title").textContent = job.params?.prompt ?? "Generation";
  const bar = q(".progress");
  const text = q(".job-text");
  const status = q(".job-status");
  const previewImg = q(".job-preview");
  const results = q(".job-results");
  const shown = new Set();
  jobsBox.prepend(card);

  const setStatus = (s) => { status.textContent = s; status.className = "badge job-status badge-" + s; card.dataset.status = s; };
  // The bar only moves forward within an attempt: the stream interleaves live steps with re-reads of the job row,
  // which is written less often and can lag a step or two behind (tests/e2e/test_web_studio.py watches this).
  let reached = 0;
  // `p`: {step, total, image, images} as the job and its events carry them (CONTRACTS.md "Progress").
  const setProgress = (p) => {
    const { step = 0, total = 0, image = 0, images = 1 } = p ?? {};
    const done = image > 0 ? (image - 1) * total + step : step;
    const all = image > 0 ? total * Math.max(images, 1) : total;
    const pct = all ? Math.round((100 * done) / all) : 0;
    if (all && pct < reached) return;
    reached = pct;
    const words = image > 0 && images > 1 ? `Image ${image} of ${images} · step ${step} of ${total}`
      : images > 1 ? `Step ${step} of ${total} · ${images} images` : `Step ${step} of ${total}`;
    bar.firstElementChild.style.width = pct + "%";
    bar.setAttribute("aria-valuenow", String(pct));
    bar.setAttribute("aria-valuetext", total ? words : "Waiting");
    if (total) text.textContent = words;
    card.dataset.step = String(done);
  };
  const addImage = (id) => {
    if (shown.has(id)) return;
    shown.add(id);
    const img = el("img", { src: apiPath`/api/v1/images/${id}/file` + "?size=300", alt: job.params?.prompt ?? "Generated image",
      width: 300, height: 300, loading: "lazy" });
    results.append(el("a", { href: "/gallery?" + new URLSearchParams({ image: id }), class: "tile", "data-image-id": id }, img));
  };
  const finish = (view, type, error) => {
    setStatus(type);
    q(".job-cancel").hidden = true;
    previewImg.hidden = true;
    if (type === "succeeded") {
      setProgress({ step: 1, total: 1 });
      text.textContent = `Done in ${view?.duration_seconds?.toFixed?.(1) ?? "?"} s`;
      for (const o of view?.outputs ?? []) addImage(o.image_id);
    } else if (type === "failed") {
      q(".job-error").textContent = error?.message ?? "The job failed.";
      text.textContent = "Failed";
    } else {
      text.textContent = "Canceled";
    }
  };

  setStatus(job.status);
  setProgress(job.progress);
  text.textContent = job.status === "queued" ? queuedText(job.queue_position, job.queue_position_capped) : text.textContent || "Starting…";
  for (const o of job.outputs ?? []) addImage(o.image_id);

  q(".job-cancel").addEventListener("click", async () => {
    try { await api(apiPath`jobs/${job.id}/cancel`, { method: "POST" }); text.textContent = "Canceling…"; }
    catch (error) { toast(error.message, { kind: "error" }); }
  });

  if (TERMINAL.has(job.status)) { finish(job, job.status, job.error); return; }

  let source;
  let retried = false;
  const open = () => {
    source = new EventSource(job.urls?.events ?? apiPath`/api/v1/jobs/${job.id}/events`);
    source.addEventListener("queued", (e) => { setStatus("queued"); const ev = JSON.parse(e.data); text.textContent = queuedText(ev.position, ev.capped); });
    source.addEventListener("started", () => { setStatus("running"); if (!reached) text.textContent = "Loading the model…"; });
    source.addEventListener("retrying", () => { reached = 0; text.textContent = "Retrying after an error…"; });
    source.addEventListener("progress", (e) => { const d = JSON.parse(e.data); setStatus("running"); setProgress(d); });
    source.addEventListener("preview", (e) => {
      const d = JSON.parse(e.data);
      if (d.data_url) { previewImg.src = d.data_url; previewImg.hidden = false; }
    });
    source.addEventListener("output", (e) => addImage(JSON.parse(e.data).image_id));
    // The server is restarting: the stream ends and the browser reconnects by itself (the stream's `retry`).
    source.addEventListener("shutdown", () => { text.textContent = "Server restarting, reconnecting…"; });
    for (const type of TERMINAL) {
      source.addEventListener(type, (e) => {
        source.close();
        const d = JSON.parse(e.data);
        finish(d.job, type, d.error);
      });
    }
    source.onerror = async () => {
      if (source.readyState !== EventSource.CLOSED) return; // the browser reconnects by itself
      // Closed for good: most likely the access cookie expired. Renew once, then fall back to polling.
      if (!retried && (await refreshSession())) { retried = true; open(); return; }
      poll();
    };
  };
  const poll = async () => {
    try {
      const view = await api(apiPath`jobs/${job.id}`);
      if (TERMINAL.has(view.status)) { finish(view, view.status, view.error); return; }
      setStatus(view.status);
      setProgress(view.progress);
    } catch { /* offline for a moment */ }
    setTimeout(poll, 2000);
  };
  open();
}

function queuedText(position, capped) {
  // Positions are counted up to a limit (STUDIOLO_QUEUE_POSITION_LIMIT): "capped" means further back than that.
  if (!position) return "Waiting in the queue";
  return capped ? `Waiting in the queue (after position ${position})` : `Waiting in the queue (position ${position})`;
}

for (const job of JSON.parse(document.getElementById("active-jobs").textContent)) follow(job);
// "Watch" links (/generate#job-<id>) land on that job's card once it exists.
document.getElementById(location.hash.slice(1) || "-")?.scrollIntoView({ block: "center" });

// --- remembered settings -------------------------------------------------------------------------------
// The choices a user makes once and keeps (style, size, quality, count, model, negative prompt) survive a
// reload; the prompt and seed do not (a seed is only kept while locked, see above).
const KEPT = ["size_choice", "quality", "n", "model", "negative_prompt"];
const STORE = "studiolo-generator";
function restore() {
  let saved;
  try { saved = JSON.parse(localStorage.getItem(STORE) || "{}"); } catch { return; }
  for (const name of KEPT) {
    const field = form.elements[name];
    if (field && typeof saved[name] === "string" && (field.tagName !== "SELECT" || [...field.options].some((o) => o.value === saved[name]))) {
      field.value = saved[name];
    }
  }
  const style = saved.style && form.querySelector(`input[name=style][value="${CSS.escape(saved.style)}"]`);
  if (style) style.checked = true;
}
function remember() {
  const saved = Object.fromEntries(KEPT.map((name) => [name, form.elements[name]?.value ?? ""]));
  saved.style = form.querySelector("input[name=style]:checked")?.value ?? "";
  try { localStorage.setItem(STORE, JSON.stringify(saved)); } catch { /* storage full or blocked */ }
}
restore();
form.addEventListener("change", remember);
