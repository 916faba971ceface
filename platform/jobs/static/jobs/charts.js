// The project's trade-off scatter: accuracy (or cosine) against latency, dot size = file size,
// the recommended points (the Pareto front of the jobs at or above their quality floor) in
// green, jobs below their floor in red. Data: jobs.dashboard.scatter, in the json_script the
// canvas names. The table under the chart lists the front for readers without scripts.
(function () {
  "use strict";

  function radius(sizeRatio) {
    return Math.max(3, Math.min(18, 3 + 15 * sizeRatio));
  }

  function kindOf(p) {
    if (p.recommended === false) return "below";
    return p.front ? "front" : "other";
  }

  function drawPareto(canvas) {
    var source = document.getElementById(canvas.dataset.paretoChart);
    if (!source || !window.Chart) return;
    var data = JSON.parse(source.textContent);
    function points(kind) {
      return data.points.filter(function (p) { return kindOf(p) === kind; }).map(function (p) {
        return { x: p.latency_ratio, y: p.metric, r: radius(p.size_ratio), job: p };
      });
    }
    var datasets = [
      { label: "Recommended: Pareto front, quality floor met", data: points("front"),
        backgroundColor: "rgba(46, 125, 50, 0.75)" },
      { label: "Other jobs", data: points("other"), backgroundColor: "rgba(138, 138, 138, 0.5)" },
      { label: "Not recommended: below the quality floor", data: points("below"),
        backgroundColor: "rgba(198, 40, 40, 0.25)", borderColor: "rgb(198, 40, 40)", borderWidth: 2 },
    ];
    new window.Chart(canvas, {
      type: "bubble",
      data: {
        // An empty kind gets no legend entry (most charts have no job below the floor).
        datasets: datasets.filter(function (d, i) { return i === 0 || d.data.length; }),
      },
      options: {
        animation: false,
        scales: {
          x: { title: { display: true, text: "Latency p50, compressed ÷ original (left is faster)" } },
          y: { title: { display: true, text: data.metric_label } },
        },
        plugins: {
          tooltip: { callbacks: { label: function (ctx) {
            var p = ctx.raw.job;
            return p.label + ": " + p.metric + ", latency " + p.latency_ratio + "×, size " + p.size_ratio + "×";
          } } },
        },
        onClick: function (_event, elements, chart) {
          if (!elements.length) return;
          var el = elements[0];
          window.location.href = chart.data.datasets[el.datasetIndex].data[el.index].job.url;
        },
      },
    });
  }

  function drawAll() {
    document.querySelectorAll("canvas[data-pareto-chart]").forEach(function (canvas) {
      if (canvas.dataset.drawn) return;
      canvas.dataset.drawn = "1";
      drawPareto(canvas);
    });
  }
  document.addEventListener("DOMContentLoaded", drawAll);
})();
