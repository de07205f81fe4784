// Switchyard dashboard script (served from /ui/static/app.js; the pages
// work without it except the live tail). Builds every row with
// textContent: nothing from an event is ever parsed as HTML.
"use strict";

function tail() {
  var table = document.getElementById("tail");
  if (!table || !window.EventSource) return;
  var body = table.tBodies[0];
  var status = document.getElementById("tail-status");
  var select = document.getElementById("tail-endpoint");
  var source = null;
  var MAX_ROWS = 200;

  function cell(row, text, cls) {
    var td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    row.appendChild(td);
    return td;
  }

  function connect() {
    if (source) source.close();
    var url = table.dataset.stream;
    if (select && select.value) url += "?endpoint=" + encodeURIComponent(select.value);
    source = new EventSource(url);
    source.onopen = function () { status.textContent = "Live: new deliveries appear at the top."; };
    source.onerror = function () { status.textContent = "Disconnected; reconnecting…"; };
    source.addEventListener("lagged", function (e) {
      status.textContent = "Too many deliveries to show them all: " + e.data + " skipped.";
    });
    source.addEventListener("delivery", function (e) {
      var d;
      try { d = JSON.parse(e.data); } catch (err) { return; }
      var row = document.createElement("tr");
      cell(row, d.at, "mono");
      cell(row, d.endpoint);
      var o = cell(row, "");
      var badge = document.createElement("span");
      badge.className = "badge " + (d.outcome === "delivered" ? "ok" : d.outcome === "filtered" ? "muted" : d.outcome === "attempt_failed" ? "warn" : "bad");
      badge.textContent = d.outcome;
      o.appendChild(badge);
      cell(row, d.status ? "HTTP " + d.status : (d.error || "—"));
      cell(row, d.latencyMs.toFixed(1) + " ms");
      var ev = cell(row, "");
      var a = document.createElement("a");
      a.href = table.dataset.events + encodeURIComponent(d.event);
      a.textContent = d.event;
      a.className = "mono";
      ev.appendChild(a);
      body.insertBefore(row, body.firstChild);
      while (body.rows.length > MAX_ROWS) body.deleteRow(body.rows.length - 1);
    });
  }

  if (select) select.addEventListener("change", connect);
  connect();
}

document.addEventListener("DOMContentLoaded", tail);
