// bridge console: confirm dangerous forms and poll a job's progress. No framework, no network beyond this origin.
"use strict";
document.addEventListener("submit", function (ev) {
  var msg = ev.target.getAttribute("data-confirm");
  if (msg && !window.confirm(msg)) { ev.preventDefault(); }
});
document.addEventListener("DOMContentLoaded", function () {
  var box = document.getElementById("job");
  if (!box || box.getAttribute("data-status") !== "running") { return; }
  var url = box.getAttribute("data-url");
  function poll() {
    fetch(url, {credentials: "same-origin"}).then(function (r) { return r.json(); }).then(function (job) {
      document.getElementById("job-status").textContent = job.status;
      var bar = document.getElementById("job-progress");
      bar.max = job.total || 1; bar.value = job.done;
      document.getElementById("job-count").textContent = job.done + " / " + job.total;
      if (job.summary && job.summary.resolved !== undefined) {
        document.getElementById("job-summary").textContent = "resolved " + job.summary.resolved +
          ", failed again " + job.summary.failed_again + ", busy files " + job.summary.busy;
      }
      if (job.status === "running") { setTimeout(poll, 500); }
      else { var c = document.getElementById("cancel"); if (c) { c.disabled = true; } }
    });
  }
  setTimeout(poll, 300);
});
