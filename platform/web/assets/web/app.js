// Small progressive enhancements; every page works without them.
(function () {
  "use strict";

  // Drag-and-drop onto the upload drop zone fills its file input.
  document.addEventListener("dragover", function (event) {
    var zone = event.target.closest && event.target.closest("[data-dropzone]");
    if (!zone) return;
    event.preventDefault();
    zone.classList.add("dragover");
  });
  document.addEventListener("dragleave", function (event) {
    var zone = event.target.closest && event.target.closest("[data-dropzone]");
    if (zone) zone.classList.remove("dragover");
  });
  document.addEventListener("drop", function (event) {
    var zone = event.target.closest && event.target.closest("[data-dropzone]");
    if (!zone) return;
    event.preventDefault();
    zone.classList.remove("dragover");
    var input = zone.querySelector("input[type=file]");
    if (input && event.dataTransfer.files.length) {
      input.files = event.dataTransfer.files;
      input.dispatchEvent(new Event("change", { bubbles: true }));  // as if chosen
    }
  });

  // Upload progress for htmx form posts.
  document.addEventListener("htmx:xhr:progress", function (event) {
    var form = event.target.closest && event.target.closest("form");
    var bar = form && form.querySelector(".upload-progress");
    if (!bar || !event.detail.lengthComputable) return;
    bar.hidden = false;
    bar.value = Math.round((event.detail.loaded / event.detail.total) * 100);
  });

  // Results chart: compressed as % of original.
  function drawComparison(canvas) {
    var source = document.getElementById("comparison-data");
    if (!source) return;
    var data = JSON.parse(source.textContent);
    new window.Chart(canvas, {
      type: "bar",
      data: {
        labels: data.labels,
        datasets: [{ label: "Compressed, % of original", data: data.percent,
          backgroundColor: data.percent.map(function (v) {
            return v < 99 ? "#2e7d32" : v > 101 ? "#c62828" : "#8a8a8a";  // ±1%: unchanged
          }) }],
      },
      options: { indexAxis: "y", animation: false,
        scales: { x: { beginAtZero: true, title: { display: true, text: "% of original (100 = unchanged)" } } },
        plugins: { legend: { display: false } } },
    });
  }

  // Training curves (distill/finetune): loss on the left axis, validation metric on the right.
  // The canvas names the json_script that holds its data (jobs.presenters.training_chart).
  function drawTraining(canvas) {
    var source = document.getElementById(canvas.dataset.trainingChart);
    if (!source) return;
    var data = JSON.parse(source.textContent);
    var best = data.labels.indexOf(data.best_epoch);
    new window.Chart(canvas, {
      type: "line",
      data: {
        labels: data.labels,
        datasets: [
          { label: "Training loss", data: data.loss, yAxisID: "loss", borderColor: "#1565c0",
            backgroundColor: "#1565c0", spanGaps: true, tension: 0.2 },
          { label: data.metric_label, data: data.metric, yAxisID: "metric", borderColor: "#2e7d32",
            backgroundColor: "#2e7d32", tension: 0.2,
            // The kept epoch is drawn larger.
            pointRadius: data.metric.map(function (_, i) { return i === best ? 6 : 3; }) },
        ],
      },
      options: { animation: false, interaction: { mode: "index", intersect: false },
        scales: {
          x: { title: { display: true, text: "Epoch (0 = before training)" } },
          loss: { position: "left", title: { display: true, text: "Training loss" } },
          metric: { position: "right", grid: { drawOnChartArea: false },
            title: { display: true, text: data.metric_label } },
        } },
    });
  }

  // Draws every chart not drawn yet. The job status region is replaced every 2 s by htmx, so
  // this runs after each swap; charts whose canvas left the page are destroyed first, or
  // Chart.js would keep them (and their data) alive for as long as the page is open.
  function drawCharts() {
    if (!window.Chart) return;
    Object.values(window.Chart.instances).forEach(function (chart) {
      if (!chart.canvas.isConnected) chart.destroy();
    });
    document.querySelectorAll("#comparison-chart, canvas[data-training-chart]").forEach(function (canvas) {
      if (canvas.dataset.drawn) return;
      canvas.dataset.drawn = "1";
      if (canvas.id === "comparison-chart") drawComparison(canvas);
      else drawTraining(canvas);
    });
  }
  document.addEventListener("DOMContentLoaded", drawCharts);
  document.addEventListener("htmx:load", drawCharts);
  document.addEventListener("htmx:afterSwap", drawCharts);
})();
