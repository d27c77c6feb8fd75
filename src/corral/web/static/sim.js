// The Simulation page's charts: <div class="sim-chart" data-series="URL" data-title="...">
// fetches one panel once (a saved run does not change) and draws it with uPlot. Its own
// init, not console.js's .chart: x is simulated time (or % of demand), not a wall clock,
// and the lines are steps, as `corral sim --plot` draws them.
(function () {
  "use strict";
  var colours = ["#2463eb", "#d0342c", "#1f9d55", "#c98a06", "#7c3aed", "#0891b2"];

  function draw(el, data) {
    var per = data.x_per || 1;
    var xs = data.x.map(function (v) { return v / per; });
    el.dataset.points = String(data.x.length);
    el.dataset.lines = String(data.series.length);
    var paths = data.stepped && uPlot.paths && uPlot.paths.stepped ? uPlot.paths.stepped({ align: 1 }) : undefined;
    var opts = {
      title: el.dataset.title || "",
      width: Math.max(300, el.clientWidth - 34 || 480),
      height: 220,
      scales: { x: { time: false } },
      series: [{ label: data.x_label + " (" + data.x_unit + ")", value: function (u, v) { return v == null ? "—" : v.toLocaleString(undefined, { maximumFractionDigits: 2 }); } }]
        .concat(data.series.map(function (s, i) {
          var line = { label: s.label + (s.unit ? " (" + s.unit + ")" : ""), stroke: colours[i % colours.length], width: 1.2, spanGaps: false };
          if (paths) line.paths = paths; else if (!data.stepped) line.points = { show: true };
          return line;
        })),
      axes: [{ label: data.x_label + " (" + data.x_unit + ")" }, { size: 56, label: data.y_label }],
    };
    if (!data.stepped) opts.series.slice(1).forEach(function (s) { s.points = { show: true, size: 6 }; });
    new uPlot(opts, [xs].concat(data.series.map(function (s) { return s.values; })), el);
    if (data.note) {
      var note = document.createElement("p");
      note.className = "sim-note";
      note.dataset.testid = "sim-note";
      note.textContent = data.note;
      el.appendChild(note);
    }
  }

  function init(el) {
    if (el.dataset.ready) return;
    el.dataset.ready = "1";
    fetch(el.dataset.series, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); })
      .then(function (data) { draw(el, data); })
      .catch(function (e) { el.classList.add("stale"); el.textContent = "could not load this panel (" + e.message + ")"; });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll(".sim-chart[data-series]").forEach(init);
  });
})();
