// visionkit Annotator front end: the large image, the model's answer, others' labels,
// progress, a free-text box, and the keyboard (vkKeyboard, from _keys.js, is prepended).
// Every decision is made in Python; keys travel as {type: "key", key}.

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
  img.draggable = false;
  const imgError = el_("div", "vk-ann-image-error");
  stage.append(img, imgError);
  const current = el_("div", "vk-ann-current");
  const suggestion = el_("div", "vk-ann-line vk-ann-suggestion");
  const others = el_("div", "vk-ann-line vk-ann-others");
  const textRow = el_("div", "vk-ann-text");
  const input = el_("input");
  input.type = "text";
  input.placeholder = "type a label, Enter to save";
  textRow.append(input);
  const message = el_("div", "vk-ann-line vk-ann-message");
  const badge = el_("span", "vk-keys-badge");
  const hint = el_("span", "vk-ann-hint");
  const foot = el_("div", "vk-ann-foot");
  foot.append(badge, hint);
  root.append(head, stage, current, suggestion, others, textRow, message, foot);
  el.append(root);
  el.tabIndex = 0;

  let url = null;
  let drawn = null;

  function drawImage() {
    const data = model.get("image");
    const error = model.get("image_error");
    if (drawn === data && !error) return; // one row, one object URL: never drawn twice
    const size = model.get("image_size");
    stage.style.setProperty("--vk-size", `${size}px`);
    const old = url;
    url = null;
    drawn = data;
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
    // Revoke the previous image only once the new one is in place.
    if (old) setTimeout(() => URL.revokeObjectURL(old), 1000);
  }

  function drawText() {
    title.textContent = model.get("title");
    title.title = model.get("title");
    progress.textContent = model.get("progress");
    const cur = model.get("current");
    current.textContent = cur ? `label: ${cur}` : "no label yet";
    current.classList.toggle("vk-ann-unlabelled", !cur);
    const s = model.get("suggestion");
    suggestion.textContent = s ? `model: ${s}` : "";
    const o = model.get("others");
    others.textContent = o ? `others: ${o}` : "";
    message.textContent = model.get("message");
    message.classList.toggle("vk-error", model.get("message_kind") === "error");
    textRow.style.display = model.get("text_mode") ? "" : "none";
    hint.textContent = model.get("key_help");
    hint.title = model.get("key_help");
  }

  function onRow() {
    input.value = ""; // a new row starts with an empty box; its label is shown above
  }

  input.addEventListener("keydown", (e) => {
    // The text box keeps its keys: typing "1" or Backspace here edits the text.
    e.stopPropagation();
    if (e.key === "Enter" && !e.shiftKey && input.value.trim()) {
      e.preventDefault();
      model.send({ type: "text", value: input.value });
      input.value = "";
    } else if (e.key === "Escape") {
      input.blur();
      el.focus();
    }
  });

  const keyboard = vkKeyboard({
    el,
    box: () => el.closest(".vk-annotator") || el,
    badge,
    shortcuts: () => model.get("shortcuts"),
    send: (key) => model.send({ type: "key", key }),
    isTyping: (t) => t === input,
  });

  model.on("change:image", drawImage);
  model.on("change:image_error", drawImage);
  model.on("change:row_id", onRow);
  for (const name of ["title", "progress", "current", "suggestion", "others", "message",
                      "message_kind", "text_mode", "key_help"]) {
    model.on(`change:${name}`, drawText);
  }
  drawImage();
  drawText();
  onRow();
  requestAnimationFrame(() => keyboard.draw()); // the outer box exists once attached

  return () => {
    keyboard.dispose();
    if (url) URL.revokeObjectURL(url);
  };
}

export default { render };
