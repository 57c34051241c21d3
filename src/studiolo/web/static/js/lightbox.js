// The gallery's image viewer: the image large, its prompt and settings, and what can be done with it (remix,
// image-to-image, vary, upscale, star, tags, collections, trash). ←/→ and a swipe on phones go through the
// gallery's order. The gallery page passes in what it shares (its views, star and trash) through setup().
import { api, ApiError, apiPath, copyText, el, isId, showFieldErrors, toast } from "./app.js";
import { linkActions, restore, upscale, why } from "./image-actions.js";

const lightbox = document.getElementById("lightbox");
const $ = (id) => document.getElementById(id);
let current = null;
const KINDS = { txt2img: "Text to image", img2img: "Image to image", inpaint: "Inpainting", upscale: "Upscaling" };
let hooks = null;

/** The image shown in the lightbox while it is open, else null. */
export const shownImage = () => (lightbox?.open ? current : null);

const tiles = () => [...document.querySelectorAll("#gallery .tile")];
const tileOf = (id) => document.querySelector(`#gallery .tile[data-id="${CSS.escape(String(id))}"]`);

export async function openImage(id) {
  // The id may come from the address bar (/gallery?image=…): only an id of the server's shape is ever used.
  if (!isId(id)) { toast("There is no such image.", { kind: "error" }); return; }
  const { views, styleName, setStar } = hooks;
  current = id;
  $("lb-error").textContent = "";
  $("lb-trashed").hidden = true;
  linkActions(lightbox, id);
  const tileImg = tileOf(id)?.querySelector("img");
  $("lb-img").src = tileImg?.currentSrc || apiPath`/api/v1/images/${id}/file` + "?size=800";
  if (!lightbox.open) lightbox.showModal();
  let view = views.get(id);
  if (!view) {
    // Skeletons while the details load (the thumbnail already shows).
    $("lb-prompt").textContent = "";
    $("lb-prompt").classList.add("skeleton");
    $("lb-meta").replaceChildren(...Array.from({ length: 6 }, () => [el("dt", { text: "…" }), el("dd", { class: "skeleton", text: "\u00a0" })]).flat());
  }
  updateArrows();
  try {
    if (!view) { view = await api(apiPath`images/${id}`); views.set(id, view); }
  } catch (error) {
    $("lb-error").textContent = error.status === 0 ? "Offline: the details of this image are not saved on this device." : error.message;
    return;
  }
  if (current !== id) return;
  $("lb-prompt").classList.remove("skeleton");
  $("lb-img").src = view.urls.thumbnails["1920"] ?? view.urls.file;
  $("lb-img").alt = view.prompt;
  $("lb-title").textContent = `${view.width}×${view.height} · seed ${view.seed}`;
  $("lb-prompt").textContent = view.prompt;
  const rows = [["Negative", view.negative_prompt || "—"], ["Style", view.style ? styleName(view.style) : "None"],
    ["Model", view.model], ["Seed", String(view.seed)], ["Steps", String(view.steps)], ["Guidance", String(view.guidance)],
    ["Sampler", view.sampler ?? "default"], ["Size", `${view.width}×${view.height}`], ["Made by", KINDS[view.kind] ?? view.kind],
    ["Created", new Date(view.created_at).toLocaleString()], ["Tags", view.tags.join(", ") || "—"]];
  $("lb-meta").replaceChildren(...rows.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]));
  // An upscale (or other derived image) links to the image it was made from.
  if (view.parent_id && isId(view.parent_id)) {
    const original = el("a", { href: "/gallery?image=" + encodeURIComponent(view.parent_id), text: "Open the original image" });
    $("lb-meta").append(el("dt", { text: "Original" }), el("dd", {}, original));
  }
  showCredentials(id);
  setStar($("lb-star"), view.starred);
  showDescription(view);
  // Opened by its address (/gallery?image=…) an image may be in the Trash: say so, and offer it back.
  $("lb-trashed").hidden = !view.trashed_at;
  $("lb-delete").hidden = Boolean(view.trashed_at);
  $("lb-download").href = view.urls.file + "?download=true";
  $("lb-tags").value = view.tags.join(", ");
  showReview(view);
}

