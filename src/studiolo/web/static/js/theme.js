// Runs before the first paint (a blocking script in <head>) so a saved theme never flashes the other one.
try {
  const theme = localStorage.getItem("studiolo-theme");
  if (theme === "light" || theme === "dark") document.documentElement.dataset.theme = theme;
} catch { /* storage blocked: follow the system theme */ }
