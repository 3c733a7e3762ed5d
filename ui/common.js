// Shared by the pages: the IPC call (Tauri injects __TAURI_INTERNALS__; no npm package, no CDN)
// and small DOM helpers. Text is always set with textContent (never HTML).
"use strict";

function invoke(cmd, args) {
  return window.__TAURI_INTERNALS__.invoke(cmd, args || {});
}

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}

function setText(id, text) {
  const e = document.getElementById(id);
  if (e) e.textContent = text;
}

function closeButton() {
  const b = document.getElementById("close");
  if (b) b.addEventListener("click", () => invoke("close_window"));
  document.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape") invoke("close_window");
  });
}
