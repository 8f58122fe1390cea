// convolens dashboard: draws the charts whose data the page carries in JSON blocks, and copy buttons.
// No inline script anywhere (the Content-Security-Policy forbids it); this file and uPlot are all.
(function () {
  "use strict";
  var palette = ["#2563eb", "#16a34a", "#f59e0b", "#dc2626", "#7c3aed", "#0891b2", "#db2777", "#65a30d"];

  // A day ("2026-12-05") or an hour ("2026-12-05T10:00:00"), in UTC.
  function seconds(label) {
    return Date.parse(label.length > 10 ? label + "Z" : label + "T00:00:00Z") / 1000;
  }

  function draw(el) {
    var block = document.getElementById("chart-" + el.dataset.chart);
    if (!block || typeof uPlot === "undefined") return;
    var spec = JSON.parse(block.textContent);
    if (!spec.labels.length) return;
    if (spec.stacked) spec = stack(spec);
    var xs = spec.labels.map(seconds);
    var data = [xs].concat(spec.series.map(function (s) { return s.values; }));
    var bars = spec.kind === "bars" && uPlot.paths && uPlot.paths.bars;
    var n = spec.stacked ? 1 : spec.series.length;  // stacked bars share one slot
    var series = [{}].concat(spec.series.map(function (s, i) {
      var colour = s.color || palette[i % palette.length];
      var line = { label: s.label, stroke: colour, width: 2, spanGaps: true, points: { show: xs.length < 40 } };
      if (s.points) {  // markers only (an alert's firings): no line, a large dot where there is a value
        line.width = 0;
        line.spanGaps = false;
        line.points = { show: true, size: 10, fill: colour, stroke: colour };
      }
      if (s.raw) line.value = function (u, v, si, idx) { return idx == null ? "--" : s.raw[idx]; };
      if (bars) {
        line.fill = colour + "cc";
        line.width = 0;
        line.paths = uPlot.paths.bars({ size: [0.8 / n, 60], align: 0, gap: 1 });
        line.points = { show: false };
      }
      return line;
    }));
    var opts = {
      width: Math.max(280, el.clientWidth),
      height: parseInt(el.dataset.height || "220", 10),
      series: series,
      // Day labels: ticks on whole days only (no "12pm" between two days).
      axes: [spec.labels[0].length > 10 ? {} : { incrs: [86400, 2 * 86400, 7 * 86400, 28 * 86400, 365 * 86400] }, { size: 56 }],
      scales: { x: { time: true } },
      legend: { live: true },
      cursor: { drag: { x: false, y: false } },
    };
    if (spec.range) opts.scales.y = { range: spec.range };  // a fixed scale, e.g. a rate's [0, 100]
    el.textContent = "";
    var plot = new uPlot(opts, data, el);
    window.addEventListener("resize", function () {
      plot.setSize({ width: Math.max(280, el.clientWidth), height: opts.height });
    });
  }

  // Stacked bars (the first series at the bottom): each series drawn from zero to its running total, the
  // tallest first so the shorter ones are painted over it; the legend shows each series' own value.
  function stack(spec) {
    var running = spec.labels.map(function () { return 0; });
    var series = spec.series.map(function (s) {
      running = running.map(function (sum, i) { return sum + (s.values[i] || 0); });
      return { label: s.label, color: s.color, values: running.slice(), raw: s.values };
    });
    return { labels: spec.labels, kind: spec.kind, stacked: true, series: series.reverse() };
  }

  function copyButtons() {
    document.querySelectorAll("button[data-copy]").forEach(function (button) {
      button.addEventListener("click", function () {
        var source = document.getElementById(button.dataset.copy);
        if (!source) return;
        var text = source.textContent.trim();
        var done = function () { button.textContent = "Copied"; };
        if (navigator.clipboard && window.isSecureContext) {
          navigator.clipboard.writeText(text).then(done, function () { select(source); });
        } else {
          select(source);
        }
      });
    });
  }

  function select(node) {
    var range = document.createRange();
    range.selectNodeContents(node);
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }

  // The transcript's translations: shown beside each original, hidden and shown again by one button.
  function translationToggles() {
    document.querySelectorAll("button[data-toggle-translation]").forEach(function (button) {
      var list = document.getElementById(button.dataset.toggleTranslation);
      if (!list) return;
      button.addEventListener("click", function () {
        var hidden = list.classList.toggle("translations-hidden");
        button.setAttribute("aria-pressed", hidden ? "false" : "true");
        button.textContent = hidden ? "Show translations" : "Hide translations";
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-chart]").forEach(draw);
    copyButtons();
    translationToggles();
  });
})();
