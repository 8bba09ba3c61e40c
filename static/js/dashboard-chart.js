// Draws the home page's growth chart with the vendored uPlot: new subscribers per day stacked by source, and
// opt-outs as a line. The element data-dashboard-chart="<id of a JSON script tag>" names its data:
// {timezone, t: [unix seconds of local day starts], labels, sources: [{key, label, counts}], opt_outs}.
// static/js/charts.js reads it, waits for uPlot, draws once per element and follows the box's width.
(function () {
  "use strict";

  var COLORS = { keyword: "#2c6ecb", mobile_popup: "#8051ff", shareable_link: "#29845a", checkout: "#b98900",
                 "import": "#5e6a75", manual: "#00a0ac" };
  var OTHER = "#9e7e00";
  var OPT_OUTS = "#d72c0d";
  var HEIGHT = 260;

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

  function draw(el, data, uPlot) {
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
    return { plot: new uPlot(options, columns, el), minWidth: 280, height: HEIGHT };
  }

  window.KinnektCharts.register("data-dashboard-chart", draw);
})();
