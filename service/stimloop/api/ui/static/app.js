// The session page's live part: every second, the session's state and its job's stage and
// progress, from /ui/sessions/{id}/progress (the signed-in cookie goes with it). When the state
// changes, the page is loaded again to show what the new state brought. Text only (textContent).
(function () {
  "use strict";
  var box = document.getElementById("live");
  if (!box) { return; }
  var url = box.getAttribute("data-progress");
  var shown = box.getAttribute("data-state");
  function set(id, text) {
    var el = document.getElementById(id);
    if (el) { el.textContent = text; }
  }
  function tick() {
    fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (answer) {
        if (answer.status === 401) { window.location.assign("/ui/login"); return null; }
        return answer.json();
      })
      .then(function (now) {
        if (!now) { return; }
        if (now.state !== shown) { window.location.reload(); return; }
        set("state", now.state);
        set("state-words", now.words);
        var job = now.job;
        if (job) {
          set("job-stage", job.kind + ": " + job.state + (job.stage ? " \u2014 " + job.stage : ""));
          var bar = document.getElementById("job-progress");
          if (bar) { bar.value = job.progress; }
          set("job-percent", Math.round(job.progress * 100) + "%");
          set("job-message", job.message || "");
        }
        window.setTimeout(tick, 1000);
      })
      .catch(function () { window.setTimeout(tick, 2000); });
  }
  window.setTimeout(tick, 1000);
}());
