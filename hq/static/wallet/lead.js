// A lead creative's form in the wallet (docs/architecture.md#leads): one input per field
// the offer's `form` names, labelled, bounded to 200 characters (HQ's limit), required
// where the form says so. Submitting hands `{name: value}` to `submit` (the wallet's
// feedback of kind "lead", acked end to end) and leaves a thank-you in its place.
"use strict";

const AislecastLead = (() => {
  const TYPES = { email: "email", phone: "tel", party_size: "number", preferred_time: "text" };
  const MAX = 200;

  function input(f, offerId) {
    const id = `lead-${offerId}-${f.name}`;
    const label = document.createElement("label");
    label.htmlFor = id;
    label.textContent = f.label || f.name;
    const box = document.createElement("input");
    box.id = id;
    box.name = f.name;
    if (f.name === "consent_contact") {
      box.type = "checkbox";
      box.value = "yes";
    } else {
      box.type = TYPES[f.name] || "text";
      box.maxLength = MAX;
      if (box.type === "number") { box.min = "1"; box.max = "99"; }
    }
    box.required = Boolean(f.required);
    const row = document.createElement("p");
    row.className = "lead-field";
    if (box.type === "checkbox") row.append(box, label); else row.append(label, box);
    return row;
  }

  function form(offer, submit) {
    const el = document.createElement("form");
    el.className = "lead-form";
    el.dataset.offer = offer.id;
    for (const f of offer.form || []) el.append(input(f, offer.id));
    const send = document.createElement("button");
    send.type = "submit";
    send.textContent = "Send";
    el.append(send);
    el.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const fields = {};
      for (const box of el.querySelectorAll("input")) {
        if (box.type === "checkbox") { if (box.checked) fields[box.name] = "yes"; }
        else if (box.value.trim()) fields[box.name] = box.value.trim().slice(0, MAX);
      }
      submit(fields);
      const done = document.createElement("p");
      done.className = "lead-sent";
      done.textContent = "Thanks, sent.";
      el.replaceWith(done);
    });
    return el;
  }

  return { form };
})();
