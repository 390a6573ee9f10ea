/* SMS+ pages: the list-performance chart, the recipient-list upload with a progress bar, and
   the confirmation dialogs. No inline handlers (the console's Content-Security-Policy allows
   scripts from this origin only); htmx swaps are followed through its events. */
(function () {
  "use strict";

  // the elements matching ``selector`` in ``root``, ``root`` itself included (htmx:load names the
  // swapped-in element itself)
  function within(root, selector) {
    if (!root || !root.querySelectorAll) return [];
    var found = Array.prototype.slice.call(root.querySelectorAll(selector));
    if (root.matches && root.matches(selector)) found.unshift(root);
    return found;
  }

  // --- list performance chart ------------------------------------------------------------------

  function drawCharts(root) {
    if (typeof window.Chart === "undefined") return;
    within(root, "canvas.sms-plus-chart").forEach(function (canvas) {
      if (!canvas.dataset.chart || !canvas.dataset.series) return;
      var data = JSON.parse(canvas.dataset.chart);
      var names = JSON.parse(canvas.dataset.series);
      var existing = window.Chart.getChart(canvas);
      if (existing) existing.destroy();
      new window.Chart(canvas, {
        type: "bar",
        data: {
          labels: data.labels,
          datasets: [
            {label: names.triggers, data: data.triggers, backgroundColor: "#9aa5b1"},
            {label: names.line_delivered, data: data.line_delivered, backgroundColor: "#06c755"},
            {label: names.sms_delivered, data: data.sms_delivered, backgroundColor: "#2f6fde"}
          ]
        },
        options: {
          responsive: true,
          maintainAspectRatio: false,
          animation: false,
          scales: {y: {beginAtZero: true, ticks: {precision: 0}}},
          plugins: {legend: {position: "bottom"}}
        }
      });
    });
  }

  function destroyCharts(root) {
    if (typeof window.Chart === "undefined") return;
    within(root, "canvas.sms-plus-chart").forEach(function (canvas) {
      var chart = window.Chart.getChart(canvas);
      if (chart) chart.destroy();
    });
  }

  // --- dialogs -----------------------------------------------------------------------------------

  document.addEventListener("click", function (event) {
    var opener = event.target.closest("[data-open-dialog]");
    if (opener) {
      var dialog = document.getElementById(opener.getAttribute("data-open-dialog"));
      if (dialog && typeof dialog.showModal === "function") dialog.showModal();
      return;
    }
    var closer = event.target.closest("[data-close-dialog]");
    if (closer) {
      var open = closer.closest("dialog");
      if (open) open.close();
    }
  });

  function openAutoDialogs(root) {
    within(root, "dialog[data-auto-open]").forEach(function (dialog) {
      if (!dialog.open && typeof dialog.showModal === "function") dialog.showModal();
    });
  }

  // --- upload with progress ------------------------------------------------------------------------

  function bindUpload(root) {
    var form = within(root, "#upload-form")[0];
    if (!form || form.dataset.bound) return;
    form.dataset.bound = "1";
    form.addEventListener("submit", function (event) {
      var input = form.querySelector("input[type=file]");
      var file = input && input.files && input.files[0];
      var box = form.querySelector(".upload-progress");
      var bar = box.querySelector("progress");
      var text = box.querySelector(".upload-progress-text");
      var limit = parseInt(form.dataset.maxBytes, 10);
      if (file && limit && file.size > limit) {
        event.preventDefault();
        box.hidden = false;
        bar.value = 0;
        text.textContent = form.dataset.tooLarge;
        return;
      }
      event.preventDefault();
      var button = form.querySelector("button[type=submit]");
      button.disabled = true;
      box.hidden = false;
      bar.value = 0;
      text.textContent = "0%";
      var xhr = new XMLHttpRequest();
      xhr.open("POST", form.action);
      xhr.setRequestHeader("X-Upload-Fragment", "1");
      var token = form.querySelector("input[name=csrf_token]");
      if (token) xhr.setRequestHeader("X-CSRF-Token", token.value);
      xhr.upload.addEventListener("progress", function (progress) {
        if (!progress.lengthComputable) return;
        var percent = Math.round(progress.loaded * 100 / progress.total);
        bar.value = percent;
        text.textContent = percent + "%";
      });
      xhr.addEventListener("load", function () {
        var location = xhr.getResponseHeader("X-Console-Location");
        if (xhr.status === 200 && location) {
          bar.value = 100;
          window.location.assign(location);
          return;
        }
        if (xhr.status === 400 && xhr.responseText) {
          var holder = document.createElement("div");
          holder.innerHTML = xhr.responseText;  // the server's escaped fragment: the form with its errors
          var fresh = holder.querySelector("#upload-form");
          if (fresh) {
            form.replaceWith(fresh);
            bindUpload(fresh);
            return;
          }
        }
        button.disabled = false;
        text.textContent = form.dataset.failed + " (" + xhr.status + ")";
      });
      xhr.addEventListener("error", function () {
        button.disabled = false;
        text.textContent = form.dataset.failed;
      });
      xhr.send(new FormData(form));
    });
  }

  function init(root) {
    drawCharts(root);
    bindUpload(root);
    openAutoDialogs(root);
  }

  document.addEventListener("DOMContentLoaded", function () { init(document); });
  document.addEventListener("htmx:beforeSwap", function (event) { destroyCharts(event.detail.target); });
  document.addEventListener("htmx:load", function (event) { init(event.detail.elt); });
})();
