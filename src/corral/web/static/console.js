// corral console: the few behaviours htmx does not cover. No inline script anywhere (the
// pages' CSP forbids it), so everything hooks onto data- attributes here.
(function () {
  "use strict";

  // Charts: <div class="chart" data-src="URL" data-every="2" data-title="..."> fetches
  // {"x": [unix s], "series": [{"label", "unit", "values"}]} and redraws every `every` s.
  function initChart(el) {
    if (el.dataset.ready) return;
    el.dataset.ready = "1";
    var plot = null;
    var every = parseFloat(el.dataset.every || "2") * 1000;
    var colours = ["#2463eb", "#d0342c", "#1f9d55", "#c98a06", "#7c3aed", "#0891b2"];
    function draw(data) {
      var cols = [data.x].concat(data.series.map(function (s) { return s.values; }));
      el.dataset.points = String(data.x.length);
      el.dataset.last = data.series.length && data.x.length ? String(data.series[0].values[data.x.length - 1]) : "";
      if (plot && plot.series.length === cols.length) { plot.setData(cols); return; }
      if (plot) plot.destroy();
      var width = Math.max(300, el.clientWidth || 480);
      plot = new uPlot({
        title: el.dataset.title || "",
        width: width, height: 200,
        series: [{}].concat(data.series.map(function (s, i) {
          return { label: s.label + (s.unit ? " (" + s.unit + ")" : ""), stroke: colours[i % colours.length], width: 1.5, spanGaps: false };
        })),
        axes: [{}, { size: 56 }],
        scales: { x: { time: true } },
      }, cols, el);
    }
    function load() {
      if (!document.body.contains(el)) return;
      fetch(el.dataset.src, { credentials: "same-origin", headers: { "Accept": "application/json" } })
        .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); })
        .then(function (data) { draw(data); el.classList.remove("stale"); })
        .catch(function () { el.classList.add("stale"); })
        .finally(function () { if (every > 0) setTimeout(load, every); });
    }
    load();
  }

  // Logs: <pre class="log" data-stream="URL"> follows a server-sent event stream; each
  // message is text to append. Scrolls along unless the reader scrolled up.
  function initLog(el) {
    if (el.dataset.ready) return;
    el.dataset.ready = "1";
    var source = new EventSource(el.dataset.stream, { withCredentials: true });
    source.onmessage = function (e) {
      var follow = el.scrollTop + el.clientHeight >= el.scrollHeight - 24;
      el.appendChild(document.createTextNode(JSON.parse(e.data)));
      el.dataset.bytes = String((parseInt(el.dataset.bytes || "0", 10)) + e.data.length);
      if (follow) el.scrollTop = el.scrollHeight;
    };
    source.addEventListener("end", function (e) {
      el.dataset.ended = "1";
      var note = document.createElement("span");
      note.className = "muted";
      note.textContent = "\n— " + (e.data ? JSON.parse(e.data) : "end of log") + " —";
      el.appendChild(note);
      source.close();
    });
  }

  function initCopy(el) {
    if (el.dataset.ready) return;
    el.dataset.ready = "1";
    el.addEventListener("click", function () {
      var target = document.querySelector(el.dataset.copy);
      if (!target || !navigator.clipboard) return;
      navigator.clipboard.writeText(target.textContent.trim()).then(function () {
        var was = el.textContent; el.textContent = "copied"; setTimeout(function () { el.textContent = was; }, 1200);
      });
    });
  }

  function init(root) {
    (root.querySelectorAll ? root : document).querySelectorAll(".chart[data-src]").forEach(initChart);
    (root.querySelectorAll ? root : document).querySelectorAll("pre.log[data-stream]").forEach(initLog);
    (root.querySelectorAll ? root : document).querySelectorAll("button[data-copy]").forEach(initCopy);
  }

  document.addEventListener("DOMContentLoaded", function () { init(document); });
  document.addEventListener("htmx:load", function (e) { init(e.detail.elt); });
  // A session that ended (token revoked, cookie gone) while a fragment polled: go log in.
  document.addEventListener("htmx:responseError", function (e) {
    var xhr = e.detail.xhr;
    if (xhr && xhr.status === 401) window.location.href = xhr.getResponseHeader("X-Login") || "/ui/login";
  });
})();
