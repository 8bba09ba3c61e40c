// Draws the home page's growth chart with the vendored uPlot: new subscribers per day stacked by source, and
// opt-outs as a line. The element data-dashboard-chart="<id of a JSON script tag>" names its data:
// {timezone, t: [unix seconds of local day starts], labels, sources: [{key, label, counts}], opt_outs}.
// No inline script, no eval (CSP-safe). htmx re-runs this file when the period switch swaps the page in:
// it defines itself once and then only draws.
(function () {
  "use strict";
  if (window.KinnektDashboardChart) {
    window.KinnektDashboardChart.drawAll(document);
    return;
  }

  var COLORS = { keyword: "#2c6ecb", mobile_popup: "#8051ff", shareable_link: "#29845a", checkout: "#b98900",
                 "import": "#5e6a75", manual: "#00a0ac" };
  var OTHER = "#9e7e00";
  var OPT_OUTS = "#d72c0d";
  var HEIGHT = 260;

  function readData(el) {
    var source = document.getElementById(el.getAttribute("data-dashboard-chart"));
    if (!source) return null;
    try {
      return JSON.parse(source.textContent);
    } catch (err) {
      return null;
    }
  }

  // Bars are stacked by drawing running totals, the tallest first, each over the one before:
  // the legend shows each source's own count, not the running total.
  function stacked(data) {
    var running = data.t.map(function () { return 0; });
    var layers = data.sources.map(function (source) {
      running = running.map(function (sum, i) { return sum + (source.counts[i] || 0); });
      return { source: source, totals: running.slice() };
    });
    return layers.reverse();
  }

  function draw(el) {
    if (el.getAttribute("data-chart-drawn") === "true") return;
    var data = readData(el);
    if (!data || !data.t || !data.t.length) return;
    var uPlot = window.uPlot;
    var bars = uPlot.paths && uPlot.paths.bars ? uPlot.paths.bars({ size: [0.7, 30] }) : undefined;
    var zone = data.timezone || "UTC";
    var layers = stacked(data);
    var series = [{ label: "Day", value: function (u, ts, si, i) { return i == null ? "" : data.labels[i]; } }];
    var columns = [data.t];
    layers.forEach(function (layer) {
      var own = layer.source.counts;
      var color = COLORS[layer.source.key] || OTHER;
      series.push({ label: layer.source.label, scale: "people", stroke: color, fill: color, paths: bars,
                    points: { show: false },
                    value: function (u, v, si, i) { return i == null ? "" : String(own[i] || 0); } });
      columns.push(layer.totals);
    });
    series.push({ label: "Opt-outs", scale: "people", stroke: OPT_OUTS, width: 2,
                  points: { show: true, size: 5, fill: OPT_OUTS } });
    columns.push(data.opt_outs);
    var half = 86400 / 2;
    var options = {
      width: Math.max(el.clientWidth, 280),
      height: HEIGHT,
      tzDate: function (ts) { return uPlot.tzDate(new Date(ts * 1000), zone); },
      legend: { show: true },
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: true, range: function (u, min, max) { return [min - half, max + half]; } },
                people: { range: function (u, min, max) { return [0, Math.max(1, max)]; } } },
      axes: [
        {},
        { scale: "people", label: "People", size: 50,
          incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000] }
      ],
      series: series
    };
    el.setAttribute("data-chart-drawn", "true");
    var plot = new uPlot(options, columns, el);
    if (window.ResizeObserver) {
      new ResizeObserver(function () {
        if (el.isConnected) plot.setSize({ width: Math.max(el.clientWidth, 280), height: HEIGHT });
      }).observe(el);
    }
  }

  function drawAll(root, attempt) {
    attempt = attempt || 0;
    var charts = (root || document).querySelectorAll("[data-dashboard-chart]");
    if (!charts.length) return;
    if (!window.uPlot) {
      // htmx inserts the uPlot script asynchronously; wait for it (a few seconds at most).
      if (attempt < 100) setTimeout(function () { drawAll(root, attempt + 1); }, 50);
      return;
    }
    for (var i = 0; i < charts.length; i++) draw(charts[i]);
  }

  window.KinnektDashboardChart = { drawAll: drawAll };
  document.addEventListener("htmx:load", function (event) { drawAll(event.target); });
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () { drawAll(document); });
  } else {
    drawAll(document);
  }
})();
