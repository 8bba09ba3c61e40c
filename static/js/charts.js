// What every chart of the app shares (the campaign, home and segment charts draw with the vendored uPlot):
// its data is the JSON of the script tag its element names (data-<kind>-chart="<id>": never executed, so
// CSP-safe); it is drawn once per element, when uPlot is there (htmx inserts that script asynchronously), on
// page load and whenever htmx brings content in; it follows its box's width. A chart script registers how to
// draw its kind: KinnektCharts.register("data-home-chart", function (el, data, uPlot) { return {plot, ...} }).
(function () {
  "use strict";
  if (window.KinnektCharts) return;

  var kinds = {};  // attribute -> draw(el, data, uPlot) returning {plot, minWidth, height}

  function readData(el, attribute) {
    var source = document.getElementById(el.getAttribute(attribute));
    if (!source) return null;
    try {
      return JSON.parse(source.textContent);
    } catch (err) {
      return null;
    }
  }

  function drawOne(el, attribute) {
    if (el.getAttribute("data-chart-drawn") === "true") return;
    var data = readData(el, attribute);
    if (!data || !data.t || !data.t.length) return;
    el.setAttribute("data-chart-drawn", "true");
    var chart = kinds[attribute](el, data, window.uPlot);
    if (window.ResizeObserver) {
      new ResizeObserver(function () {
        if (el.isConnected) {
          chart.plot.setSize({ width: Math.max(el.clientWidth, chart.minWidth), height: chart.height });
        }
      }).observe(el);
    }
  }

  function drawAll(root, attempt) {
    root = root || document;
    attempt = attempt || 0;
    if (!root.querySelectorAll) return;
    var found = Object.keys(kinds).some(function (attribute) { return root.querySelector("[" + attribute + "]"); });
    if (!found) return;
    if (!window.uPlot) {
      if (attempt < 100) setTimeout(function () { drawAll(root, attempt + 1); }, 50);  // a few seconds at most
      return;
    }
    Object.keys(kinds).forEach(function (attribute) {
      Array.prototype.forEach.call(root.querySelectorAll("[" + attribute + "]"), function (el) {
        drawOne(el, attribute);
      });
    });
  }

  function register(attribute, draw) {
    kinds[attribute] = draw;
    drawAll(document);
  }

  window.KinnektCharts = { register: register, drawAll: drawAll };
  document.addEventListener("htmx:load", function (event) { drawAll(event.target); });
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () { drawAll(document); });
  }
})();
