// Shared by the annotators' front ends (inlined into each by Python, see _assets.py).
// The keyboard belongs to a widget only after a click into it, and only while it keeps the
// focus: a label must come from a deliberate act on a visible widget, never from keys typed
// for JupyterLab (Enter to edit a cell, Shift+Enter to run one) after "Run All".

function vkKeyboard({ el, box, badge, shortcuts, send, isTyping }) {
  // el: the view's element; box(): the whole widget (view + buttons); badge: the element
  // that says whether keys are on; shortcuts(): the keys to take; send(key): act on one.
  let armed = false;

  function draw() {
    const root = box();
    root.classList.toggle("vk-keys-on", armed);
    badge.textContent = armed
      ? "keys: on (click outside or Esc to release)"
      : "keys: off (click the image to use them)";
    badge.classList.toggle("vk-on", armed);
  }

  function arm() {
    if (!armed) {
      armed = true;
      draw();
    }
  }

  function disarm() {
    if (armed) {
      armed = false;
      draw();
    }
  }

  function onPointerDown(e) {
    if (box().contains(e.target)) {
      arm();
      if (!isTyping(e.target)) setTimeout(() => el.focus({ preventScroll: true }), 0);
    } else {
      disarm();
    }
  }

  function onFocusIn(e) {
    // Focus moving to another element lets go of the keys; JupyterLab focusing the cell
    // around us (it does on every click into an output) does not.
    const root = box();
    if (!root.contains(e.target) && !e.target.contains(root)) disarm();
  }

  function onKey(e) {
    if (!armed) return;
    const root = box();
    if (!root.contains(e.target) || isTyping(e.target)) return;
    if (!root.isConnected || root.offsetParent === null) return; // hidden: never act
    if (e.ctrlKey || e.metaKey || e.altKey) return; // never with modifiers: the notebook's
    if (e.shiftKey) {
      // Never act on Shift either, but keep Shift+<our key> from JupyterLab's command mode,
      // which would turn this widget's cell into a heading (Shift+2) and the like.
      // Shift+Enter goes through: it runs the cell, as everywhere in the notebook.
      const code = e.code || "";
      const bare = code.startsWith("Digit") ? code.slice(5)
        : code.startsWith("Key") ? code.slice(3).toLowerCase() : e.key;
      if (e.key !== "Enter" && shortcuts().includes(bare)) {
        e.preventDefault();
        e.stopPropagation();
      }
      return;
    }
    if (e.key === "Escape") {
      disarm();
      el.blur();
      e.stopPropagation();
      return;
    }
    if (!shortcuts().includes(e.key)) return;
    e.preventDefault();
    e.stopPropagation();
    if (e.repeat && e.key !== "ArrowRight" && e.key !== "ArrowLeft") return;
    send(e.key);
  }

  // Capture phase on the window: runs before JupyterLab's own shortcuts ("a" inserts a cell,
  // digits change the cell type), and stopping the event keeps them from firing.
  window.addEventListener("keydown", onKey, true);
  window.addEventListener("pointerdown", onPointerDown, true);
  window.addEventListener("focusin", onFocusIn, true);
  draw();
  return {
    draw,
    dispose() {
      window.removeEventListener("keydown", onKey, true);
      window.removeEventListener("pointerdown", onPointerDown, true);
      window.removeEventListener("focusin", onFocusIn, true);
    },
  };
}
