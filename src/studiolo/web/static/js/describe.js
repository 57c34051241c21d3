// The generator's "From a photo" tab (templates/_describe_panel.html, docs/describe.md): a photo -> POST
// /api/v1/describe -> the description as editable fields -> a prompt (rebuilt from the fields, or edited) -> Render
// as text-to-image from the prompt or image-to-image from the photo. Jobs carry description_id, so their images keep
// the description and the photo. generate.js owns the job list: it passes `settings` (the Prompt tab's model, size,
// quality, images) and `queued` (show an accepted job with the others).
import { api, ApiError, el, toast } from "./app.js";

const $ = (id) => document.getElementById(id);
const TEMPLATE_HINTS = {
  character: "An original character with the photo's look.",
  fursona: "An anthropomorphic animal character: the species that fits, in the photo's colours.",
  portrait: "The person, painted or photographed anew.",
  scene: "The place and its atmosphere.",
  custom: "Say what to make of the photo below.",
};
const FIELD_LABELS = { subject: "who or what it shows", species: "species", archetype: "archetype", features: "features",
  clothing: "clothing", setting: "setting" };
const NEGATIVE = "blurry, low quality, deformed, extra limbs, bad anatomy, text, watermark, signature";

const join = (words) => (words.length < 2 ? words.join("") : `${words.slice(0, -1).join(", ")} and ${words.at(-1)}`);
const list = (text) => text.split(",").map((t) => t.trim()).filter(Boolean);

/** The prompt from the fields, as the server builds it (understanding/prompts.py build_prompt). */
export function composePrompt(f, template, instruction, description) {
  const colours = description.subject_colors.length && template !== "scene" ? description.subject_colors : description.colors;
  const subject = f.subject || { scene: "a scene", portrait: "a person" }[template] || "a character";
  let lead;
  if (template === "fursona") lead = `anthropomorphic ${f.species || "animal"} fursona character${f.subject ? `, based on ${f.subject}` : ""}`;
  else if (template === "character") lead = `full-body character design of ${subject}${f.archetype ? `, ${f.archetype}` : ""}`;
  else if (template === "portrait") lead = `portrait of ${subject}`;
  else if (template === "scene") lead = f.setting || subject;
  else lead = instruction ? `${instruction}, ${subject}` : subject;
  const parts = [lead, ...list(f.features).slice(0, 6)];
  const clothing = list(f.clothing);
  if (clothing.length) parts.push(`wearing ${join(clothing.slice(0, 4))}`);
  const names = colours.slice(0, 3).map((c) => c.name).filter((n) => n && !n.startsWith("#"));
  if (names.length) parts.push(`${template === "fursona" ? "fur colours" : "colour palette of"} ${join(names)}`);
  if (f.mood) parts.push(`${f.mood} mood`);
  if (f.setting && template !== "scene") parts.push(f.setting);
  parts.push("highly detailed");
  return parts.map((p) => p.trim()).filter(Boolean).join(", ");
}

