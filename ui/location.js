"use strict";

const fields = ["label", "building", "floor", "room"];

async function load() {
  const v = await invoke("location_info");
  for (const f of fields) document.getElementById(f).value = v.current[f] || "";
  document.getElementById("reset").hidden = !v.user_set;
}

async function save(location) {
  setText("error", "");
  try {
    await invoke("set_location", { location });
    await invoke("close_window");
  } catch (e) {
    setText("error", String(e));
  }
}

document.getElementById("save").addEventListener("click", () => {
  const location = {};
  for (const f of fields) location[f] = document.getElementById(f).value;
  save(location);
});
document.getElementById("reset").addEventListener("click", () => save(null));
closeButton();
load();
