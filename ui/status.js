"use strict";

function after(text, prefix) {
  return text && text.startsWith(prefix) ? text.slice(prefix.length) : text;
}

async function load() {
  let v;
  try {
    v = await invoke("status_info");
  } catch (e) {
    setText("status", "The status cannot be read: " + e);
    return;
  }
  const status = document.getElementById("status");
  status.textContent = v.status;
  status.classList.toggle("problem", !v.protected);
  setText("location", after(v.location, "Location: "));
  setText("chord", after(v.chord, "Chord: "));
  setText("last-contact", after(v.last_contact, "Last contact with Security: "));
  setText("last-self-test", after(v.last_self_test, "Last self-test: "));
  setText("device", v.device_id ? v.device_id + (v.device_status ? " (" + v.device_status + ")" : "") : "not enrolled");
  setText("receivers", v.receivers.length ? v.receivers.join(", ") : "none configured");
  setText("version", "Duress " + v.version);
  const problems = document.getElementById("problems");
  problems.replaceChildren();
  const list = [];
  if (v.chord_problem) list.push("Chord: " + v.chord_problem);
  if (v.keystore_problem) list.push("Keystore: " + v.keystore_problem);
  for (const n of v.notes) list.push(n);
  if (list.length) {
    problems.appendChild(el("h2", "Needs attention"));
    const ul = el("ul");
    for (const t of list) ul.appendChild(el("li", t));
    problems.appendChild(ul);
  }
}

closeButton();
load();
setInterval(load, 2000);
