// The generator's billing line: what the job will cost before it is sent (POST /billing/quote with the form's
// settings, debounced: "Costs 4 credits · 37 left", the formula as its tooltip), and a refusal (402 quota_exceeded
// or insufficient_credits, 403 plan_forbids) said next to the Generate button with when it resets and where to
// upgrade. With billing off (quote.mode "off") nothing is shown.
import { api, ApiError, localTime, sameOriginPath } from "./app.js";

export const BILLING_CODES = new Set(["quota_exceeded", "insufficient_credits", "plan_forbids"]);
const number = new Intl.NumberFormat();
const plural = (n, word) => `${number.format(n)} ${word}${n === 1 ? "" : "s"}`;
// The quote depends on the settings, not on the words: a fixed prompt keeps what the user types out of these
// requests (and a prompt the server would refuse as too long from hiding the cost).
const QUOTE_PROMPT = "cost quote";
const DEBOUNCE_MS = 300;

/** ``settings()`` gives the job as POST /generations takes it, ``kind()`` txt2img/img2img/inpaint, ``batches()``
 * how many such jobs one press queues. */
export function createCost({ line, text, refusal, settings, kind, batches }) {
  let timer = null;
  let asked = 0; // answers to older questions are dropped: only the newest settings' cost is shown
  let off = false;

  function clearRefusal() {
    refusal.hidden = true;
    refusal.replaceChildren();
  }

  /** Show a billing refusal (an ApiError from submit, or a quote's ``refusal``) by the button; false if not one. */
  function showRefusal(error) {
    const code = error?.code;
    if (!BILLING_CODES.has(code)) return false;
    const details = error.details ?? {};
    let message = String(error.message ?? "");
    const resets = typeof details.resets_at === "string" ? details.resets_at : null;
    // The server's sentence gives the reset in UTC; said once, in the viewer's own time, below.
    if (resets) message = message.replace(/\s*It resets at [^.]* UTC\.$/, "");
    const parts = [Object.assign(document.createElement("p"), { className: "refusal-message", textContent: message })];
    if (resets) {
      const p = document.createElement("p");
      p.className = "refusal-reset small";
      const time = Object.assign(document.createElement("time"), { dateTime: resets, textContent: localTime(resets) });
      p.append(details.window === "day" ? "Your daily images come back " : "Your monthly images come back ", time, ".");
      parts.push(p);
    }
    const href = sameOriginPath(typeof details.upgrade_url === "string" ? details.upgrade_url : "")
      ?? (code === "insufficient_credits" ? "/billing" : "/pricing");
    const link = Object.assign(document.createElement("a"), {
      className: "btn btn-sm btn-primary refusal-upgrade",
      href,
      textContent: code === "insufficient_credits" ? "Buy credits or upgrade" : "Upgrade your plan",
    });
    parts.push(link);
    refusal.replaceChildren(...parts);
    refusal.dataset.code = code;
    refusal.hidden = false;
    return true;
  }

  function show(quote) {
    if (quote.mode === "off") { off = true; line.hidden = true; clearRefusal(); return; }
    const jobs = Math.max(1, batches());
    const credits = quote.credits * jobs;
    const cost = credits === 0 ? "Not charged (administrator)" : `Costs ${plural(credits, "credit")}`;
    const each = jobs > 1 ? ` (${jobs} jobs)` : "";
    const left = quote.balance === null || quote.balance === undefined ? "" : ` · ${number.format(quote.balance)} left`;
    text.textContent = cost + each + left;
    text.title = `${quote.formula}. This job: ${plural(quote.images * jobs, "image")}, ${quote.width}×${quote.height}, `
      + `${plural(quote.steps, "step")} on ${quote.model}.`;
    line.classList.toggle("short", quote.balance !== null && credits > quote.balance);
    line.hidden = false;
    if (quote.refusal) showRefusal({ ...quote.refusal });
    else clearRefusal();
  }

  async function ask() {
    const mine = ++asked;
    const body = { ...settings(), prompt: QUOTE_PROMPT, kind: kind() ?? "txt2img" };
    try {
      // retry: false: a quote is the page's own upkeep; an expired session is renewed by the user's next action.
      const quote = await api("billing/quote", { method: "POST", body, retry: false });
      if (mine === asked) show(quote);
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      // Settings the server refuses (they are said next to their fields at submit) or no answer: no cost line.
      if (mine === asked) line.hidden = true;
    }
  }

  /** Ask again in a moment (each change of a setting restarts the wait). */
  function update() {
    if (off) return;
    clearTimeout(timer);
    timer = setTimeout(ask, DEBOUNCE_MS);
  }

  return { update, now: ask, showRefusal, clearRefusal };
}
