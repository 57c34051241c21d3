// The admin users page: suspending asks for a reason, which the user is shown when they next sign in or call the API.
import { api, apiPath, el, isId, toast } from "./app.js";

function askReason(email) {
  return new Promise((resolve) => {
    const dialog = el("dialog", { "aria-labelledby": "suspend-title" });
    const reason = el("textarea", { id: "suspend-reason", maxlength: "500", rows: "3", placeholder: "e.g. Too many failed payments" });
    const yes = el("button", { class: "btn btn-danger", type: "submit", text: "Suspend" });
    const no = el("button", { class: "btn", type: "button", text: "Cancel" });
    const form = el("form", { method: "dialog" },
      el("div", { class: "dialog-body" },
        el("h2", { id: "suspend-title", text: `Suspend ${email}?` }),
        el("p", { text: "Their sessions and API keys stop working at once; their images are kept." }),
        el("div", { class: "field" },
          el("label", { for: "suspend-reason", text: "Reason (optional, shown to them)" }), reason)),
      el("div", { class: "dialog-actions" }, no, yes));
    dialog.append(form);
    const finish = (value) => { dialog.close(); dialog.remove(); resolve(value); };
    form.addEventListener("submit", (event) => { event.preventDefault(); finish(reason.value.trim()); });
    no.addEventListener("click", () => finish(null));
    dialog.addEventListener("cancel", () => finish(null));
    document.body.append(dialog);
    dialog.showModal();
    reason.focus();
  });
}

document.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-suspend]");
  if (!button || !isId(button.dataset.suspend)) return;
  const reason = await askReason(button.dataset.email);
  if (reason === null) return;
  button.disabled = true;
  try {
    await api(apiPath`admin/users/${button.dataset.suspend}/suspend`, { method: "POST", body: reason ? { reason } : {} });
    location.reload();
  } catch (error) {
    button.disabled = false;
    toast(error.message, { kind: "error" });
  }
});
