// Account (profile, password, sessions, API keys, deletion) and the collections page's forms.
import { api, ApiError, apiPath, clearFieldErrors, confirmDialog, copyText, el, forgetDevice, formJson, showFieldErrors, signOut, toast, wireApiForms } from "./app.js";

wireApiForms({ reload: () => location.reload() });

const $ = (id) => document.getElementById(id);

$("sign-out-everywhere")?.addEventListener("click", async () => {
  if (!(await confirmDialog("Sign out of every device, this one included?", { ok: "Sign out everywhere" }))) return;
  await signOut({ everywhere: true });
});

// --- API keys: the list changes in place, so a secret just shown stays on screen until its owner hides it ----
const when = (iso) => (iso ? iso.slice(0, 16).replace("T", " ") : "—");

function keyRow(key) {
  const revoke = el("button", { class: "btn btn-sm btn-danger", type: "button", "data-revoke-key": key.id, "data-name": key.name, text: "Revoke" });
  return el("tr", { "data-key-id": key.id },
    el("td", { text: key.name }),
    el("td", {}, el("code", { text: key.prefix + "…" })),
    el("td", { text: key.scopes.join(", ") }),
    el("td", { text: when(key.last_used_at) }),
    el("td", { "data-expires": "", text: key.expires_at ? when(key.expires_at) : "never" }),
    el("td", {}, revoke));
}

/** The form's own checks, in the words the server uses too; true when it may be sent. */
function checkKeyForm(form) {
  const problems = [];
  if (!form.elements.name.value.trim()) problems.push({ field: "name", msg: "Give the key a name" });
  const days = form.elements.expires_in_days;
  if (days.value !== "" && !(Number.isInteger(Number(days.value)) && days.value >= 1 && days.value <= 3650)) {
    problems.push({ field: "expires_in_days", msg: "A whole number of days from 1 to 3,650, or empty for never" });
  }
  if (!form.querySelector("input[name=scope]:checked")) problems.push({ field: "scopes", msg: "Choose at least one scope" });
  if (problems.length) showFieldErrors(form, { fieldErrors: problems, message: problems[0].msg, details: {} });
  return !problems.length;
}

$("key-form")?.addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  clearFieldErrors(form);
  if (!checkKeyForm(form)) return;
  const body = formJson(form);
  delete body.scope;
  body.scopes = [...form.querySelectorAll("input[name=scope]:checked")].map((c) => c.value);
  const button = form.querySelector("[type=submit]");
  button.disabled = true;
  try {
    const created = await api("api-keys", { method: "POST", body });
    $("new-key-name").textContent = created.name;
    $("new-key-value").textContent = created.key;
    $("new-key").hidden = false;
    $("keys-body").prepend(keyRow(created));
    $("keys-table").hidden = false;
    $("no-keys").hidden = true;
    form.reset();
    $("copy-key").focus();
  } catch (error) {
    if (error instanceof ApiError) showFieldErrors(form, error); else throw error;
  } finally {
    button.disabled = false;
  }
});
$("copy-key")?.addEventListener("click", () => copyText($("new-key-value").textContent, "Key copied"));
$("hide-key")?.addEventListener("click", () => {
  $("new-key-value").textContent = "";
  $("new-key").hidden = true;
  $("key-name").focus();
});

$("keys-body")?.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-revoke-key]");
  if (!button) return;
  const message = `Revoke the key “${button.dataset.name}”? Scripts using it stop working at once.`;
  if (!(await confirmDialog(message, { ok: "Revoke" }))) return;
  button.disabled = true;
  try {
    await api(apiPath`api-keys/${button.dataset.revokeKey}`, { method: "DELETE" });
    const row = button.closest("tr");
    row.querySelector("[data-expires]").textContent = "revoked";
    row.classList.add("muted");
    button.remove();
    toast(`Key “${button.dataset.name}” revoked.`);
  } catch (error) {
    button.disabled = false;
    toast(error.message, { kind: "error" });
  }
});

$("delete-form")?.addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  clearFieldErrors(form);
  if (!(await confirmDialog("Delete your account and everything in it? This cannot be undone.", { ok: "Delete everything" }))) return;
  try {
    await api("auth/me", { method: "DELETE", body: formJson(form) });
    await forgetDevice();
    location.assign("/");
  } catch (error) {
    if (error instanceof ApiError) showFieldErrors(form, error); else throw error;
  }
});
