"use strict";

// Whatever PIN is typed, the same thing happens: the cancel is sent and the window closes.
// (A duress PIN or a wrong one is told apart only by the console.)
async function load() {
  const v = await invoke("cancel_info");
  setText("title", v.label);
}

function send() {
  const pin = document.getElementById("pin").value;
  invoke("cancel_submit", { pin });
}

document.getElementById("send").addEventListener("click", send);
document.getElementById("form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  send();
});
closeButton();
load();
