// The session page's live part: every second, the session's state, its job's stage and
// progress, and a phase being followed live (per channel its trials so far), from
// /ui/sessions/{id}/progress (the signed-in cookie goes with it). When the state changes, or a
// phase starts being followed, the page is loaded again to show what that brought. Text only
// (textContent).
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
        var rows = document.getElementById("following-rows");
        if (now.state !== shown || (now.following && !rows)) { window.location.reload(); return; }
        if (now.following && rows) { following(now.following, rows); }
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
  function following(live, rows) {
    set("following-summary", live.batches + " batches, " + live.rows + " trial rows");
    while (rows.firstChild) { rows.removeChild(rows.firstChild); }
    live.channels.forEach(function (c) {
      var tr = document.createElement("tr");
      var rate = c.mean_net_rate === null ? "\u2013" : c.mean_net_rate.toFixed(1);
      [c.channel, c.trials, c.stimuli, rate].forEach(function (value) {
        var td = document.createElement("td");
        td.textContent = String(value);
        tr.appendChild(td);
      });
      rows.appendChild(tr);
    });
  }
  window.setTimeout(tick, 1000);
}());
