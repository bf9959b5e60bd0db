"use strict";
// POST /console/login as JSON: HQ sets the HttpOnly session cookie and the readable
// aislecast_csrf cookie, then the console page takes over.
document.addEventListener("DOMContentLoaded", () => {
  const form = document.querySelector("#login");
  const notice = document.querySelector("#notice");
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = new FormData(form);
    const r = await fetch("/console/login", {
      method: "POST", credentials: "same-origin",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ name: f.get("name"), password: f.get("password") }),
    });
    if (r.ok) { window.location.assign("/console"); return; }
    const data = await r.json().catch(() => ({}));
    notice.textContent = data.detail || `HTTP ${r.status}`;
    notice.classList.add("error");
  });
});
