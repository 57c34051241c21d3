// The generator's adapter panels (issue 19): LoRAs with weights, up to three ControlNet units (a picture uploaded,
// dropped from the results or the gallery, or drawn; a preview of its control map), the IP-Adapter reference image and
// hires fix. The page carries the installed adapters and what each model takes (#adapter-data's data-json,
// web/adapter_panels.py).
// generate.js asks this module what a request adds (``apply``), which files go with it (``files``: multipart
// control_image_<i> / reference_image), to fill the panels from settings (``fill``, a remix) and to check them first.
import { ApiError, apiPath, cookie, el, isId } from "./app.js";

const MAX_LORAS = 8;
const MAX_UNITS = 3;
const STORE = "studiolo-generator-adapters";
// Pictures kept for a reload as data: URLs, up to this much in all (localStorage holds about 5 MB a site).
const KEEP_BYTES = 1_500_000;
const TYPE_NAMES = { canny: "Canny edges", depth: "Depth", pose: "Pose", scribble: "Scribble", lineart: "Line art",
  softedge: "Soft edges", tile: "Tile", seg: "Segmentation", normal: "Normal map", mlsd: "Straight lines (MLSD)" };
const $ = (id) => document.getElementById(id);
const num = (v, lo, hi, dflt) => { const n = Number(v); return Number.isFinite(n) ? Math.min(hi, Math.max(lo, n)) : dflt; };

function readFileAsDataUrl(file) {
  return new Promise((resolve, reject) => {
    const r = new FileReader();
    r.onload = () => resolve(r.result);
    r.onerror = () => reject(r.error);
    r.readAsDataURL(file);
  });
}
function fileFromDataUrl(url, name) {
  const [head, body] = url.split(",", 2);
  const bytes = Uint8Array.from(atob(body), (c) => c.charCodeAt(0));
  return new File([bytes], name, { type: /^data:([^;]+)/.exec(head)?.[1] || "image/png" });
}
async function galleryFile(id) {
  const res = await fetch(apiPath`/api/v1/images/${id}/file`, { credentials: "same-origin" });
  if (!res.ok) throw new ApiError(res.status, await res.json().catch(() => null));
  const blob = await res.blob();
  return new File([blob], `${id}.png`, { type: blob.type || "image/png" });
}

/** ``form``: the generator form; ``hasStartImage()``: image-to-image is on (hires fix is for txt2img); ``changed()``:
 * a setting changed (the form's summary and cost follow). */
