// visionkit Annotator front end: the large image, the model's answer, others' labels,
// progress, a free-text box, and the keyboard (el_, vkAnnotatorFrame, vkRowImage from _dom.js
// and vkKeyboard from _keys.js are prepended). Every decision is made in Python; keys travel
// as {type: "key", key}.

function render({ model, el }) {
  const root = el_("div", "vk-annotator-view");
  const frame = vkAnnotatorFrame(model);
  const image = vkRowImage(model, { cls: "vk-ann-image", quietWhenEmpty: true });
  const stage = wrap_("div", "vk-ann-stage", image.img, image.errorBox);
  const current = el_("div", "vk-ann-current");
  const suggestion = el_("div", "vk-ann-line vk-ann-suggestion");
  const others = el_("div", "vk-ann-line vk-ann-others");
  const input = el_("input");
  input.type = "text";
  input.placeholder = "type a label, Enter to save";
  const textRow = wrap_("div", "vk-ann-text", input);
  root.append(frame.head, stage, current, suggestion, others, textRow, frame.message, frame.foot);
  el.append(root);
  el.tabIndex = 0;

  function drawImage() {
    stage.style.setProperty("--vk-size", `${model.get("view_size")}px`);
    image.draw();
  }

  function drawText() {
    frame.drawText();
    const cur = model.get("current");
    current.textContent = cur ? `label: ${cur}` : "no label yet";
    current.classList.toggle("vk-ann-unlabelled", !cur);
    const s = model.get("suggestion");
    suggestion.textContent = s ? `model: ${s}` : "";
    const o = model.get("others");
    others.textContent = o ? `others: ${o}` : "";
    textRow.style.display = model.get("text_mode") ? "" : "none";
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
    badge: frame.badge,
    shortcuts: () => model.get("shortcuts"),
    send: (key) => model.send({ type: "key", key }),
    isTyping: (t) => t === input,
  });

  vkOnChange(model, ["image", "image_error"], drawImage);
  model.on("change:row_id", onRow);
  vkOnChange(model, [...frame.textTraits, "current", "suggestion", "others", "text_mode"], drawText);
  drawImage();
  drawText();
  onRow();
  requestAnimationFrame(() => keyboard.draw()); // the outer box exists once attached

  return () => {
    keyboard.dispose();
    image.dispose();
  };
}

export default { render };
