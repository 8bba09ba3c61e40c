/* Kinnekt mobile popup for the storefront: the one copy of the script. The theme app extension's app embed
   (blocks/popup.liquid) loads it from Shopify's CDN with its settings in data attributes: data-proxy (the app
   proxy path, /apps/kinnekt, under the market's root), data-delay (seconds), data-exit-intent and
   data-styles="included" (the block linked the CSS). Stores that pasted the older
   <script src="/apps/kinnekt/popup.js" defer> get this same file through the app proxy (no data attributes:
   the proxy path is the script's own, the delay 5 seconds).
   Every request goes to the app proxy on the storefront's own origin, where Shopify signs it. The markup comes
   from the server (escaped there); this script only shows it, posts the form and shows the answer. When the
   merchant turned the popup off the server answers 204 and nothing is shown. */
(function () {
  "use strict";
  if (window.__kinnektPopup) return;  // loaded twice (theme + app embed): run once
  window.__kinnektPopup = true;

  var STORE_KEY = "kinnekt-popup";
  var DISMISS_DAYS = 7;
  var DEFAULT_DELAY = 5;
  var script = document.currentScript ||
    document.querySelector("script[data-proxy][src*='kinnekt-popup']") || document.querySelector('script[src*="/popup.js"]');
  if (!script) return;
  var config = script.dataset || {};
  var base = config.proxy ? config.proxy.replace(/\/+$/, "")
    : new URL(script.src, window.location.href).pathname.replace(/\/popup\.js$/, "");
  var delaySetting = parseInt(config.delay, 10);
  var delay = isNaN(delaySetting) ? DEFAULT_DELAY : Math.min(Math.max(delaySetting, 0), 120);
  var exitIntent = config.exitIntent === "true";

  function remembered() {
    try {
      var value = JSON.parse(window.localStorage.getItem(STORE_KEY) || "null");
      if (!value) return false;
      if (value.state === "joined") return true;
      return value.state === "dismissed" && Date.now() - value.at < DISMISS_DAYS * 864e5;
    } catch (e) { return false; }
  }

  function remember(state) {
    try { window.localStorage.setItem(STORE_KEY, JSON.stringify({state: state, at: Date.now()})); } catch (e) {}
  }

  function loadStyles() {
    if (config.styles === "included") return Promise.resolve();
    return new Promise(function (resolve) {
      var link = document.createElement("link");
      link.rel = "stylesheet";
      link.href = base + "/popup.css";
      link.onload = link.onerror = function () { resolve(); };
      document.head.appendChild(link);
    });
  }

  function showError(root, field, message) {
    var slot = root.querySelector('[data-kn-error="' + field + '"]') || root.querySelector('[data-kn-error="form"]');
    slot.textContent = message;
    slot.hidden = false;
    var input = root.querySelector('[name="' + field + '"]');
    if (input) { input.setAttribute("aria-invalid", "true"); input.focus(); }
  }

  function clearErrors(root) {
    root.querySelectorAll("[data-kn-error]").forEach(function (slot) { slot.hidden = true; slot.textContent = ""; });
    root.querySelectorAll("[aria-invalid]").forEach(function (input) { input.removeAttribute("aria-invalid"); });
  }

  function close(root) {
    root.hidden = true;
    if (!root.dataset.joined) remember("dismissed");
  }

  function wire(root) {
    var form = root.querySelector("[data-kn-form]");
    var button = form.querySelector('button[type="submit"]');
    root.querySelectorAll("[data-kn-close]").forEach(function (el) {
      el.addEventListener("click", function () { close(root); });
    });
    root.addEventListener("click", function (event) { if (event.target === root) close(root); });
    document.addEventListener("keydown", function (event) { if (event.key === "Escape" && !root.hidden) close(root); });

    form.addEventListener("submit", function (event) {
      event.preventDefault();
      clearErrors(root);
      var data = new URLSearchParams(new FormData(form));
      var country = window.Shopify && window.Shopify.country;
      if (country) data.set("country", country);
      button.disabled = true;
      fetch(base + "/popup", {
        method: "POST", credentials: "same-origin", body: data,
        headers: {"Accept": "application/json", "Content-Type": "application/x-www-form-urlencoded"}
      }).then(function (response) {
        return response.json().catch(function () { return {ok: false, error: "Something went wrong. Please try again."}; });
      }).then(function (answer) {
        if (answer.ok) {
          root.dataset.joined = "1";
          remember("joined");
          root.querySelector(".kn-popup__form-state").hidden = true;
          var success = root.querySelector("[data-kn-success]");
          if (answer.message) success.querySelector("[data-kn-success-text]").textContent = answer.message;
          success.hidden = false;
        } else {
          showError(root, answer.field || "form", answer.error || "Something went wrong. Please try again.");
        }
      }).catch(function () {
        showError(root, "form", "We could not reach the store. Check your connection and try again.");
      }).then(function () { button.disabled = false; });
    });
  }

  function open(root) {
    if (!root.hidden || root.dataset.opened) return;
    root.dataset.opened = "1";
    root.hidden = false;
    var input = root.querySelector('input[name="phone"]');
    if (input) input.focus();
  }

  // With exit intent on, a pointer leaving the page through its top edge (towards the tabs or the address bar)
  // opens the popup; on touch screens, which have no such gesture, the delay opens it as without exit intent.
  function schedule(root) {
    var hover = window.matchMedia && window.matchMedia("(hover: hover)").matches;
    if (exitIntent && hover) {
      document.addEventListener("mouseout", function onLeave(event) {
        if (event.relatedTarget || event.clientY > 0) return;
        document.removeEventListener("mouseout", onLeave);
        open(root);
      });
      return;
    }
    window.setTimeout(function () { open(root); }, delay * 1000);
  }

  function start() {
    if (remembered()) return;
    fetch(base + "/popup", {credentials: "same-origin", headers: {"Accept": "text/html"}})
      .then(function (response) { return response.status === 200 ? response.text() : ""; })
      .then(function (html) {
        if (!html) return;  // popup off, or not for this shop
        var holder = document.createElement("div");
        holder.innerHTML = html;
        var root = holder.querySelector("#kinnekt-popup");
        if (!root) return;
        document.body.appendChild(root);
        wire(root);
        loadStyles().then(function () { schedule(root); });
      })
      .catch(function () {});
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
