// Draws the campaign clicks/orders chart with the vendored uPlot.
// Each chart is an element with data-campaign-chart="<id of a JSON script tag>" holding
// {unit, timezone, t: [unix seconds], labels, clicks, orders}; static/js/charts.js reads it and draws it.
// The file may be executed more than once (htmx re-runs scripts of swapped content): it sets up once.
(function () {
  "use strict";
  if (window.KinnektCampaignChart) {
    window.KinnektCharts.drawAll(document);
    return;
  }

  var CLICKS = "#2c6ecb";
  var ORDERS = "#29845a";

  var HOUR = 3600;
  var DAY = 86400;
  var LABEL_WIDTH = 84;  // px one x label needs, with room between two
  var HOUR_STEPS = [1, 2, 3, 4, 6, 12, 24];
  var DAY_STEPS = [1, 2, 7, 14, 28];

  // The x axis is drawn from the data's own buckets (hour starts, or the shop's local midnights), not from
  // uPlot's guesses: a lone bucket stays one bucket wide, ticks fall on whole local hours or days, and the
  // step grows (hours: 1-24; days: 1, 2, then whole weeks from a Monday) until the labels fit the width.
  function parts(zone) {
    var day = new Intl.DateTimeFormat("en-US", { timeZone: zone, month: "short", day: "numeric" });
    var hour = new Intl.DateTimeFormat("en-US", { timeZone: zone, hour: "numeric", hour12: true });
    var weekday = new Intl.DateTimeFormat("en-US", { timeZone: zone, weekday: "short" });
    var hour24 = new Intl.DateTimeFormat("en-US", { timeZone: zone, hour: "numeric", hourCycle: "h23" });
    return {
      day: function (ts) { return day.format(new Date(ts * 1000)); },
      hour: function (ts) { return hour.format(new Date(ts * 1000)); },
      isMonday: function (ts) { return weekday.format(new Date(ts * 1000)) === "Mon"; },
      hourOfDay: function (ts) { return parseInt(hour24.format(new Date(ts * 1000)), 10) % 24; }
    };
  }

  function ticks(data, width, local) {
    var t = data.t;
    var room = Math.max(1, Math.floor(width / LABEL_WIDTH));
    if (t.length <= 1) return t.slice();
    var hourly = data.unit !== "day";
    var steps = hourly ? HOUR_STEPS : DAY_STEPS;
    var mondays = hourly ? [] : t.filter(local.isMonday);
    for (var i = 0; i < steps.length; i++) {
      var step = steps[i];
      var chosen = step >= 7 && !hourly
        ? mondays.filter(function (ts, n) { return n % (step / 7) === 0; })
        : t.filter(function (ts, n) { return hourly ? local.hourOfDay(ts) % step === 0 : n % step === 0; });
      if (chosen.length && chosen.length <= room) return chosen;
    }
    // Longer than the largest step allows: spread whole buckets evenly.
    var every = Math.ceil(t.length / room);
    return t.filter(function (ts, n) { return n % every === 0; });
  }

  function labels(data, splits, local) {
    var lone = data.t.length <= 1;
    return splits.map(function (ts, n) {
      if (data.unit === "day") return local.day(ts);
      var day = local.day(ts);
      var first = n === 0 || local.day(splits[n - 1]) !== day;
      if (lone) return day + ", " + local.hour(ts);
      return first ? local.hour(ts) + "\n" + day : local.hour(ts);
    });
  }

  function draw(el, data, uPlot) {
    var bars = uPlot.paths && uPlot.paths.bars ? uPlot.paths.bars({ size: [0.6, 40] }) : undefined;
    var zone = data.timezone || "UTC";
    var half = (data.unit === "day" ? DAY : HOUR) / 2;  // room for the first and last bars
    var first = data.t[0] - half;
    var last = data.t[data.t.length - 1] + half;
    var local = parts(zone);
    var counts = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000];
    var options = {
      width: Math.max(el.clientWidth, 280),
      height: 240,
      tzDate: function (ts) { return uPlot.tzDate(new Date(ts * 1000), zone); },
      legend: { show: true },
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: true, auto: false, range: function () { return [first, last]; } },
                clicks: { range: function (u, min, max) { return [0, Math.max(1, max)]; } },
                orders: { range: function (u, min, max) { return [0, Math.max(1, max)]; } } },
      axes: [
        { space: LABEL_WIDTH,
          splits: function (u) { return ticks(data, u.bbox.width / (window.devicePixelRatio || 1), local); },
          values: function (u, splits) {
            var shown = labels(data, splits, local);
            el.setAttribute("data-x-ticks", shown.map(function (s) { return s.replace("\n", " "); }).join("|"));
            return shown;
          } },
        { scale: "clicks", label: "Clicks", size: 50, incrs: counts },
        { scale: "orders", label: "Orders", side: 1, size: 50, incrs: counts, grid: { show: false } }
      ],
      series: [
        { label: data.unit === "day" ? "Day" : "Hour",
          value: function (u, ts) {
            if (ts == null) return "—";
            return data.unit === "day" ? local.day(ts) : local.day(ts) + ", " + local.hour(ts);
          } },
        { label: "Clicks", scale: "clicks", stroke: CLICKS, fill: "rgba(44, 110, 203, 0.35)", paths: bars,
          points: { show: false } },
        { label: "Orders", scale: "orders", stroke: ORDERS, width: 2, points: { show: true, size: 6, fill: ORDERS } }
      ]
    };
    return { plot: new uPlot(options, [data.t, data.clicks, data.orders], el), minWidth: 280, height: 240 };
  }

  // The campaign page's live parts are replaced by every poll: a table of figures the merchant opened stays open.
  var tableOpen = false;
  document.addEventListener("htmx:beforeSwap", function (event) {
    var table = event.detail.target && event.detail.target.querySelector
      ? event.detail.target.querySelector(".campaign-chart__table") : null;
    tableOpen = !!(table && table.open);
  });

  window.KinnektCampaignChart = true;
  document.addEventListener("htmx:load", function (event) {
    if (tableOpen && event.target.querySelector) {
      var table = event.target.querySelector(".campaign-chart__table");
      if (table) table.open = true;
    }
    tableOpen = false;
  });
  window.KinnektCharts.register("data-campaign-chart", draw);
})();
