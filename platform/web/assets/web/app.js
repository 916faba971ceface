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
    if (input && event.dataTransfer.files.length) input.files = event.dataTransfer.files;
  });

  // Upload progress for htmx form posts.
  document.addEventListener("htmx:xhr:progress", function (event) {
    var form = event.target.closest && event.target.closest("form");
    var bar = form && form.querySelector(".upload-progress");
    if (!bar || !event.detail.lengthComputable) return;
    bar.hidden = false;
    bar.value = Math.round((event.detail.loaded / event.detail.total) * 100);
  });

  // Results chart: compressed as % of original (drawn after every htmx swap too).
  function drawChart() {
    var canvas = document.getElementById("comparison-chart");
    var source = document.getElementById("comparison-data");
    if (!canvas || !source || !window.Chart || canvas.dataset.drawn) return;
    var data = JSON.parse(source.textContent);
    canvas.dataset.drawn = "1";
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
  document.addEventListener("DOMContentLoaded", drawChart);
  document.addEventListener("htmx:afterSettle", drawChart);
})();
