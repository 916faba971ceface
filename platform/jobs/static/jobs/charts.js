// The project's trade-off scatter: accuracy (or cosine) against latency, dot size = file size,
// the Pareto front in green. Data: jobs.dashboard.scatter, in the json_script the canvas
// names. The table under the chart lists the front for readers without scripts.
(function () {
  "use strict";

  function radius(sizeRatio) {
    return Math.max(3, Math.min(18, 3 + 15 * sizeRatio));
  }

  function drawPareto(canvas) {
    var source = document.getElementById(canvas.dataset.paretoChart);
    if (!source || !window.Chart) return;
    var data = JSON.parse(source.textContent);
    function points(onFront) {
      return data.points.filter(function (p) { return p.front === onFront; }).map(function (p) {
        return { x: p.latency_ratio, y: p.metric, r: radius(p.size_ratio), job: p };
      });
    }
    new window.Chart(canvas, {
      type: "bubble",
      data: {
        datasets: [
          { label: "Pareto front", data: points(true), backgroundColor: "rgba(46, 125, 50, 0.75)" },
          { label: "Other jobs", data: points(false), backgroundColor: "rgba(138, 138, 138, 0.5)" },
        ],
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