// Issue 17: an image the output check held back tells its owner why, and offers no download of the original
// (the server refuses it with 403 under_review until an administrator approves it).
function showReview(view) {
  let note = $("lb-review");
  if (!note) {
    note = el("p", { id: "lb-review", class: "lb-review", role: "status" });
    $("lb-error").after(note);
  }
  const held = view.review_state === "pending" || view.review_state === "rejected";
  $("lb-download").hidden = held;
  // Image to image, inpaint and upscale start from the original, which is refused: app.css hides them.
  lightbox.toggleAttribute("data-held", held);
  note.hidden = !held;
  if (!held) { note.replaceChildren(); return; }
  const score = typeof view.nsfw_score === "number" ? ` (score ${view.nsfw_score.toFixed(2)})` : "";
  const reason = view.metadata?.review?.reason;
  note.replaceChildren(view.review_state === "pending"
    ? el("span", { text: `Held for review: the automatic check flagged this image as possibly not safe for work${score}. `
      + "An administrator will look at it; until then it is shown blurred and the original cannot be downloaded." })
    : el("span", { text: `Rejected: ${reason || "it breaks this site's content rules."}` }));
}

// Issue 17: what the original's C2PA Content Credentials say (GET /images/{id}/provenance), as one line of the
// details. The check reads the stored file, so it runs after the details show and fills its line in when it answers.
const CREDENTIALS = {
  valid: ["valid", "Signed by this install (or a signer it trusts); the pixels are as signed."],
  untrusted: ["untrusted", "The signature is intact, but its signer is not one this install trusts."],
  invalid: ["invalid", "The file was changed after it was signed, or its credentials are broken."],
  none: ["none", "This file carries no Content Credentials."],
};

async function showCredentials(id) {
  const line = el("dd", { id: "lb-credentials", text: "…" });
  $("lb-meta").append(el("dt", { text: "Content Credentials" }), line);
  let state;
  try { state = (await api(apiPath`images/${id}/provenance`)).c2pa.state; }
  catch { state = null; }
  if (current !== id) return;
  const [word, why] = CREDENTIALS[state] ?? ["not checked", "The credentials could not be read just now."];
  line.textContent = word;
  line.title = why;
  line.dataset.state = state ?? "unknown";
}

// Photo to character (describe.js): an image rendered from a description shows the photo and what was said of it.
async function showDescription(view) {
  let box = $("lb-description");
  if (!box) {
    box = el("div", { id: "lb-description", class: "lb-description", hidden: true });
    $("lb-meta").before(box);
  }
  box.hidden = true;
  if (!isId(view.description_id)) return;
  let d;
  try { d = await api(apiPath`describe/${view.description_id}`); } catch { return; } // deleted since: nothing to show
  if (current !== view.id) return;
  const s = d.description;
  const said = [s.subject, s.species, s.archetype, s.mood].filter(Boolean).join(" · ")
    || s.colors.slice(0, 3).map((c) => c.name).join(", ");
  const by = d.describer === "offline" ? "read offline" : `described by ${d.describer}${d.model ? ` (${d.model})` : ""}`;
  box.replaceChildren(el("img", { src: d.urls.photo, alt: "The photo this image was rendered after", loading: "lazy" }),
    el("div", {}, el("p", { class: "small muted", text: `From a photo (${d.template}), ${by}` }), el("p", { text: said })));
  box.hidden = false;
}

function updateArrows() {
  const list = tiles();
  const at = list.findIndex((t) => t.dataset.id === current);
  $("lb-prev").disabled = at <= 0;
  $("lb-next").disabled = at < 0 || at >= list.length - 1;
}

/** Show the image ``delta`` places along the gallery (-1 the one before). */
export function step(delta) {
  const list = tiles();
  const at = list.findIndex((t) => t.dataset.id === current);
  const next = list[at + delta];
  if (next) openImage(next.dataset.id);
}

