// visionkit Gallery front end: draws the page Python sent and reports clicks.
// State lives in Python traits (page, query, selected_positions); this file only draws
// (el_, vkOnChange and vkRevokeLater come from _dom.js, prepended by Python).

function render({ model, el }) {
  const root = el_("div", "vk-gallery");
  const bar = el_("div", "vk-gallery-bar");
  const prev = el_("button", "vk-btn", "‹");
  const next = el_("button", "vk-btn", "›");
  prev.title = "previous page";
  next.title = "next page";
  const pageInfo = el_("span", "vk-gallery-page");
  const counts = el_("span", "vk-gallery-counts");
  const clear = el_("button", "vk-btn vk-gallery-clear", "clear selection");
  const query = el_("input", "vk-gallery-query");
  query.type = "text";
  query.placeholder = "filter, e.g. label == 'animal'  (Enter)";
  const error = el_("div", "vk-gallery-error");
  const grid = el_("div", "vk-gallery-grid");
  bar.append(prev, pageInfo, next, counts, clear, query);
  root.append(bar, error, grid);
  el.append(root);

  let urls = [];
  let anchor = null; // the last plainly clicked row position, for shift-click ranges

  function setSelection(positions) {
    model.set("selected_positions", [...new Set(positions)].sort((a, b) => a - b));
    model.save_changes();
  }

  function onTileClick(pos, event) {
    const sel = new Set(model.get("selected_positions"));
    if (event.shiftKey && anchor !== null) {
      const order = model.get("_items").map((it) => it.pos);
      const a = order.indexOf(anchor), b = order.indexOf(pos);
      if (a >= 0 && b >= 0) {
        for (let i = Math.min(a, b); i <= Math.max(a, b); i++) sel.add(order[i]);
        setSelection([...sel]);
        return;
      }
    }
    if (event.ctrlKey || event.metaKey) {
      if (sel.has(pos)) sel.delete(pos); else sel.add(pos);
      anchor = pos;
      setSelection([...sel]);
      return;
    }
    anchor = pos;
    setSelection(sel.size === 1 && sel.has(pos) ? [] : [pos]);
  }

  function drawSelection() {
    const sel = new Set(model.get("selected_positions"));
    for (const tile of grid.children) {
      tile.classList.toggle("vk-selected", sel.has(Number(tile.dataset.pos)));
    }
    clear.style.visibility = sel.size ? "visible" : "hidden";
    drawCounts();
  }

  function drawCounts() {
    const total = model.get("total"), matching = model.get("matching");
    const nsel = model.get("selected_positions").length;
    const hidden = model.get("selected_hidden");
    let text = `${matching.toLocaleString()} image${matching === 1 ? "" : "s"}`;
    if (matching !== total) text += ` of ${total.toLocaleString()}`;
    if (nsel - hidden) text += ` · ${nsel - hidden} selected`;
    if (hidden) text += ` · ${hidden} selected but hidden by the filter`;
    counts.textContent = text;
  }

  // _items and _thumbs arrive together but fire two change events: draw once per sync.
  let pending = false;
  function schedulePage() {
    if (pending) return;
    pending = true;
    queueMicrotask(() => {
      pending = false;
      drawPage();
    });
  }

  function drawPage() {
    // Revoke the old page's URLs only after the new page is in place and loading.
    vkRevokeLater(urls);
    urls = [];
    const items = model.get("_items");
    const thumbs = model.get("_thumbs");
    const size = model.get("thumb_size");
    grid.style.setProperty("--vk-thumb", `${size}px`);
    grid.replaceChildren();
    items.forEach((item, i) => {
      const tile = el_("figure", "vk-tile");
      tile.dataset.pos = item.pos;
      tile.title = item.title;
      const frame = el_("div", "vk-thumb");
      const data = thumbs[i];
      if (item.error || !data || data.byteLength === 0) {
        frame.append(el_("span", "vk-thumb-error", item.error || "no image"));
      } else {
        const url = URL.createObjectURL(new Blob([data], { type: item.mime }));
        urls.push(url);
        const img = el_("img");
        img.src = url;
        img.alt = item.caption;
        img.draggable = false;
        frame.append(img);
      }
      const caption = el_("figcaption", "", item.caption);
      caption.title = item.caption;
      tile.append(frame, caption);
      tile.addEventListener("click", (e) => onTileClick(item.pos, e));
      grid.append(tile);
    });
    if (!items.length) grid.append(el_("div", "vk-gallery-empty", "no rows match the filter"));
    const page = model.get("page"), count = model.get("page_count");
    pageInfo.textContent = `page ${page + 1} / ${count}`;
    prev.disabled = page <= 0;
    next.disabled = page >= count - 1;
    drawSelection();
  }

  function drawQuery() {
    if (document.activeElement !== query) query.value = model.get("query");
    const msg = model.get("query_error");
    error.textContent = msg;
    error.style.display = msg ? "block" : "none";
  }

  prev.addEventListener("click", () => {
    model.set("page", Math.max(0, model.get("page") - 1));
    model.save_changes();
  });
  next.addEventListener("click", () => {
    model.set("page", Math.min(model.get("page_count") - 1, model.get("page") + 1));
    model.save_changes();
  });
  clear.addEventListener("click", () => setSelection([]));
  query.addEventListener("keydown", (e) => {
    e.stopPropagation(); // typing here must not trigger notebook shortcuts
    if (e.key === "Enter") {
      model.set("query", query.value);
      model.save_changes();
    }
  });

  vkOnChange(model, ["_thumbs", "_items"], schedulePage);
  vkOnChange(model, ["selected_hidden", "matching"], drawCounts);
  model.on("change:selected_positions", drawSelection);
  vkOnChange(model, ["query", "query_error"], drawQuery);
  drawPage();
  drawQuery();

  return () => {
    for (const u of urls) URL.revokeObjectURL(u);
  };
}

export default { render };
