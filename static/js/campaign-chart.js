// Draws the campaign clicks/orders chart with the vendored uPlot.
// Each chart is an element with data-campaign-chart="<id of a JSON script tag>" holding
// {unit, timezone, t: [unix seconds], labels, clicks, orders}. No inline script, no eval: CSP-safe.
// The file may be executed more than once (htmx re-runs scripts of swapped content): it defines itself once.
(function () {
  "use strict";
  if (window.KinnektCampaignChart) {
    window.KinnektCampaignChart.drawAll(document);
    return;
  }

  var CLICKS = "#2c6ecb";
  var ORDERS = "#29845a";

  function readData(el) {
    var source = document.getElementById(el.getAttribute("data-campaign-chart"));
    if (!source) return null;
    try {
      return JSON.parse(source.textContent);
    } catch (err) {
      return null;
    }
  }

  function draw(el) {
    if (el.getAttribute("data-chart-drawn") === "true") return;
    var data = readData(el);
    if (!data || !data.t || !data.t.length) return;
    var uPlot = window.uPlot;
    var bars = uPlot.paths && uPlot.paths.bars ? uPlot.paths.bars({ size: [0.6, 40] }) : undefined;
    var zone = data.timezone || "UTC";
    var half = (data.unit === "day" ? 86400 : 3600) / 2;  // room for the first and last bars
    var counts = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000];
    var options = {
      width: Math.max(el.clientWidth, 280),
      height: 240,
      tzDate: function (ts) { return uPlot.tzDate(new Date(ts * 1000), zone); },
      legend: { show: true },
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: true, range: function (u, min, max) { return [min - half, max + half]; } },
                clicks: { range: function (u, min, max) { return [0, Math.max(1, max)]; } },
                orders: { range: function (u, min, max) { return [0, Math.max(1, max)]; } } },
      axes: [
        {},
        { scale: "clicks", label: "Clicks", size: 50, incrs: counts },
        { scale: "orders", label: "Orders", side: 1, size: 50, incrs: counts, grid: { show: false } }
      ],
      series: [
        { label: data.unit === "day" ? "Day" : "Hour" },
        { label: "Clicks", scale: "clicks", stroke: CLICKS, fill: "rgba(44, 110, 203, 0.35)", paths: bars,
          points: { show: false } },
        { label: "Orders", scale: "orders", stroke: ORDERS, width: 2, points: { show: true, size: 6, fill: ORDERS } }
      ]
    };
    el.setAttribute("data-chart-drawn", "true");
    var plot = new uPlot(options, [data.t, data.clicks, data.orders], el);
    if (window.ResizeObserver) {
      new ResizeObserver(function () {
        plot.setSize({ width: Math.max(el.clientWidth, 280), height: 240 });
      }).observe(el);
    }
  }

  function drawAll(root, attempt) {
    attempt = attempt || 0;
    var charts = (root || document).querySelectorAll("[data-campaign-chart]");
    if (!charts.length) return;
    if (!window.uPlot) {
      // htmx inserts the uPlot script asynchronously; wait for it (a few seconds at most).
      if (attempt < 100) setTimeout(function () { drawAll(root, attempt + 1); }, 50);
      return;
    }
    for (var i = 0; i < charts.length; i++) draw(charts[i]);
  }

  window.KinnektCampaignChart = { drawAll: drawAll };
  document.addEventListener("htmx:load", function (event) { drawAll(event.target); });
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () { drawAll(document); });
  } else {
    drawAll(document);
  }
})();
