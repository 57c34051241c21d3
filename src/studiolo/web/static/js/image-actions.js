// What can be done to an image from the gallery, its lightbox and its tile menu: the generator links (remix,
// image-to-image, inpaint, vary), upscaling as a job, and the Trash (move, restore, delete forever), each with
// its failure said in plain words.
import { api, apiPath, isId, toast } from "./app.js";

/** The generator URL for ``action`` on image ``id`` (CONTRACTS.md "Generator page URLs"), or null. */
export function actionUrl(action, id) {
  if (!isId(id)) return null;
  const q = encodeURIComponent(id);
  switch (action) {
    case "remix": return `/generate?remix=${q}`;
    case "img2img": return `/generate?init=${q}&mode=img2img`;
    case "inpaint": return `/generate?init=${q}&mode=inpaint`;
    case "vary-subtle": return `/generate?vary=${q}&strength=0.35`;
    case "vary-strong": return `/generate?vary=${q}&strength=0.7`;
    default: return null;
  }
}

/** Point every link marked data-action inside ``root`` at image ``id``. */
export function linkActions(root, id) {
  for (const link of root.querySelectorAll("a[data-action]")) {
    const url = actionUrl(link.dataset.action, id);
    if (url) link.href = url;
  }
}

/** Why a request failed, in words a person can act on. */
export function why(error) {
  if (error?.status === 0) return "you are offline or the server cannot be reached";
  if (error?.status === 404) return "the image no longer exists";
  const text = String(error?.message ?? "something went wrong").replace(/\.$/, "");
  return text.charAt(0).toLowerCase() + text.slice(1);
}

const plural = (n, one, many) => (n === 1 ? one : `${n} ${many}`);

/** Move images to the Trash now (DELETE; bulk for several). Sent with keepalive: leaving the page at once
 * must not cancel it. Resolves to the ids moved; throws ApiError when nothing was. */
export async function trash(ids) {
  if (ids.length === 1) {
    await api(apiPath`images/${ids[0]}`, { method: "DELETE", keepalive: true });
    return ids;
  }
  const res = await api("images/bulk", { method: "POST", body: { image_ids: ids, action: "delete" }, keepalive: true });
  return res.done;
}

export async function restore(ids) {
  if (ids.length === 1) {
    await api(apiPath`images/${ids[0]}/restore`, { method: "POST" });
    return ids;
  }
  const res = await api("images/bulk", { method: "POST", body: { image_ids: ids, action: "restore" } });
  return res.done;
}

export async function purge(ids) {
  if (ids.length === 1) {
    await api(apiPath`images/${ids[0]}` + "?permanent=true", { method: "DELETE" });
    return ids;
  }
  const res = await api("images/bulk", { method: "POST", body: { image_ids: ids, action: "purge" } });
  return res.done;
}

export function trashFailed(ids, error) {
  const what = plural(ids.length, "The image was", "images were");
  toast(`${what} not deleted: ${why(error)}. ${ids.length === 1 ? "It is" : "They are"} back in the gallery.`,
    { kind: "error", timeout: 9000 });
}

// --- upscale ---------------------------------------------------------------------------------------------------
const TERMINAL = new Set(["succeeded", "failed", "canceled"]);

async function finished(jobId) {
  // A job event stream would do too; a poll every two seconds is enough for a toast and survives offline blips.
  for (;;) {
    await new Promise((resolve) => setTimeout(resolve, 2000));
    try {
      const job = await api(apiPath`jobs/${jobId}`);
      if (TERMINAL.has(job.status)) return job;
    } catch (error) {
      if (error.status !== 0) throw error;
    }
  }
}

/** Queue an upscale of image ``id`` by ``factor`` (a job); toasts a link to the job, then to the new image. */
export async function upscale(id, factor, { open } = {}) {
  let job;
  try {
    job = await api(apiPath`images/${id}/upscale`, { method: "POST", body: { factor, upscaler: "lanczos" } });
  } catch (error) {
    toast(`Could not upscale: ${why(error)}.`, { kind: "error", timeout: 9000 });
    return;
  }
  const watch = "/generate#job-" + encodeURIComponent(job.id);
  toast(`Upscaling ${factor}×: the new image will appear in the gallery.`, {
    timeout: 8000, action: { label: "Watch", run: () => location.assign(watch) } });
  try {
    const done = await finished(job.id);
    const image = done.outputs?.[0]?.image_id;
    if (done.status !== "succeeded" || !image) {
      toast(`The ${factor}× upscale ${done.status === "canceled" ? "was canceled" : "failed"}${done.error?.message ? ": " + done.error.message : ""}.`,
        { kind: "error", timeout: 9000 });
      return;
    }
    const show = open ? () => open(image) : () => location.assign("/gallery?image=" + encodeURIComponent(image));
    toast(`The ${factor}× upscale is ready.`, { timeout: 15000, action: { label: "Open", run: show } });
  } catch (error) {
    toast(`Could not follow the upscale: ${why(error)}.`, { kind: "error" });
  }
}
