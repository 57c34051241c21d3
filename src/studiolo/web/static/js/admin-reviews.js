// The admin review queue (issue 17): reveal a held image's original, then approve, reject (the reason is shown to
// its owner) or reject and suspend the owner. Each decision is POST /api/v1/admin/reviews/{id}.
import { api, apiPath, confirmDialog, isId, toast } from "./app.js";

const list = document.getElementById("review-list");

document.addEventListener("click", (event) => {
  const button = event.target instanceof Element ? event.target.closest("button[data-reveal]") : null;
  if (!button) return;
  const img = button.closest(".review-picture").querySelector("img");
  const revealed = button.getAttribute("aria-pressed") === "true";
  // The blurred thumbnail and the original swap places; the original is fetched only when asked for.
  if (!img.dataset.thumbnail) img.dataset.thumbnail = img.src;
  img.src = revealed ? img.dataset.thumbnail : img.dataset.original;
  button.setAttribute("aria-pressed", String(!revealed));
  button.textContent = revealed ? "Reveal" : "Blur";
});

document.addEventListener("submit", async (event) => {
  const form = event.target instanceof HTMLFormElement && event.target.matches("form[data-review-form]") ? event.target : null;
  if (!form) return;
  event.preventDefault();
  const id = form.dataset.reviewForm;
  const submitter = event.submitter;
  if (!isId(id) || !submitter) return;
  const decision = submitter.value;
  const reason = form.elements.reason.value.trim();
  const error = form.querySelector("[data-form-error]");
  error.textContent = "";
  if (decision === "ban" && !(await confirmDialog(
    `Reject this image and suspend ${submitter.dataset.email}? Their sessions and API keys stop working at once.`,
    { ok: "Reject and suspend" }))) return;
  for (const b of form.querySelectorAll("button")) b.disabled = true;
  try {
    await api(apiPath`admin/reviews/${id}`, { method: "POST", body: { decision, reason } });
    const card = form.closest(".review-card");
    card.remove();
    toast({ approve: "Approved: its owner now sees it.", reject: "Rejected.", ban: "Rejected; the owner is suspended." }[decision]);
    if (list && !list.querySelector(".review-card")) location.reload();
  } catch (failure) {
    for (const b of form.querySelectorAll("button")) b.disabled = false;
    error.textContent = failure.message;
  }
});
