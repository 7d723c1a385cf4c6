// visionkit BoxAnnotator front end (el_, vkAnnotatorFrame, vkRowImage from _dom.js and
// vkKeyboard from _keys.js are prepended).
// Boxes are kept in pixels of the full-size displayed image (natural_width x natural_height);
// the preview image is only stretched over that area, so its resolution never leaks into the
// coordinates. Python decides everything that changes data: the mouse sends "draw", "edit"
// and "take" messages on pointerup, and Python sends the row's boxes back.

const COLOURS = ["#1565c0", "#c62828", "#2e7d32", "#6a1b9a", "#ef6c00", "#00838f", "#ad1457",
                 "#4e342e", "#37474f"];
const MIN_SIDE = 3; // screen pixels: a smaller drag is a click, not a box

function render({ model, el }) {
  const root = el_("div", "vk-annotator-view vk-box-view");
  const frame = vkAnnotatorFrame(model);
  const chips = el_("div", "vk-box-chips");
  const canvas = el_("div", "vk-box-canvas");
  const image = vkRowImage(model, { cls: "vk-box-image", shown: canvas });
  const layer = el_("div", "vk-box-layer");
  canvas.append(image.img, layer);
  const zoomInfo = el_("div", "vk-box-zoom");
  const stage = wrap_("div", "vk-box-stage", canvas, image.errorBox, zoomInfo);
  root.append(frame.head, chips, stage, frame.message, frame.foot);
  el.append(root);
  el.tabIndex = 0;

  let zoom = 1, panX = 0, panY = 0, scale = 1;
  let drag = null; // {mode: "draw"|"move"|"resize"|"pan", ...}
  let spaceDown = false;

  const colour = (label) => COLOURS[Math.max(0, model.get("labels").indexOf(label)) % COLOURS.length];
  const natural = () => [model.get("natural_width"), model.get("natural_height")];

  // -- layout: fit the full-size image into the stage, then zoom and pan ----------------------
  function layout() {
    const [nw, nh] = natural();
    stage.style.height = `${model.get("view_size")}px`;
    if (!nw || !nh) return;
    const sw = stage.clientWidth, sh = stage.clientHeight;
    const fit = Math.min(sw / nw, sh / nh);
    scale = fit * zoom;
    const w = nw * scale, h = nh * scale;
    // Centred along a side that fits the stage; along one that does not, kept covering it.
    panX = w <= sw ? (sw - w) / 2 : Math.min(Math.max(panX, sw - w), 0);
    panY = h <= sh ? (sh - h) / 2 : Math.min(Math.max(panY, sh - h), 0);
    canvas.style.width = `${w}px`;
    canvas.style.height = `${h}px`;
    canvas.style.transform = `translate(${panX}px, ${panY}px)`;
    zoomInfo.textContent = zoom > 1 ? `zoom ${zoom.toFixed(1)}×` : "";
    drawBoxes();
  }

  function setZoom(z, cx, cy) {
    // keep the image point under (cx, cy) (stage coordinates) where it is
    const r = stage.getBoundingClientRect();
    cx = cx === undefined ? r.width / 2 : cx;
    cy = cy === undefined ? r.height / 2 : cy;
    const ix = (cx - panX) / scale, iy = (cy - panY) / scale;
    zoom = Math.min(Math.max(z, 1), 16);
    const [nw, nh] = natural();
    const fit = Math.min(stage.clientWidth / nw, stage.clientHeight / nh);
    const s = fit * zoom;
    panX = cx - ix * s;
    panY = cy - iy * s;
    layout();
  }

  // Mouse position in full-size image pixels, clamped to the image.
  function toImage(e) {
    const r = canvas.getBoundingClientRect();
    const [nw, nh] = natural();
    const x = Math.min(Math.max((e.clientX - r.left) / scale, 0), nw);
    const y = Math.min(Math.max((e.clientY - r.top) / scale, 0), nh);
    return [x, y];
  }

  // -- drawing the boxes ----------------------------------------------------------------------
  function boxDiv(b, cls) {
    const d = el_("div", `vk-box ${cls}`);
    d.style.left = `${b.x * scale}px`;
    d.style.top = `${b.y * scale}px`;
    d.style.width = `${b.w * scale}px`;
    d.style.height = `${b.h * scale}px`;
    d.style.setProperty("--vk-box", colour(b.label));
    const tag = el_("span", "vk-box-tag", b.annotator ? `${b.label} · ${b.annotator}` : b.label);
    d.append(tag);
    return d;
  }

  function drawBoxes() {
    layer.replaceChildren();
    for (const b of model.get("others")) {
      layer.append(boxDiv(b, "vk-box-other"));
    }
    model.get("suggestions").forEach((b, i) => {
      const d = boxDiv(b, "vk-box-suggestion");
      d.title = "proposed by the model: click to take it";
      d.dataset.take = i;
      layer.append(d);
    });
    const selected = model.get("selected");
    const live = drag && (drag.mode === "move" || drag.mode === "resize") ? drag : null;
    model.get("boxes").forEach((b, i) => {
      const shown = live && live.index === i ? live.box : b;
      const d = boxDiv(shown, i === selected ? "vk-box-own vk-selected" : "vk-box-own");
      d.dataset.index = i;
      if (i === selected) {
        for (const corner of ["nw", "ne", "sw", "se"]) {
          const h = el_("span", `vk-box-handle vk-${corner}`);
          h.dataset.corner = corner;
          d.append(h);
        }
      }
      layer.append(d);
    });
    if (drag && drag.mode === "draw" && drag.box) {
      layer.append(boxDiv({ ...drag.box, label: model.get("current_label") }, "vk-box-own vk-box-new"));
    }
  }

  function drawImage() {
    image.draw();
    layout();
  }

  function drawText() {
    frame.drawText();
    chips.replaceChildren();
    const current = model.get("current_label");
    model.get("labels").forEach((label, i) => {
      const chip = el_("button", "vk-box-chip", i < 9 ? `${i + 1} ${label}` : label);
      chip.style.setProperty("--vk-box", colour(label));
      chip.classList.toggle("vk-on", label === current);
      chip.title = `class of the next box, and of the selected one${i < 9 ? ` (key ${i + 1})` : ""}`;
      chip.addEventListener("click", () => model.send({ type: "key", key: String(i + 1) }));
      chips.append(chip);
    });
  }

  // -- the mouse ------------------------------------------------------------------------------
  stage.addEventListener("pointerdown", (e) => {
    if (e.button === 1 || (e.button === 0 && spaceDown)) {
      drag = { mode: "pan", sx: e.clientX, sy: e.clientY, px: panX, py: panY };
    } else if (e.button === 0) {
      const handle = e.target.closest(".vk-box-handle");
      const own = e.target.closest(".vk-box-own");
      const take = e.target.closest(".vk-box-suggestion");
      const [x, y] = toImage(e);
      if (handle && own) {
        const i = Number(own.dataset.index);
        drag = { mode: "resize", index: i, corner: handle.dataset.corner,
                 orig: { ...model.get("boxes")[i] }, box: { ...model.get("boxes")[i] } };
      } else if (own) {
        const i = Number(own.dataset.index);
        if (model.get("selected") !== i) {
          model.set("selected", i);
          model.save_changes();
        }
        drag = { mode: "move", index: i, sx: x, sy: y, orig: { ...model.get("boxes")[i] },
                 box: { ...model.get("boxes")[i] }, moved: false };
      } else if (take) {
        model.send({ type: "take", index: Number(take.dataset.take) });
        return;
      } else {
        if (model.get("selected") !== -1) {
          model.set("selected", -1);
          model.save_changes();
        }
        drag = { mode: "draw", sx: x, sy: y, box: null };
      }
    } else {
      return;
    }
    stage.setPointerCapture(e.pointerId);
    e.preventDefault();
  });

  stage.addEventListener("pointermove", (e) => {
    if (!drag) return;
    if (drag.mode === "pan") {
      panX = drag.px + (e.clientX - drag.sx);
      panY = drag.py + (e.clientY - drag.sy);
      layout();
      return;
    }
    const [x, y] = toImage(e);
    const [nw, nh] = natural();
    if (drag.mode === "draw") {
      drag.box = { x: Math.min(x, drag.sx), y: Math.min(y, drag.sy),
                   w: Math.abs(x - drag.sx), h: Math.abs(y - drag.sy) };
    } else if (drag.mode === "move") {
      const o = drag.orig;
      const dx = Math.min(Math.max(x - drag.sx, -o.x), nw - o.x - o.w);
      const dy = Math.min(Math.max(y - drag.sy, -o.y), nh - o.y - o.h);
      drag.box = { ...o, x: o.x + dx, y: o.y + dy };
      drag.moved = drag.moved || Math.abs(dx * scale) + Math.abs(dy * scale) > 2;
    } else if (drag.mode === "resize") {
      const o = drag.orig;
      let x0 = o.x, y0 = o.y, x1 = o.x + o.w, y1 = o.y + o.h;
      if (drag.corner.includes("w")) x0 = x; else x1 = x;
      if (drag.corner.includes("n")) y0 = y; else y1 = y;
      drag.box = { ...o, x: Math.min(x0, x1), y: Math.min(y0, y1),
                   w: Math.abs(x1 - x0), h: Math.abs(y1 - y0) };
    }
    drawBoxes();
  });

  function endDrag() {
    const d = drag;
    drag = null;
    if (!d) return;
    const big = (b) => b && b.w * scale >= MIN_SIDE && b.h * scale >= MIN_SIDE;
    const round = (b) => ({ x: +b.x.toFixed(1), y: +b.y.toFixed(1),
                            w: +b.w.toFixed(1), h: +b.h.toFixed(1) });
    if (d.mode === "draw" && big(d.box)) {
      model.send({ type: "draw", box: round(d.box) });
    } else if (d.mode === "move" && d.moved) {
      model.send({ type: "edit", index: d.index, box: round(d.box) });
    } else if (d.mode === "resize" && big(d.box)) {
      model.send({ type: "edit", index: d.index, box: round(d.box) });
    }
    drawBoxes();
  }
  stage.addEventListener("pointerup", endDrag);
  stage.addEventListener("pointercancel", endDrag);

  stage.addEventListener("wheel", (e) => {
    // Zoom only once the widget has the keys (a click): otherwise the page scrolls on.
    if (!el.closest(".vk-keys-on")) return;
    e.preventDefault();
    const r = stage.getBoundingClientRect();
    setZoom(zoom * (e.deltaY < 0 ? 1.25 : 0.8), e.clientX - r.left, e.clientY - r.top);
  }, { passive: false });

  // -- the keyboard ---------------------------------------------------------------------------
  const local = {
    zoom_in: () => setZoom(zoom * 1.25),
    zoom_out: () => setZoom(zoom * 0.8),
    zoom_reset: () => { zoom = 1; layout(); },
    pan: () => { spaceDown = true; },
  };
  const keyboard = vkKeyboard({
    el,
    box: () => el.closest(".vk-box-annotator") || el,
    badge: frame.badge,
    shortcuts: () => {
      const digits = model.get("labels").slice(0, 9).map((_, i) => String(i + 1));
      return [...digits, ...Object.keys(model.get("bindings"))];
    },
    send: (key) => {
      const action = model.get("bindings")[key];
      if (action in local) local[action]();
      else model.send({ type: "key", key });
    },
    isTyping: () => false,
  });
  function onKeyUp(e) {
    if (model.get("bindings")[e.key] === "pan") spaceDown = false;
  }
  window.addEventListener("keyup", onKeyUp, true);
  const resize = new ResizeObserver(() => layout());
  resize.observe(stage);

  vkOnChange(model, ["image", "image_error"], drawImage);
  vkOnChange(model, ["natural_width", "natural_height", "view_size"], layout);
  model.on("change:row_id", () => { zoom = 1; layout(); });
  vkOnChange(model, ["boxes", "suggestions", "others", "selected"], drawBoxes);
  vkOnChange(model, [...frame.textTraits, "labels", "current_label"], drawText);
  drawText();
  drawImage();
  requestAnimationFrame(() => { keyboard.draw(); layout(); });

  return () => {
    keyboard.dispose();
    resize.disconnect();
    window.removeEventListener("keyup", onKeyUp, true);
    image.dispose();
  };
}

export default { render };