export function createAdapters({ form, hasStartImage, changed }) {
  const data = JSON.parse($("adapter-data")?.dataset.json || "{}");
  const adapters = data.adapters ?? [];
  const byId = Object.fromEntries(adapters.map((a) => [a.id, a]));
  const model = () => data.models?.[form.model.value] ?? { kinds: [], hires: false, fits: [], base: 512 };
  const takes = (kind) => model().kinds.includes(kind);
  const fitting = (kind) => adapters.filter((a) => a.kind === kind && model().fits.includes(a.id));
  const state = { loras: [], units: [], reference: { file: null, strength: 0.6, model: "" },
    hires: { on: false, scale: 2, upscaler: "lanczos", strength: 0.5, steps: "" } };
  // The first pass's size as the form sets it, the way the server resolves it (submission.resolve_size); null: the
  // model's own square.
  const size = () => {
    const choice = form.size_choice?.value ?? "";
    if (choice.startsWith("size:")) return choice.slice(5).split("x").map(Number);
    if (!choice.startsWith("ratio:")) return null;
    const [rw, rh] = choice.slice(6).split(":").map(Number);
    const base = model().base;
    return rw >= rh ? [Math.round(base * rw / rh / 8) * 8, base] : [base, Math.round(base * rh / rw / 8) * 8];
  };
  const urls = new Map(); // object URLs shown, per slot, released when replaced

  function show(img, key, file) {
    if (urls.has(key)) URL.revokeObjectURL(urls.get(key));
    urls.delete(key);
    img.hidden = !file;
    if (file) { const u = URL.createObjectURL(file); urls.set(key, u); img.src = u; } else img.removeAttribute("src");
  }
  function note(id, text) { const n = $(id); if (n) { n.textContent = text ?? ""; n.hidden = !text; } }

  // --- LoRA ------------------------------------------------------------------------------------------------
  const loraPick = $("lora-pick");
  function renderLoraPick() {
    if (!loraPick) return;
    const used = new Set(state.loras.map((l) => l.name));
    const offered = fitting("lora").filter((a) => !used.has(a.id));
    loraPick.replaceChildren(...(offered.length ? offered.map((a) => new Option(`${a.id} (${a.family_label})`, a.id))
      : [new Option(adapters.some((a) => a.kind === "lora" && !used.has(a.id)) ? "None for this model's family" : "All added", "")]));
    const off = !takes("lora") || !offered.length || state.loras.length >= MAX_LORAS;
    loraPick.disabled = !takes("lora") || !offered.length;
    $("lora-add").disabled = off;
  }
  function renderLoras() {
    const list = $("lora-list");
    if (!list) return;
    list.replaceChildren(...state.loras.map((lora, i) => {
      const a = byId[lora.name];
      const fits = Boolean(a) && model().fits.includes(lora.name) && takes("lora");
      const id = `lora-w-${i}`;
      const range = el("input", { type: "range", min: "-2", max: "2", step: "0.05", value: String(lora.weight),
        "aria-label": `${lora.name} weight (slider)` });
      const box = el("input", { type: "number", id, min: "-4", max: "4", step: "0.05", value: String(lora.weight), inputmode: "decimal", class: "weight-box" });
      const set = (v, from) => {
        lora.weight = num(v, -4, 4, 1);
        if (from !== box) box.value = String(lora.weight);
        if (from !== range) range.value = String(lora.weight);
        save(); changed();
      };
      range.addEventListener("input", () => set(range.value, range));
      box.addEventListener("change", () => set(box.value, box));
      const remove = el("button", { type: "button", class: "btn btn-ghost btn-icon btn-sm", "aria-label": `Remove LoRA ${lora.name}`,
        title: "Remove", text: "×", onclick: () => { state.loras.splice(i, 1); renderLoras(); save(); changed(); loraPick?.focus(); } });
      const why = !a ? "not installed any more: it is left out" : !takes("lora") ? "this model takes no LoRA: left out"
        : !fits ? `made for ${a.family_label}, not this model: left out` : null;
      return el("li", { class: "lora-item" + (why ? " unusable" : "") },
        el("div", { class: "lora-head" }, el("label", { for: id, class: "lora-name" }, lora.name),
          el("span", { class: "badge", title: a?.family_label }, a?.family_label ?? "?"), remove),
        el("div", { class: "weight-row" }, range, box),
        why ? el("span", { class: "hint cap-note" }, why) : null);
    }));
    renderLoraPick();
  }
  $("lora-add")?.addEventListener("click", () => {
    if (!loraPick.value || state.loras.length >= MAX_LORAS) return;
    state.loras.push({ name: loraPick.value, weight: 1 });
    renderLoras(); save(); changed();
    $("lora-list").querySelector("li:last-child input[type=number]")?.focus();
  });

  // --- ControlNet units -------------------------------------------------------------------------------------
  const unitsBox = $("control-units");
  const newUnit = (s = {}) => ({ type: data.control_types?.includes(s.type) ? s.type : "canny", model: typeof s.model === "string" ? s.model : "",
    strength: num(s.strength, 0, 2, 1), start: num(s.start, 0, 1, 0), end: num(s.end, 0, 1, 1),
    preprocess: s.preprocess !== false, file: null, map: null });

  function rangeField(unit, key, label, min, max, i) {
    const id = `cn-${key}-${i}`;
    const out = el("output", { for: id, text: String(unit[key]) });
    const input = el("input", { type: "range", id, min: String(min), max: String(max), step: "0.05", value: String(unit[key]) });
    input.addEventListener("input", () => { unit[key] = Number(input.value); out.textContent = input.value; save(); changed(); });
    return el("div", { class: "field" }, el("label", { for: id }, `${label}: `, out), input);
  }

  function renderUnits() {
    if (!unitsBox) return;
    unitsBox.replaceChildren(...state.units.map((unit, i) => unitView(unit, i)));
    $("control-add").disabled = state.units.length >= MAX_UNITS || !takes("controlnet");
    $("control-add").textContent = state.units.length ? "Add another unit" : "Add a ControlNet unit";
  }

  function unitView(unit, i) {
    const nets = fitting("controlnet").filter((a) => a.control_type === unit.type);
    const typeSel = el("select", { id: `cn-type-${i}` }, ...data.control_types.map((t) => new Option(TYPE_NAMES[t] ?? t, t)));
    typeSel.value = unit.type;
    // A map Studiolo cannot make here (pose; depth without a depth model) must be uploaded ready-made: the server
    // refuses preprocess for it (422 preprocessor_unavailable), so the box starts off and cannot be ticked.
    const makesMap = (data.map_types ?? []).includes(unit.type);
    if (!makesMap) unit.preprocess = false;
    typeSel.addEventListener("change", () => {
      unit.type = typeSel.value; unit.model = ""; unit.map = null;
      unit.preprocess = (data.map_types ?? []).includes(unit.type);
      renderUnits(); save(); changed();
    });
    const modelSel = el("select", { id: `cn-model-${i}`, "aria-describedby": `cn-model-hint-${i}` },
      new Option("Automatic", ""), ...nets.map((a) => new Option(a.id, a.id)));
    if (unit.model && !nets.some((a) => a.id === unit.model)) modelSel.append(new Option(`${unit.model} (not usable here)`, unit.model));
    modelSel.value = unit.model;
    modelSel.addEventListener("change", () => { unit.model = modelSel.value; save(); changed(); });
    const modelHint = el("span", { class: nets.length ? "hint" : "hint cap-note", id: `cn-model-hint-${i}` },
      nets.length ? `Automatic uses ${nets[0].id} (${nets[0].family_label}).`
        : `No ${TYPE_NAMES[unit.type] ?? unit.type} ControlNet for this model's family is installed.`);

    const thumb = el("img", { class: "slot-thumb", alt: `Unit ${i + 1} picture`, hidden: true });
    const mapImg = el("img", { class: "slot-thumb map-thumb", alt: `Unit ${i + 1} control map`, hidden: true });
    show(thumb, `unit${i}`, unit.file);
    show(mapImg, `map${i}`, unit.map);
    const fileId = `cn-file-${i}`;
    const fileInput = el("input", { type: "file", id: fileId, accept: "image/png,image/jpeg,image/webp", class: "visually-hidden" });
    fileInput.addEventListener("change", () => { if (fileInput.files[0]) setUnitFile(i, fileInput.files[0]); });
    const status = el("p", { class: "small slot-status", role: "status", id: `cn-status-${i}` });
    const error = el("span", { class: "field-error", "data-error-for": `controls.${i}.image` });
    const preview = el("button", { type: "button", class: "btn btn-sm preview-btn", disabled: !unit.file, text: "Preview map",
      onclick: () => previewMap(unit, i, mapImg, status, preview) });
    const slot = el("div", { class: "slot dropzone", "data-slot": String(i) },
      el("div", { class: "slot-pics" }, thumb, mapImg),
      el("p", { class: "slot-empty" }, unit.file ? "" : "Drop a picture here, or ",
        el("label", { class: "btn btn-sm file-pick", for: fileId }, unit.file ? "Replace picture" : "choose a file", fileInput), " ",
        el("button", { type: "button", class: "btn btn-sm", text: "Draw", title: "Draw a scribble", onclick: () => draw(i) }), " ",
        preview,
        unit.file ? el("button", { type: "button", class: "btn btn-sm btn-danger", text: "Remove picture",
          onclick: () => { unit.file = null; unit.map = null; renderUnits(); save(); changed(); } }) : null),
      status, error);
    const pre = el("input", { type: "checkbox", id: `cn-pre-${i}`, checked: unit.preprocess, disabled: !makesMap,
      "aria-describedby": `cn-pre-hint-${i}` });
    pre.addEventListener("change", () => { unit.preprocess = pre.checked; unit.map = null; renderUnits(); save(); changed(); });
    return el("fieldset", { class: "control-unit" },
      el("legend", {}, `Unit ${i + 1}`),
      el("div", { class: "grid-fields unit-head" },
        el("div", { class: "field" }, el("label", { for: typeSel.id }, "Type"), typeSel),
        el("div", { class: "field" }, el("label", { for: modelSel.id }, "ControlNet model"), modelSel, modelHint)),
      slot,
      el("label", { class: "check" }, pre, "Make the map from the picture (off: the picture is already a map)"),
      el("span", { class: "hint", id: `cn-pre-hint-${i}` }, makesMap ? ""
        : `Studiolo cannot make a ${TYPE_NAMES[unit.type] ?? unit.type} map here: upload a ready-made map.`),
      el("div", { class: "unit-ranges" }, rangeField(unit, "strength", "Strength", 0, 2, i),
        rangeField(unit, "start", "Start", 0, 1, i), rangeField(unit, "end", "End", 0, 1, i)),
      el("button", { type: "button", class: "btn btn-sm btn-ghost", text: `Remove unit ${i + 1}`,
        onclick: () => { state.units.splice(i, 1); renderUnits(); save(); changed(); $("control-add")?.focus(); } }));
  }

  function setUnitFile(i, file) {
    const unit = state.units[i];
    if (!unit) return;
    unit.file = file;
    unit.map = null;
    renderUnits(); save(); changed();
    unitsBox.querySelectorAll(".control-unit")[i]?.querySelector(".preview-btn")?.focus(); // the next step
  }

  async function previewMap(unit, i, mapImg, status, button) {
    if (!unit.file) return;
    const body = new FormData();
    body.append("image", unit.file);
    body.append("type", unit.type);
    const [w, h] = size() ?? [model().base, model().base];
    body.append("width", String(w));
    body.append("height", String(h));
    button.disabled = true;
    status.textContent = "Making the map…";
    status.classList.remove("bad");
    try {
      const res = await fetch("/api/v1/controls/preview", { method: "POST", body, credentials: "same-origin",
        headers: { "X-CSRF-Token": cookie("studiolo_csrf") } });
      if (!res.ok) {
        const err = new ApiError(res.status, await res.json().catch(() => null));
        throw res.status === 404 || res.status === 405
          ? new Error("This server cannot preview control maps (it needs a newer Studiolo). The map is still made when you generate.")
          : err;
      }
      unit.map = await res.blob();
      show(mapImg, `map${i}`, unit.map);
      status.textContent = `The ${TYPE_NAMES[unit.type] ?? unit.type} map, as the job will use it.`;
    } catch (error) {
      status.textContent = `No preview: ${error.message}`;
      status.classList.add("bad");
    } finally {
      button.disabled = false;
    }
  }
  $("control-add")?.addEventListener("click", () => {
    if (state.units.length >= MAX_UNITS) return;
    state.units.push(newUnit());
    renderUnits(); save(); changed();
    unitsBox.querySelector("fieldset:last-child select")?.focus();
  });

  // --- drawing a scribble ------------------------------------------------------------------------------------
  const dialog = $("draw-dialog");
  const canvas = $("draw-canvas");
  let drawFor = null;
  function blank() { const g = canvas.getContext("2d"); g.fillStyle = "#fff"; g.fillRect(0, 0, canvas.width, canvas.height); }
  function draw(i) { drawFor = i; blank(); dialog.showModal(); }
  if (canvas) {
    let last = null;
    const at = (e) => { const r = canvas.getBoundingClientRect(); return [(e.clientX - r.left) * canvas.width / r.width, (e.clientY - r.top) * canvas.height / r.height]; };
    canvas.addEventListener("pointerdown", (e) => { canvas.setPointerCapture(e.pointerId); last = at(e); });
    canvas.addEventListener("pointermove", (e) => {
      if (!last) return;
      const g = canvas.getContext("2d");
      const p = at(e);
      g.strokeStyle = "#000"; g.lineWidth = Number($("draw-size").value); g.lineCap = "round";
      g.beginPath(); g.moveTo(...last); g.lineTo(...p); g.stroke();
      last = p;
    });
    for (const end of ["pointerup", "pointercancel"]) canvas.addEventListener(end, () => { last = null; });
    $("draw-clear").addEventListener("click", blank);
    $("draw-cancel").addEventListener("click", () => dialog.close());
    $("draw-use").addEventListener("click", () => canvas.toBlob((blob) => {
      const i = drawFor;
      dialog.close();
      if (blob && i !== null) {
        const unit = state.units[i];
        if (unit.type !== "scribble") { unit.type = "scribble"; unit.model = ""; }
        setUnitFile(i, new File([blob], "scribble.png", { type: "image/png" }));
      }
    }, "image/png"));
  }

  // --- reference image ---------------------------------------------------------------------------------------
  const refModel = $("reference-model");
  function renderReference() {
    if (!refModel) return;
    const fit = fitting("ip_adapter");
    refModel.replaceChildren(new Option(fit.length ? `Automatic (${fit[0].id})` : "Automatic", ""), ...fit.map((a) => new Option(`${a.id} (${a.family_label})`, a.id)));
    refModel.value = fit.some((a) => a.id === state.reference.model) ? state.reference.model : "";
    $("reference-strength").value = String(state.reference.strength);
    $("reference-strength-out").textContent = String(state.reference.strength);
    show($("reference-thumb"), "reference", state.reference.file);
    $("reference-remove").hidden = !state.reference.file;
    $("reference-slot").querySelector(".slot-empty").hidden = Boolean(state.reference.file);
    const off = !takes("ip_adapter") || !fit.length;
    $("reference-file").disabled = off;
    note("reference-note", !takes("ip_adapter") ? `${form.model.value} cannot take a reference image.`
      : !fit.length ? "No installed IP-Adapter fits this model's family." : null);
  }
  $("reference-file")?.addEventListener("change", (e) => { if (e.target.files[0]) { state.reference.file = e.target.files[0]; renderReference(); save(); changed(); } });
  $("reference-remove")?.addEventListener("click", () => { state.reference.file = null; renderReference(); save(); changed(); $("reference-file").focus(); });
  $("reference-strength")?.addEventListener("input", (e) => { state.reference.strength = Number(e.target.value); $("reference-strength-out").textContent = e.target.value; save(); changed(); });
  refModel?.addEventListener("change", () => { state.reference.model = refModel.value; save(); changed(); });

  // --- drops on a slot: a file, or a result / gallery image -------------------------------------------------
  for (const box of [unitsBox, $("reference-slot")].filter(Boolean)) {
    box.addEventListener("dragover", (e) => { const s = e.target.closest("[data-slot]"); if (s) { e.preventDefault(); e.stopPropagation(); s.classList.add("over"); } });
    box.addEventListener("dragleave", (e) => e.target.closest?.("[data-slot]")?.classList.remove("over"));
    box.addEventListener("drop", async (e) => {
      const s = e.target.closest("[data-slot]");
      if (!s) return;
      e.preventDefault();
      e.stopPropagation(); // the form's own drop handler would take it as the start image
      s.classList.remove("over");
      const id = e.dataTransfer.getData("application/x-studiolo-image") || /\/api\/v1\/images\/([0-9a-f-]{36})\/file/i.exec(e.dataTransfer.getData("text/uri-list"))?.[1];
      const file = e.dataTransfer.files[0] ?? (isId(id) ? await galleryFile(id) : null);
      if (!file) return;
      if (s.dataset.slot === "reference") { state.reference.file = file; renderReference(); save(); changed(); }
      else setUnitFile(Number(s.dataset.slot), file);
    });
  }

  // --- hires fix -----------------------------------------------------------------------------------------
  const h = { on: $("hires-on"), scale: $("hires-scale"), upscaler: $("hires-upscaler"), strength: $("hires-strength"), steps: $("hires-steps") };
  const hiresUsable = () => model().hires && !hasStartImage();
  const hiresOn = () => state.hires.on && hiresUsable();
  function finalSize() {
    const [w, hh] = size() ?? [model().base, model().base];
    return [w, hh, Math.floor(w * state.hires.scale / 8) * 8, Math.floor(hh * state.hires.scale / 8) * 8];
  }
  function renderHires() { // the fields from the settings (never while one is typed in: hiresInfo then)
    h.on.checked = state.hires.on;
    h.scale.value = String(state.hires.scale);
    if ([...h.upscaler.options].some((o) => o.value === state.hires.upscaler)) h.upscaler.value = state.hires.upscaler;
    h.strength.value = String(state.hires.strength);
    $("hires-strength-out").textContent = String(state.hires.strength);
    h.steps.value = state.hires.steps;
    hiresInfo();
  }
  function hiresInfo() { // what follows from the settings: which fields are on, the notes, the final size
    const usable = hiresUsable();
    h.on.disabled = !usable;
    for (const k of ["scale", "upscaler", "strength", "steps"]) h[k].disabled = !usable || !state.hires.on;
    note("hires-note", !model().hires ? `${form.model.value} cannot do hires fix.`
      : hasStartImage() ? "Hires fix is for pictures drawn from a prompt: it is off while a start image is set." : null);
    const [w, hh, fw, fh] = finalSize();
    const over = fw * fh > (model().max_pixels || Infinity);
    $("hires-size").textContent = state.hires.on ? `Final size ${fw}×${fh} (first pass ${w}×${hh}${size() ? "" : ", the model's default"}).${over ? " That is more than this model or server allows: lower the scale or the size." : ""}` : "";
    $("hires-size").classList.toggle("bad", over && state.hires.on);
  }
  h.on?.addEventListener("change", () => { state.hires.on = h.on.checked; hiresInfo(); save(); changed(); });
  h.scale?.addEventListener("input", () => {
    if (h.scale.value === "" || !Number.isFinite(Number(h.scale.value))) return; // half typed: keep the last scale
    state.hires.scale = num(h.scale.value, 1, 4, 2); hiresInfo(); save(); changed();
  });
  h.scale?.addEventListener("change", () => { h.scale.value = String(state.hires.scale); });
  h.upscaler?.addEventListener("change", () => { state.hires.upscaler = h.upscaler.value; save(); changed(); });
  h.strength?.addEventListener("input", () => { state.hires.strength = Number(h.strength.value); $("hires-strength-out").textContent = h.strength.value; save(); changed(); });
  h.steps?.addEventListener("input", () => { state.hires.steps = h.steps.value.trim(); save(); changed(); });

  // --- the model changed (or the size): what fits --------------------------------------------------------
  function refresh() {
    note("lora-note", adapters.some((a) => a.kind === "lora") && !takes("lora") ? `${form.model.value} cannot take LoRAs: pick a Stable Diffusion model to use them.` : null);
    note("control-note", adapters.some((a) => a.kind === "controlnet") && !takes("controlnet") ? `${form.model.value} cannot take ControlNets: pick a Stable Diffusion model to use them.` : null);
    renderLoras();
    renderUnits();
    renderReference();
    renderHires();
    summarize();
  }
  function summarize() {
    const put = (id, text) => { const s = $(id); if (s) s.textContent = text; };
    const loras = usedLoras();
    put("lora-summary", loras.map((l) => `${l.name} ${l.weight}`).join(" · "));
    put("control-summary", state.units.map((u) => TYPE_NAMES[u.type] ?? u.type).join(" · "));
    put("reference-summary", state.reference.file ? `strength ${state.reference.strength}` : "");
    const [, , fw, fh] = finalSize();
    put("hires-summary", hiresOn() ? `×${state.hires.scale} → ${fw}×${fh}` : "");
  }
  form.model.addEventListener("change", refresh);
  form.size_choice?.addEventListener("change", refresh);

  // --- the request ----------------------------------------------------------------------------------------
  const usedLoras = () => (takes("lora") ? state.loras.filter((l) => model().fits.includes(l.name)) : []);
  const usedUnits = () => (takes("controlnet") ? state.units : []);
  const usedReference = () => (takes("ip_adapter") && fitting("ip_adapter").length && state.reference.file ? state.reference : null);

  /** The adapter fields of a request (GenerationParams), added to ``p``. */
  function apply(p) {
    const loras = usedLoras();
    if (loras.length) p.loras = loras.map((l) => ({ name: l.name, weight: l.weight }));
    const units = usedUnits();
    if (units.length) {
      p.controls = units.map((u) => ({ type: u.type, ...(u.model ? { model: u.model } : {}), strength: u.strength,
        start: u.start, end: u.end, preprocess: u.preprocess }));
    }
    const ref = usedReference();
    if (ref) { p.reference_strength = ref.strength; if (ref.model) p.reference_model = ref.model; }
    if (hiresOn()) {
      p.hires = { scale: state.hires.scale, upscaler: state.hires.upscaler, strength: state.hires.strength };
      if (/^\d+$/.test(state.hires.steps)) p.hires.steps = Number(state.hires.steps);
    }
    return p;
  }
  /** The pictures that go as multipart files: [field, File] pairs. */
  function files() {
    const out = usedUnits().map((u, i) => [`control_image_${i}`, u.file]).filter(([, f]) => f);
    const ref = usedReference();
    if (ref) out.push(["reference_image", ref.file]);
    return out;
  }
  /** A message when a panel is not ready to submit (it is shown next to what is missing), else null. */
  function problem() {
    let first = null;
    usedUnits().forEach((u, i) => {
      const slot = form.querySelector(`[data-error-for="controls.${i}.image"]`);
      const text = u.file ? "" : `Unit ${i + 1} has no picture: add one, draw one, or remove the unit.`;
      if (slot) slot.textContent = text;
      if (text && !first) first = text;
    });
    if (first) $("control-panel").open = true;
    const steps = state.hires.steps;
    const bad = hiresOn() && steps !== "" && !(/^\d+$/.test(steps) && Number(steps) >= 1 && Number(steps) <= 150);
    $("hires-steps-error").textContent = bad ? "Hires steps must be a whole number from 1 to 150" : "";
    if (bad) { $("hires-panel").open = true; first ??= "Check the field marked above."; }
    return first;
  }
  /** Open the panel holding ``field`` (an API error's details.field, e.g. "loras.0.name", "hires.upscaler"). */
  function reveal(field) {
    const panel = { loras: "lora-panel", controls: "control-panel", reference_model: "reference-panel",
      reference_image: "reference-panel", hires: "hires-panel" }[String(field ?? "").split(".")[0]];
    if (panel) $(panel).open = true;
    return Boolean(panel);
  }

  // --- settings from elsewhere (a remix, a PNG's metadata) ------------------------------------------------
  /** Put ``s``'s adapter settings into the panels; returns [used, skipped] names as generate.js's fill does. */
  function fill(s) {
    const used = [];
    const skipped = [];
    state.loras = [];
    for (const l of Array.isArray(s.loras) ? s.loras : []) {
      if (!l?.name) continue;
      if (byId[l.name]?.kind === "lora") { state.loras.push({ name: l.name, weight: num(l.weight, -4, 4, 1) }); used.push(`LoRA ${l.name}`); }
      else skipped.push(`LoRA ${l.name} (not installed)`);
    }
    const controls = Array.isArray(s.controls) ? s.controls.slice(0, MAX_UNITS) : [];
    state.units = controls.map((c) => newUnit(c));
    if (controls.length) {
      used.push(controls.length === 1 ? "1 ControlNet unit" : `${controls.length} ControlNet units`);
      skipped.push("the ControlNet pictures (add them again, or use Regenerate in the gallery)");
    }
    const ref = s.reference ?? (s.reference_model || s.reference_strength !== undefined ? { model: s.reference_model, strength: s.reference_strength } : null);
    state.reference = { file: null, strength: num(ref?.strength, 0, 1, 0.6), model: ref?.model ?? "" };
    if (ref) skipped.push("the reference image (add it again)");
    const hr = s.hires;
    state.hires = hr ? { on: true, scale: num(hr.scale, 1, 4, 2), upscaler: typeof hr.upscaler === "string" ? hr.upscaler : "lanczos",
      strength: num(hr.strength, 0.05, 1, 0.5), steps: Number.isInteger(hr.steps) ? String(hr.steps) : "" }
      : { ...state.hires, on: false };
    if (hr) {
      const known = [...h.upscaler.options].some((o) => o.value === state.hires.upscaler);
      if (known) used.push("hires fix");
      else { skipped.push(`upscaler ${state.hires.upscaler} (not installed)`); state.hires.upscaler = "lanczos"; }
    }
    refresh(); save();
    for (const [kind, panel] of [[state.loras.length, "lora-panel"], [state.units.length, "control-panel"], [hr, "hires-panel"]]) {
      if (kind && $(panel)) $(panel).open = true;
    }
    return [used, skipped];
  }

  // --- kept over a reload ---------------------------------------------------------------------------------
  let saving = Promise.resolve();
  function save() {
    saving = saving.then(async () => {
      const record = { loras: state.loras, hires: state.hires,
        units: state.units.map(({ file, map, ...u }) => u), reference: { strength: state.reference.strength, model: state.reference.model } };
      // The pictures too while they are small (a scribble, a control map): nothing set up is lost on a reload.
      let budget = KEEP_BYTES;
      const keep = async (file) => { if (!file || file.size > budget) return null; budget -= file.size; return readFileAsDataUrl(file); };
      for (const [i, u] of state.units.entries()) record.units[i].image = await keep(u.file);
      record.reference.image = await keep(state.reference.file);
      try { localStorage.setItem(STORE, JSON.stringify(record)); }
      catch { // storage full: the settings without the pictures
        record.units.forEach((u) => { u.image = null; });
        record.reference.image = null;
        try { localStorage.setItem(STORE, JSON.stringify(record)); } catch { /* blocked */ }
      }
    }).catch(() => {});
  }
  function restore() {
    let saved;
    try { saved = JSON.parse(localStorage.getItem(STORE) || "{}"); } catch { return; }
    const image = (url, name) => { try { return typeof url === "string" && url.startsWith("data:image/") ? fileFromDataUrl(url, name) : null; } catch { return null; } };
    state.loras = (Array.isArray(saved.loras) ? saved.loras : []).filter((l) => byId[l?.name]?.kind === "lora")
      .slice(0, MAX_LORAS).map((l) => ({ name: l.name, weight: num(l.weight, -4, 4, 1) }));
    state.units = (Array.isArray(saved.units) ? saved.units : []).slice(0, MAX_UNITS)
      .map((u, i) => ({ ...newUnit(u), file: image(u.image, `control${i}.png`) }));
    const r = saved.reference ?? {};
    state.reference = { file: image(r.image, "reference.png"), strength: num(r.strength, 0, 1, 0.6), model: typeof r.model === "string" ? r.model : "" };
    const hr = saved.hires ?? {};
    state.hires = { on: hr.on === true, scale: num(hr.scale, 1, 4, 2), upscaler: typeof hr.upscaler === "string" ? hr.upscaler : "lanczos",
      strength: num(hr.strength, 0.05, 1, 0.5), steps: typeof hr.steps === "string" ? hr.steps : "" };
  }
  restore();
  refresh();
  // A start image set or removed (gen-mask.js shows or hides its editor): hires fix follows.
  const editor = $("init-editor");
  if (editor) new MutationObserver(() => { hiresInfo(); summarize(); }).observe(editor, { attributes: true, attributeFilter: ["hidden"] });

  /** What the form's summary calls on every change: the hires notes and the panels' headers. */
  function sync() { if (h.on) hiresInfo(); summarize(); }
  return { apply, files, problem, reveal, fill, refresh, sync };
}
