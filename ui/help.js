"use strict";

async function load() {
  const h = await invoke("help_info");
  setText("chord", h.chord.replace(/^Chord: /, ""));
  setText("hidden-label", h.hidden_button_label);
  for (const e of document.querySelectorAll(".emergency")) e.textContent = h.emergency_number;

  const alt = document.getElementById("alternates");
  alt.replaceChildren();
  const call = el("li");
  call.append("Dial ", el("strong", h.emergency_number, "nowrap"), " from your personal cell phone");
  if (h.security_phone) {
    call.append(", then contact Security at ", el("strong", h.security_phone, "nowrap"));
  }
  call.append(".");
  alt.appendChild(call);
  if (h.teams_url) {
    const li = el("li", "Use the Security channel in Microsoft Teams, if available and safe to do so: ");
    li.appendChild(el("span", h.teams_url, "mono select"));
    alt.appendChild(li);
  }
  if (h.security_email) {
    alt.appendChild(el("li", "E-mail Security (not for emergencies): " + h.security_email));
    setText("questions", "Questions about Duress, or whether it is enabled on your computer: " + h.security_email);
  }
  if (h.text) {
    setText("policy-text", h.text);
    document.getElementById("policy-text-block").hidden = false;
  }
  if (h.binding_hint) {
    const hint = document.getElementById("binding-hint");
    hint.textContent = h.binding_hint;
    hint.hidden = false;
  }
}

closeButton();
load();