export function createDescribe({ settings, queued, refusal }) {
  const panel = $("photo-panel");
  if (!panel) return;
  const tabs = [$("tab-prompt"), $("tab-photo")];
  let photo = null; // the File chosen
  let current = null; // the DescriptionView
  let previewUrl = null;

  // --- tabs (WAI-ARIA tabs: arrows move between them, the panel follows) ---------------------------------
  function select(tab, focus = false) {
    for (const t of tabs) {
      const on = t === tab;
      t.setAttribute("aria-selected", String(on));
      t.tabIndex = on ? 0 : -1;
      $(t.getAttribute("aria-controls")).hidden = !on;
    }
    if (focus) tab.focus();
    try { sessionStorage.setItem("studiolo-generator-tab", tab.id); } catch { /* blocked */ }
  }
  tabs.forEach((tab, i) => {
    tab.addEventListener("click", () => select(tab));
    tab.addEventListener("keydown", (e) => {
      const step = { ArrowRight: 1, ArrowLeft: -1 }[e.key];
      if (step) { e.preventDefault(); select(tabs[(i + step + tabs.length) % tabs.length], true); }
    });
  });
  let saved = null;
  try { saved = sessionStorage.getItem("studiolo-generator-tab"); } catch { /* blocked */ }
  if (location.hash === "#from-a-photo" || saved === "tab-photo") select($("tab-photo"));

  // --- the photo ------------------------------------------------------------------------------------------
  const template = () => panel.querySelector("input[name=describe-template]:checked").value;
  function usePhoto(file) {
    if (!file) return;
    if (!/^image\/(png|jpeg|webp|gif)$/.test(file.type)) { $("describe-error").textContent = "Choose a PNG, JPEG, WebP or GIF photo."; return; }
    photo = file;
    if (previewUrl) URL.revokeObjectURL(previewUrl);
    previewUrl = URL.createObjectURL(file);
    $("photo-preview").src = previewUrl;
    $("photo-preview").hidden = false;
    $("photo-drop").classList.add("has-photo");
    $("photo-drop-text").firstChild.textContent = "Drop another photo, or ";
    $("describe-error").textContent = "";
    $("describe-go").disabled = false;
  }
  $("photo-file").addEventListener("change", (e) => usePhoto(e.target.files[0]));
  const drop = $("photo-drop");
  drop.addEventListener("dragover", (e) => { if ([...e.dataTransfer.types].includes("Files")) { e.preventDefault(); drop.classList.add("over"); } });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    drop.classList.remove("over");
    if (!e.dataTransfer.files.length) return;
    e.preventDefault();
    usePhoto(e.dataTransfer.files[0]);
  });
  for (const radio of panel.querySelectorAll("input[name=describe-template]")) {
    radio.addEventListener("change", () => {
      $("template-hint").textContent = TEMPLATE_HINTS[template()];
      $("instruction-field").hidden = template() !== "custom";
      if (current) rebuild();
    });
  }

  // --- describe ---------------------------------------------------------------------------------------------
  $("describe-go").addEventListener("click", async () => {
    const button = $("describe-go");
    $("describe-error").textContent = "";
    $("instruction-error").textContent = "";
    const instruction = $("describe-instruction").value.trim();
    if (template() === "custom" && !instruction) {
      $("instruction-error").textContent = "Say what to make of the photo.";
      $("describe-instruction").focus();
      return;
    }
    const body = new FormData();
    body.append("photo", photo);
    body.append("template", template());
    if (instruction) body.append("instruction", instruction);
    button.disabled = true;
    button.textContent = "Describing…";
    try {
      show(await api("describe", { method: "POST", body }));
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      const target = error.details?.field === "instruction" ? $("instruction-error") : $("describe-error");
      target.textContent = error.status === 0 ? "Offline: the photo could not be sent." : error.message;
    } finally {
      button.disabled = !photo;
      button.textContent = "Describe the photo";
    }
  });

  const fieldInputs = () => [...panel.querySelectorAll("[data-field]")];
  const fields = () => Object.fromEntries(fieldInputs().map((i) => [i.dataset.field, i.value.trim()]));
  function rebuild() {
    $("d-prompt").value = composePrompt(fields(), template(), $("describe-instruction").value.trim(), current.description);
  }

  function show(view) {
    current = view;
    const d = view.description;
    $("description").hidden = false;
    $("describer-note").hidden = true; // the badge and the note by the fields say it now
    $("describer-badge").textContent = view.describer === "offline" ? "read offline" : `${view.describer}${view.model ? ` · ${view.model}` : ""}`;
    const facts = [];
    if (d.brightness !== null) facts.push(`brightness ${Math.round(d.brightness * 100)} %`, `contrast ${Math.round(d.contrast * 100)} %`);
    if (d.orientation) facts.push(d.orientation);
    if (view.describer === "offline") facts.push(d.faces.length === 0 ? "no face found" : d.faces.length === 1 ? "1 face" : `${d.faces.length} faces`);
    facts.push(`${(view.duration_ms / 1000).toFixed(view.duration_ms < 1000 ? 2 : 1)} s`);
    $("description-facts").textContent = facts.join(" · ");
    // Measured (offline): the subject's colours, which the prompt uses, apart from the background's.
    const rows = d.subject_colors.length ? [["Subject", d.subject_colors], ["Background", d.background_colors]] : [["Colours", d.colors]];
    $("description-colours").replaceChildren(...rows.filter(([, colours]) => colours.length).map(([label, colours]) =>
      el("div", { class: "swatch-row" }, el("span", { class: "swatch-label", text: label }),
        el("ul", { class: "swatches", "aria-label": `${label} colours` }, ...colours.map((c) => el("li", { class: "swatch-item", title: c.hex ?? c.name },
          el("span", { class: "swatch", style: c.hex ? `background:${c.hex}` : null, "aria-hidden": "true" }),
          el("span", { text: c.name })))))));
    for (const input of fieldInputs()) {
      const value = d[input.dataset.field];
      input.value = Array.isArray(value) ? value.join(", ") : value ?? "";
      const missing = view.known_by_vision_only.includes(input.dataset.field);
      input.placeholder = missing ? "write it in" : input.dataset.list ? "comma separated" : "";
    }
    const missing = view.known_by_vision_only.map((f) => FIELD_LABELS[f] ?? f);
    $("vision-note").hidden = !missing.length;
    $("vision-note").textContent = missing.length ? `Read from the pixels only: colours, light and faces. A vision model would add ${join(missing)}; write in what you know and the prompt follows.` : "";
    $("d-prompt").value = view.prompt;
    $("d-negative").value = view.negative_prompt || NEGATIVE;
    fillStyles(view.style);
    summarize();
    $("description").scrollIntoView({ block: "nearest" });
    (d.subject ? $("d-prompt") : $("d-subject")).focus();
  }
  panel.addEventListener("input", (e) => { if (current && e.target.dataset.field) rebuild(); });
  $("d-rebuild").addEventListener("click", () => { if (current) rebuild(); });

  function fillStyles(suggested) {
    const select = $("d-style");
    const options = [...document.querySelectorAll("#gen-form input[name=style]")].map((input) => {
      const name = document.querySelector(`label[for="${CSS.escape(input.id)}"] span:last-child`)?.textContent ?? input.value;
      return new Option(input.value === suggested ? `${name} (suggested)` : name, input.value);
    });
    select.replaceChildren(...options);
    select.value = suggested && options.some((o) => o.value === suggested) ? suggested : "none";
  }

  // --- render -----------------------------------------------------------------------------------------------
  const kind = () => panel.querySelector("input[name=render-kind]:checked").value;
  for (const radio of panel.querySelectorAll("input[name=render-kind]")) {
    radio.addEventListener("change", () => { $("d-strength-field").hidden = kind() !== "img2img"; summarize(); });
  }
  $("d-strength").addEventListener("input", () => { $("d-strength-out").textContent = Number($("d-strength").value).toFixed(2); });
  function summarize() {
    const s = settings();
    const size = s.size ?? s.aspect_ratio ?? "default size";
    $("render-settings").textContent = `${s.n} image${s.n === 1 ? "" : "s"} with ${s.model}, ${size}${s.quality ? `, ${s.quality} quality` : ""}: `
      + "model, size and number are set in the “From a prompt” tab.";
  }
  tabs[1].addEventListener("click", () => { if (current) summarize(); });

  $("render-go").addEventListener("click", async () => {
    const button = $("render-go");
    $("render-error").textContent = "";
    $("d-prompt-error").textContent = "";
    const prompt = $("d-prompt").value.trim();
    if (!prompt) { $("d-prompt-error").textContent = "Write a prompt first."; $("d-prompt").focus(); return; }
    const p = { ...settings(), prompt, description_id: current.id };
    delete p.style;
    delete p.negative_prompt;
    if ($("d-style").value !== "none") p.style = $("d-style").value;
    if ($("d-negative").value.trim()) p.negative_prompt = $("d-negative").value.trim();
    button.disabled = true;
    try {
      let accepted;
      if (kind() === "img2img") {
        const body = new FormData();
        body.append("params", JSON.stringify({ ...p, strength: Number($("d-strength").value) }));
        body.append("init_image", photo, photo.name || "photo.png");
        body.append("kind", "img2img");
        accepted = await api("generations", { method: "POST", body });
      } else {
        accepted = await api("generations", { method: "POST", body: p });
      }
      queued(accepted, p);
      $("render-error").textContent = "";
      toast(`Rendering ${kind() === "img2img" ? "from the photo" : "from the prompt"}: the images appear under Results.`);
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      if (!refusal?.(error)) $("render-error").textContent = error.message;
    } finally {
      button.disabled = false;
    }
  });
}
