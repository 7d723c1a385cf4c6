// Shared by every widget's front end (inlined before each by Python, see _assets.py): one way
// to make an element, the annotators' header (title + progress), message line and footer
// (keys badge + key line), and an <img> fed from the bytes Python sends.

function el_(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

// An element holding `children`.
function wrap_(tag, cls, ...children) {
  const e = el_(tag, cls);
  e.append(...children);
  return e;
}

// Calls fn on a change of any of the model's traits named.
function vkOnChange(model, names, fn) {
  for (const name of names) model.on(`change:${name}`, fn);
}

// Revokes object URLs once the image that replaces them is in place and loading.
function vkRevokeLater(urls) {
  if (urls.length) setTimeout(() => urls.forEach((u) => URL.revokeObjectURL(u)), 1000);
}

// The annotators' frame: a header (title + progress) above the widget's own parts, then the
// message line and a footer (keys badge + key line). drawText() shows the traits they share
// (title, progress, message, message_kind, key_help).
function vkAnnotatorFrame(model) {
  const title = el_("span", "vk-ann-title");
  const progress = el_("span", "vk-ann-progress");
  const message = el_("div", "vk-ann-line vk-ann-message");
  const badge = el_("span", "vk-keys-badge");
  const hint = el_("span", "vk-ann-hint");

  function drawText() {
    title.textContent = model.get("title");
    title.title = model.get("title");
    progress.textContent = model.get("progress");
    message.textContent = model.get("message");
    message.classList.toggle("vk-error", model.get("message_kind") === "error");
    hint.textContent = model.get("key_help");
    hint.title = model.get("key_help");
  }

  return {
    head: wrap_("div", "vk-ann-head", title, progress),
    message,
    foot: wrap_("div", "vk-ann-foot", badge, hint),
    badge,
    drawText,
    textTraits: ["title", "progress", "message", "message_kind", "key_help"],
  };
}

// The row's image: `img` (class `cls`) shows the model's `image` bytes (of type `mime`),
// `shown` (default: img) is what hides when there is none, `errorBox` says why. One object URL
// per row: draw() returns false, drawing nothing, while the same bytes are on show. With
// quietWhenEmpty, no image and no error (no rows match) leave errorBox hidden instead of
// saying "no image".
function vkRowImage(model, { cls, shown = null, quietWhenEmpty = false }) {
  const img = el_("img", cls);
  img.alt = "";
  img.draggable = false;
  const errorBox = el_("div", "vk-ann-image-error");
  shown = shown || img;
  let url = null;
  let drawn = null;
  return {
    img,
    errorBox,
    draw() {
      const data = model.get("image");
      const error = model.get("image_error");
      if (drawn === data && !error) return false;
      const old = url;
      url = null;
      drawn = data;
      if (data && data.byteLength && !error) {
        url = URL.createObjectURL(new Blob([data], { type: model.get("mime") }));
        img.src = url;
        shown.style.display = "";
        errorBox.style.display = "none";
      } else {
        img.removeAttribute("src");
        shown.style.display = "none";
        errorBox.textContent = error || "no image";
        errorBox.style.display = error || !quietWhenEmpty ? "" : "none";
      }
      vkRevokeLater(old ? [old] : []); // the previous image goes once the new one is in place
      return true;
    },
    dispose() {
      if (url) URL.revokeObjectURL(url);
    },
  };
}
