// The session page's live part. Every second: the session's state, the job it waits on, every
// job of the session (state, place in the queue, time, estimate, a Cancel button where this
// sign-in may cancel) and a phase being followed live, from /ui/sessions/{id}/progress (the
// signed-in cookie goes with it). When the state changes, a job ends or a phase starts being
// followed, the page is loaded again to show what that brought (not while a file is chosen
// or being sent). The upload forms send the chosen file as the request's body, with its
// progress. Text only (textContent), never HTML.
(function () {
  "use strict";
  var box = document.getElementById("live");
  if (!box) { return; }
  var url = box.getAttribute("data-progress");
  var shown = box.getAttribute("data-state");
  var session = document.getElementById("jobs").getAttribute("data-session");
  var ENDED = ["finished", "failed", "canceled", "stopped"];
  var seenJobs = {};  // job id -> state, as the page showed it and then at the last poll
  Array.prototype.forEach.call(document.querySelectorAll("#jobs-rows tr[data-job]"), function (tr) {
    seenJobs[tr.getAttribute("data-job")] = tr.getAttribute("data-state");
  });
  var sending = false;
  var leaving = false;  // a form (Cancel, Fit again, maps) is being sent: the page it answers comes next
  document.addEventListener("submit", function (e) { if (!e.defaultPrevented) { leaving = true; } });

  function set(id, text) {
    var el = document.getElementById(id);
    if (el) { el.textContent = text; }
  }
  function busy() {  // a file chosen or on its way, or a form sent: a reload would lose it
    if (sending || leaving) { return true; }
    var inputs = document.querySelectorAll("form.upload input[type=file]");
    for (var k = 0; k < inputs.length; k += 1) {
      if (inputs[k].files && inputs[k].files.length) { return true; }
    }
    return false;
  }
  function reload() {
    if (!busy()) { window.location.reload(); return true; }
    return false;
  }
  function seconds(v) {
    if (v === null || v === undefined) { return "\u2013"; }
    return v < 90 ? Math.max(1, Math.round(v)) + " s" : Math.round(v / 60) + " min";
  }
  function cell(tr, text, className) {
    var td = document.createElement("td");
    td.textContent = text;
    if (className) { td.className = className; }
    tr.appendChild(td);
    return td;
  }
  function fill(tr, j) {  // a job's row: its text cells (the seventh holds its button)
    var estimate = "\u2013";
    if (j.state === "queued" && j.estimate_s !== null) {
      estimate = "starts in about " + seconds(j.estimate_s);
    } else if (j.remaining_s !== null) {
      estimate = "about " + seconds(j.remaining_s) + " left";
    }
    var texts = [j.what, j.state, j.ahead === null ? "\u2013" : j.ahead + " ahead",
      seconds(j.elapsed_s), estimate, j.failure || j.message || ""];
    tr.className = "job-" + j.state;
    tr.setAttribute("data-job", j.id);
    tr.setAttribute("data-state", j.state);
    texts.forEach(function (text, k) { tr.children[k].textContent = text; });
    tr.children[5].className = j.failure ? "bad" : "";
  }
  function jobs(list) {
    var rows = document.getElementById("jobs-rows");
    if (!rows) { return false; }
    var ended = false;
    var now = {};
    list.forEach(function (j) {
      now[j.id] = j.state;
      if (ENDED.indexOf(j.state) >= 0 &&
          (seenJobs[j.id] === undefined || ENDED.indexOf(seenJobs[j.id]) < 0)) { ended = true; }
    });
    seenJobs = now;
    // the same jobs with the same buttons: their cells are updated in place, so that a
    // Cancel button never moves under the pointer; otherwise the rows are built again
    var shape = list.map(function (j) { return j.id + (j.cancellable ? "+" : "-"); }).join(",");
    if (rows.getAttribute("data-shape") === shape) {
      list.forEach(function (j, k) { fill(rows.children[k], j); });
      return ended;
    }
    rows.setAttribute("data-shape", shape);
    while (rows.firstChild) { rows.removeChild(rows.firstChild); }
    list.forEach(function (j) {
      var tr = document.createElement("tr");
      for (var k = 0; k < 7; k += 1) { cell(tr, ""); }
      fill(tr, j);
      if (j.cancellable) {
        var form = document.createElement("form");
        form.method = "post";
        form.action = "/ui/jobs/" + encodeURIComponent(j.id) + "/cancel";
        var hidden = document.createElement("input");
        hidden.type = "hidden";
        hidden.name = "session";
        hidden.value = session;
        var button = document.createElement("button");
        button.type = "submit";
        button.className = "cancel";
        button.textContent = "Cancel";
        form.appendChild(hidden);
        form.appendChild(button);
        tr.children[6].appendChild(form);
      }
      rows.appendChild(tr);
    });
    return ended;
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
        var ended = jobs(now.jobs || []);
        if ((now.state !== shown || ended || (now.following && !rows)) && reload()) { return; }
        if (now.following && rows) { following(now.following, rows); }
        set("state", now.state);
        set("state-words", now.words);
        var job = now.job;
        if (job && job.state !== "failed") {
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
        cell(tr, String(value));
      });
      rows.appendChild(tr);
    });
  }
  // a datetime-local value (this computer's wall time) with this computer's UTC offset then
  function withOffset(value) {
    var local = value.length === 16 ? value + ":00" : value;
    var minutes = -new Date(local).getTimezoneOffset();
    var sign = minutes < 0 ? "-" : "+";
    var abs = Math.abs(minutes);
    var pad = function (n) { return (n < 10 ? "0" : "") + n; };
    return local + sign + pad(Math.floor(abs / 60)) + ":" + pad(abs % 60);
  }
  function upload(form) {
    var input = form.querySelector("input[type=file]");
    var result = form.querySelector(".upload-result");
    var bar = form.querySelector("progress");
    var replace = form.querySelector("input[name=replace]");
    if (!input.files.length) { return; }
    var file = input.files[0];
    var started = form.querySelector("input[name=recording_start]");
    var target = form.getAttribute("data-url") + "?name=" + encodeURIComponent(file.name) +
      (replace && replace.checked ? "&replace=true" : "") +
      (started && started.value ? "&recording_start=" + encodeURIComponent(withOffset(started.value)) : "");
    var request = new XMLHttpRequest();
    sending = true;
    bar.hidden = false;
    bar.value = 0;
    result.className = "upload-result";
    result.textContent = "sending " + file.name + "\u2026";
    request.upload.onprogress = function (e) {
      if (e.lengthComputable) {
        bar.value = e.loaded / e.total;
        result.textContent = "sending " + file.name + ": " + Math.round(100 * e.loaded / e.total) +
          "% of " + (e.total / 1048576).toFixed(1) + " MiB";
      }
    };
    request.upload.onload = function () { result.textContent = "checking " + file.name + "\u2026"; };
    request.onload = function () {
      var answer = {};
      try { answer = JSON.parse(request.responseText); } catch (err) { answer = {}; }
      if (request.status === 202) {
        result.textContent = file.name + ": " + (answer.status || "received") +
          (answer.job ? " (" + answer.job.kind + " job " + answer.job.state + ")" : "");
        input.value = "";
        window.setTimeout(function () { sending = false; window.location.reload(); }, 3000);
      } else {
        sending = false;
        result.className = "upload-result bad";
        result.textContent = (answer.title ? answer.title + ": " : "Refused: ") +
          (answer.detail || request.statusText || ("HTTP " + request.status));
        bar.hidden = true;
      }
    };
    request.onerror = function () {
      sending = false;
      result.className = "upload-result bad";
      result.textContent = "the server did not answer; nothing was stored: try again";
    };
    request.open("POST", target);
    request.setRequestHeader("Content-Type", "application/octet-stream");
    request.send(file);
  }
  Array.prototype.forEach.call(document.querySelectorAll("form.upload"), function (form) {
    form.addEventListener("submit", function (e) { e.preventDefault(); upload(form); });
  });
  window.setTimeout(tick, 1000);
}());