/** Wire the lightbox. ``shared``: {views, styleName(slug), setStar(button, on), star(id, on), trashIds(ids)}. */
export function setup(shared) {
  hooks = shared;
  if (!lightbox) return;
  const { views, star, setStar, trashIds } = shared;
  $("lb-close").addEventListener("click", () => lightbox.close());
  lightbox.addEventListener("click", (e) => { if (e.target === lightbox) lightbox.close(); });
  lightbox.addEventListener("close", () => {
    // Keyboard users land back on the tile they were looking at last (after the browser has put focus back
    // where it was when the dialog opened).
    setTimeout(() => tileOf(current)?.querySelector("a.open")?.focus(), 0);
  });
  $("lb-prev").addEventListener("click", () => step(-1));
  $("lb-next").addEventListener("click", () => step(1));

  // A horizontal swipe on the image goes to the next (left) or previous (right) image. touch-action: pan-y
  // (app.css) leaves vertical scrolling to the browser and gives horizontal moves to these pointer events.
  let start = null;
  $("lb-stage").addEventListener("pointerdown", (e) => { if (e.isPrimary) start = { x: e.clientX, y: e.clientY }; });
  $("lb-stage").addEventListener("pointercancel", () => { start = null; });
  $("lb-stage").addEventListener("pointerup", (e) => {
    if (!start || !e.isPrimary) return;
    const dx = e.clientX - start.x;
    const dy = e.clientY - start.y;
    start = null;
    if (Math.abs(dx) > 50 && Math.abs(dx) > 1.5 * Math.abs(dy)) step(dx < 0 ? 1 : -1);
  });

  $("lb-copy-prompt").addEventListener("click", () => copyText(views.get(current)?.prompt ?? "", "Prompt copied"));
  $("lb-copy-seed").addEventListener("click", () => copyText(String(views.get(current)?.seed ?? ""), "Seed copied"));
  $("lb-star").addEventListener("click", async () => {
    try { const v = await star(current, !views.get(current)?.starred); setStar($("lb-star"), v.starred); }
    catch (error) { $("lb-error").textContent = error.message; }
  });
  for (const factor of [2, 4]) {
    $(`lb-upscale-${factor}`).addEventListener("click", () => upscale(current, factor, { open: openImage }));
  }
  for (const [button, seed] of [["lb-regen-same", "same"], ["lb-regen-new", "new"]]) {
    $(button).addEventListener("click", async () => {
      try {
        const job = await api(apiPath`images/${current}/regenerate`, { method: "POST", body: { seed } });
        toast("Queued: it will appear in the gallery when done.", {
          action: { label: "Watch", run: () => location.assign("/generate#job-" + encodeURIComponent(job.id)) } });
      } catch (error) { $("lb-error").textContent = error.message; }
    });
  }
  $("lb-tags-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const tags = $("lb-tags").value.split(",").map((t) => t.trim()).filter(Boolean);
    try {
      const v = await api(apiPath`images/${current}`, { method: "PATCH", body: { tags } });
      views.set(current, v);
      toast("Tags saved.");
      openImage(current);
    } catch (error) {
      if (error instanceof ApiError) showFieldErrors(event.target, error); else throw error;
    }
  });
  $("lb-collection").addEventListener("change", () => { $("lb-new-collection").hidden = $("lb-collection").value !== "__new"; });
  $("lb-collection-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      let cid = $("lb-collection").value;
      if (cid === "__new") {
        const name = $("lb-new-name").value.trim();
        if (!name) { $("lb-new-name").focus(); return; }
        const created = await api("collections", { method: "POST", body: { name } });
        cid = created.id;
        const option = el("option", { value: cid, text: created.name });
        $("lb-collection").insertBefore(option, $("lb-collection").lastElementChild);
        $("lb-collection").value = cid;
        $("lb-new-collection").hidden = true;
        document.getElementById("bulk-collection")?.append(option.cloneNode(true));
      }
      const c = await api(apiPath`collections/${cid}/images`, { method: "POST", body: { image_ids: [current] } });
      toast(`Added to “${c.name}”.`);
    } catch (error) {
      if (error instanceof ApiError) showFieldErrors(event.target, error); else throw error;
    }
  });
  $("lb-uncollect")?.addEventListener("click", async () => {
    const cid = $("lb-uncollect").dataset.collection;
    try {
      await api(apiPath`collections/${cid}/images/${current}`, { method: "DELETE" });
      tileOf(current)?.remove();
      lightbox.close();
      toast("Removed from the collection.");
    } catch (error) { $("lb-error").textContent = error.message; }
  });
  $("lb-delete").addEventListener("click", () => trashFromLightbox());
  $("lb-restore").addEventListener("click", async () => {
    try {
      await restore([current]);
      views.delete(current);
      toast("Restored: the image is back in the gallery.");
      openImage(current);
    } catch (error) { $("lb-error").textContent = `Not restored: ${why(error)}.`; }
  });
  const wanted = new URLSearchParams(location.search).get("image");
  if (wanted) openImage(wanted);
}

/** Trash the image shown; the lightbox moves on to the next one (or closes when there is none). */
export function trashFromLightbox() {
  const id = current;
  const list = tiles();
  const at = list.findIndex((t) => t.dataset.id === id);
  const next = list[at + 1] ?? list[at - 1];
  hooks.trashIds([id]);
  if (next && at >= 0) openImage(next.dataset.id);
  else lightbox.close();
}
