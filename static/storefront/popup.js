/* Kinnekt mobile popup for the storefront. Loaded as <script src="/apps/kinnekt/popup.js" defer>; Shopify's app
   proxy forwards /apps/kinnekt/* to Kinnekt, so every request here is same-origin and signed by Shopify.
   The markup comes from the server (escaped there); this script only shows it, posts the form and shows
   the answer. When the merchant turned the popup off the server answers 204 and nothing is shown. */
(function () {
  "use strict";
  if (window.__kinnektPopup) return;  // loaded twice (theme + app embed): run once
  window.__kinnektPopup = true;

  var STORE_KEY = "kinnekt-popup";
  var DISMISS_DAYS = 7;
  var script = document.currentScript || document.querySelector('script[src*="/popup.js"]');
  if (!script) return;
  var base = new URL(script.src, window.location.href).pathname.replace(/\/popup\.js$/, "");

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
        var delay = Math.max(0, parseInt(root.dataset.delay, 10) || 0);
        loadStyles().then(function () {
          window.setTimeout(function () {
            root.hidden = false;
            var input = root.querySelector('input[name="phone"]');
            if (input) input.focus();
          }, delay * 1000);
        });
      })
      .catch(function () {});
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
