// Sign in, sign up + verify, password reset and first-run setup: forms posting to /api/v1/auth/*.
import { api, cookie, forgetDevice, renewSession, safeNext, toast, wireApiForms } from "./app.js";

const $ = (id) => document.getElementById(id);
let signupPassword = "";

wireApiForms({
  "signed-in": () => location.assign(safeNext()),
  registered: (_data, form, body) => {
    // The verify step needs the sign-up password again (it proves the code activates the owner's password):
    // keep it in memory for this page only, never in storage.
    signupPassword = body.password;
    $("verify-email").value = body.email;
    $("verify-address").textContent = body.email;
    $("verify-password").value = signupPassword;
    $("verify-password-field").hidden = true;
    $("step-register").hidden = true;
    $("step-verify").hidden = false;
    history.replaceState(null, "", "/verify?email=" + encodeURIComponent(body.email));
    $("code").focus();
  },
  "reset-requested": (_data, _form, body) => {
    $("reset-request-form").hidden = true;
    $("reset-confirm-email").value = body.email;
    $("reset-confirm-form").hidden = false;
    $("reset-code").focus();
  },
  "reset-done": () => {
    toast("Password changed. Sign in with the new one.");
    setTimeout(() => location.assign("/signin"), 800);
  },
});

$("resend")?.addEventListener("click", async () => {
  const email = $("verify-email").value;
  if (!email) { $("verify-email-field").hidden = false; $("verify-email").focus(); return; }
  try {
    await api("auth/resend-code", { method: "POST", body: { email } });
    toast("If the address is waiting for a code, a new one is on its way.");
  } catch (error) {
    toast(error.message, { kind: "error" });
  }
});

// An expired access cookie lands here; the refresh cookie (scoped to /api/v1/auth) may still be good. If the
// server says the session is over, nobody is signed in on this browser any more: forget what it kept of them.
// Where the session resumes, ``next`` is followed without a click, so it passes the same rule as after a
// sign-in (safeNext; tests/e2e/test_web_hardening.py).
if ($("signin-form") && cookie("studiolo_csrf")) {
  $("resuming").hidden = false;
  renewSession().then(async (state) => {
    if (state === "renewed") { location.replace(safeNext()); return; }
    if (state === "ended") await forgetDevice();
    $("resuming").hidden = true;
  });
}
