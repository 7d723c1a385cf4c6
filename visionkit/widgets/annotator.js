// visionkit Annotator front end: the large image, the model's answer, progress, a free-text box,
// and the keyboard. Every decision is made in Python; keys travel as {type: "key", key}.

function el_(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function render({ model, el }) {
  const root = el_("div", "vk-annotator-view");
  const head = el_("div", "vk-ann-head");
  const title = el_("span", "vk-ann-title");
  const progress = el_("span", "vk-ann-progress");
  head.append(title, progress);
  const stage = el_("div", "vk-ann-stage");
  const img = el_("img", "vk-ann-image");
  img.alt = "";
  const imgError = el_("div", "vk-ann-image-error");
  stage.append(img, imgError);
  const current = el_("div", "vk-ann-current");
  const suggestion = el_("div", "vk-ann-suggestion");
  const textRow = el_("div", "vk-ann-text");
  const input = el_("input");
  input.type = "text";
  input.placeholder = "type a label, Enter to save";
  textRow.append(input);
  const message = el_("div", "vk-ann-message");
  const hint = el_("div", "vk-ann-hint");
  root.append(head, stage, current, suggestion, textRow, message, hint);
  el.append(root);
  el.tabIndex = 0;

  let url = null;

  function drawImage() {
    if (url) URL.revokeObjectURL(url);
    url = null;
    const data = model.get("image");
    const error = model.get("image_error");
    const size = model.get("image_size");
    stage.style.setProperty("--vk-size", `${size}px`);
    if (data && data.byteLength && !error) {
      url = URL.createObjectURL(new Blob([data], { type: model.get("mime") }));
      img.src = url;
      img.style.display = "";
      imgError.style.display = "none";
    } else {
      img.removeAttribute("src");
      img.style.display = "none";
      imgError.textContent = error || "no image";
      imgError.style.display = error ? "" : "none";
    }
  }

  function drawText() {
    title.textContent = model.get("title");
    progress.textContent = model.get("progress");
    const cur = model.get("current");
    current.textContent = cur ? `label: ${cur}` : "no label yet";
    current.classList.toggle("vk-ann-unlabelled", !cur);
    const s = model.get("suggestion");
    suggestion.textContent = s ? `model: ${s}   (a / Enter accepts)` : "";
    suggestion.style.display = s ? "" : "none";
    const msg = model.get("message");
    message.textContent = msg;
    message.style.display = msg ? "" : "none";
    message.classList.toggle("vk-error", model.get("message_kind") === "error");
    textRow.style.display = model.get("text_mode") ? "" : "none";
    const keys = model.get("shortcuts");
    const digits = keys.filter((k) => /^[1-9]$/.test(k));
    let h = "keys: ";
    if (digits.length) h += `1–${digits[digits.length - 1]} label · `;
    h += "→ next · ← previous · s skip · ⌫ undo";
    if (keys.includes("a")) h += " · a / Enter accept the model's answer";
    hint.textContent = h;
  }

  function onRow() {
    input.value = ""; // a new row starts with an empty box; its label is shown above
  }

  input.addEventListener("keydown", (e) => {
    // The text box keeps its keys: typing "1" or Backspace here edits the text.
    e.stopPropagation();
    if (e.key === "Enter" && input.value.trim()) {
      e.preventDefault();
      model.send({ type: "text", value: input.value });
      input.value = "";
    } else if (e.key === "Escape") {
      input.blur();
      el.focus();
    }
  });

  // Keys anywhere inside the Annotator (this view and its buttons) are ours. Listening on the
  // window in the capture phase runs before JupyterLab's own shortcuts ("a" inserts a cell,
  // digits change the cell type), and stopping the event keeps them from firing.
  function onKey(e) {
    const box = el.parentElement || el;
    if (!box.contains(e.target) || e.target === input) return;
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    if (!model.get("shortcuts").includes(e.key)) return;
    e.preventDefault();
    e.stopPropagation();
    if (e.repeat && e.key !== "ArrowRight" && e.key !== "ArrowLeft") return;
    model.send({ type: "key", key: e.key });
  }
  window.addEventListener("keydown", onKey, true);
  // Clicking the image area gives the keyboard to the Annotator.
  root.addEventListener("pointerdown", (e) => {
    if (e.target !== input) setTimeout(() => el.focus({ preventScroll: true }), 0);
  });

  model.on("change:image", drawImage);
  model.on("change:image_error", drawImage);
  model.on("change:row_id", onRow);
  for (const name of ["title", "progress", "current", "suggestion", "message", "message_kind",
                      "text_mode", "shortcuts"]) {
    model.on(`change:${name}`, drawText);
  }
  drawImage();
  drawText();
  onRow();
  requestAnimationFrame(() => {
    if (el.isConnected && !el.contains(document.activeElement)) el.focus({ preventScroll: true });
  });

  return () => {
    window.removeEventListener("keydown", onKey, true);
    if (url) URL.revokeObjectURL(url);
  };
}

export default { render };
