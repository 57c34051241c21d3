// The theme: "light", "dark" or "system" (follow the OS, also as it changes: the CSS media query does that), kept
// per device in localStorage. The first part runs before the first paint (a blocking script in <head>) so a
// saved theme never flashes the other one; the control in the app bar (_theme_control.html) shows and sets it.
const THEME_KEY = "studiolo-theme";

function savedTheme() {
  try {
    const theme = localStorage.getItem(THEME_KEY);
    return theme === "light" || theme === "dark" ? theme : "system";
  } catch { return "system"; } // storage blocked: follow the system theme
}

function applyTheme(theme) {
  if (theme === "system") delete document.documentElement.dataset.theme;
  else document.documentElement.dataset.theme = theme;
}

applyTheme(savedTheme());

document.addEventListener("DOMContentLoaded", () => {
  const select = document.getElementById("theme-select");
  if (!select) return;
  select.value = savedTheme();
  select.addEventListener("change", () => {
    applyTheme(select.value);
    try { localStorage.setItem(THEME_KEY, select.value); } catch { /* storage blocked: this page only */ }
  });
  // Another tab changed it: follow, so two tabs never show different themes with the same setting.
  addEventListener("storage", (event) => {
    if (event.key !== THEME_KEY) return;
    select.value = savedTheme();
    applyTheme(select.value);
  });
});
