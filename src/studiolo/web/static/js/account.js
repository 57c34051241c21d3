// Account (profile, password, sessions, API keys, deletion) and the collections page's forms.
import { api, ApiError, clearFieldErrors, confirmDialog, copyText, forgetDevice, formJson, showFieldErrors, signOut, wireApiForms } from "./app.js";

wireApiForms({ reload: () => location.reload() });

const $ = (id) => document.getElementById(id);

$("sign-out-everywhere")?.addEventListener("click", async () => {
  if (!(await confirmDialog("Sign out of every device, this one included?", { ok: "Sign out everywhere" }))) return;
  await signOut({ everywhere: true });
});

$("key-form")?.addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  clearFieldErrors(form);
  const body = formJson(form);
  delete body.scope;
  body.scopes = [...form.querySelectorAll("input[name=scope]:checked")].map((c) => c.value);
  try {
    const created = await api("api-keys", { method: "POST", body });
    $("new-key-value").textContent = created.key;
    $("new-key").hidden = false;
    form.reset();
  } catch (error) {
    if (error instanceof ApiError) showFieldErrors(form, error); else throw error;
  }
});
$("copy-key")?.addEventListener("click", () => copyText($("new-key-value").textContent, "Key copied"));

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
