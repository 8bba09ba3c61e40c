// Draws a segment's member count per day with the vendored uPlot.
// Each chart is an element with data-segment-chart="<id of a JSON script tag>" holding
// {timezone, t: [unix seconds of each local day's start], counts, labels}; static/js/charts.js does the rest.
(function () {
  "use strict";

  var LINE = "#2c6ecb";

  function draw(el, data, uPlot) {
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
    return { plot: new uPlot(options, [data.t, data.counts], el), minWidth: 260, height: 240 };
  }

  window.KinnektCharts.register("data-segment-chart", draw);
})();
