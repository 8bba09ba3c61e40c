// Draws a segment's member count per day with the vendored uPlot.
// Each chart is an element with data-segment-chart="<id of a JSON script tag>" holding
// {timezone, t: [unix seconds of each local day's start], counts, labels}. No inline script, no eval: CSP-safe.
// The file may be executed more than once (htmx re-runs scripts of swapped content): it defines itself once.
(function () {
  "use strict";
  if (window.KinnektSegmentChart) {
    window.KinnektSegmentChart.drawAll(document);
    return;
  }

  var LINE = "#2c6ecb";

  function readData(el) {
    var source = document.getElementById(el.getAttribute("data-segment-chart"));
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
    var zone = data.timezone || "UTC";
    var stepped = uPlot.paths && uPlot.paths.stepped ? uPlot.paths.stepped({ align: 1 }) : undefined;
    var options = {
      width: Math.max(el.clientWidth, 260),
      height: 240,
      tzDate: function (ts) { return uPlot.tzDate(new Date(ts * 1000), zone); },
      legend: { show: true },
      cursor: { drag: { x: false, y: false } },
      scales: {
        // From the data itself, at least a week wide: a segment counted once still gets a readable day axis.
        x: { time: true, range: function () {
          var lo = data.t[0], hi = data.t[data.t.length - 1];
          if (hi - lo < 6 * 86400) lo = hi - 6 * 86400;
          return [lo - 43200, hi + 43200];
        } },
        y: { range: function (u, min, max) { return [0, Math.max(1, Math.ceil(max * 1.1))]; } }
      },
      axes: [{}, { label: "Members", size: 56 }],
      series: [
        { label: "Day", value: function (u, ts, i) { return ts == null ? "" : (data.labels[i] || ""); } },
        { label: "Members", stroke: LINE, width: 2, fill: "rgba(44, 110, 203, 0.15)", paths: stepped,
          points: { show: data.t.length < 3, size: 6, fill: LINE } }
      ]
    };
    el.setAttribute("data-chart-drawn", "true");
    var plot = new uPlot(options, [data.t, data.counts], el);
    if (window.ResizeObserver) {
      new ResizeObserver(function () {
        plot.setSize({ width: Math.max(el.clientWidth, 260), height: 240 });
      }).observe(el);
    }
  }

  function drawAll(root, attempt) {
    attempt = attempt || 0;
    var charts = (root || document).querySelectorAll("[data-segment-chart]");
    if (!charts.length) return;
    if (!window.uPlot) {
      // htmx inserts the uPlot script asynchronously; wait for it (a few seconds at most).
      if (attempt < 100) setTimeout(function () { drawAll(root, attempt + 1); }, 50);
      return;
    }
    for (var i = 0; i < charts.length; i++) draw(charts[i]);
  }

  window.KinnektSegmentChart = { drawAll: drawAll };
  document.addEventListener("htmx:load", function (event) { drawAll(event.target); });
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () { drawAll(document); });
  } else {
    drawAll(document);
  }
})();
