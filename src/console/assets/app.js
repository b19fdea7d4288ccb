// Tessera console and portal: small progressive enhancements. Every page works without this
// file; it adds copy buttons for shown-once secrets and typed confirmations.

// A button with data-copy="#id" copies that field's value and says so in the nearest live region.
for (const button of document.querySelectorAll("button[data-copy]")) {
  button.addEventListener("click", async () => {
    const field = document.querySelector(button.dataset.copy);
    if (!field) return;
    const live = button.closest("section")?.querySelector(".copied");
    try {
      await navigator.clipboard.writeText(field.value);
      if (live) live.textContent = "Copied to the clipboard.";
    } catch {
      field.select();
      if (live) live.textContent = "Press Ctrl+C (or ⌘C) to copy the selected text.";
    }
  });
}

// A form with data-confirm="NAME" keeps its submit button disabled until the field named
// "confirm" holds NAME exactly (the server checks it again).
for (const form of document.querySelectorAll("form[data-confirm]")) {
  const input = form.querySelector("input[name=confirm]");
  const submit = form.querySelector("button[type=submit]");
  if (!input || !submit) continue;
  const update = () => {
    submit.disabled = input.value !== form.dataset.confirm;
  };
  input.addEventListener("input", update);
  update();
}
