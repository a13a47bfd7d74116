// The seed's stats page (stat-script.js, dashboard.html), against the relay: the page
// views come from the "dashboard" room (the relay's fan-in of every page's `pageview`,
// with the sender's address and the time appended), the past ones from that room's
// history, and the number of connected pages from `$presence` on the rooms "pages" and
// "dashboard".
(function () {
  "use strict";

  var $ = function (id) { return document.getElementById(id); };
  var HISTORY = 200; // past views asked for on load; the room keeps up to 500
  var MAX_ROWS = 1000; // the table drops its oldest rows past this

  var socket = io("/analytics");
  var seen = new Set(); // views already shown: a live one may also be in the history
  var waiting = null; // live views that arrived before the history, while joining
  var members = { pages: 0, dashboard: 0 };
  var views = 0;

  function status(text) { $("status").textContent = text; }

  // Everything a page sends is untrusted: only strings of sane length are shown, and
  // only as text.
  function text(value, max) {
    return typeof value === "string" ? value.slice(0, max) : "";
  }

  function showCount() {
    // Dashboards are in "pages" too (to hear its $presence): they are not pages. The
    // seed subtracted its one stats window the same way.
    $("connections").textContent = String(Math.max(0, members.pages - members.dashboard));
  }

  /** Add one view: `view` is what the page sent, `meta` what the relay appended. */
  function addView(view, meta) {
    if (!view || typeof view !== "object" || !meta || typeof meta !== "object") return;
    var url = text(view.url, 2000);
    if (!url) return;
    var key = text(meta.id, 64) + " " + meta.time + " " + url;
    if (seen.has(key)) return;
    seen.add(key);

    var time = new Date(typeof meta.time === "number" ? meta.time : NaN);
    var row = document.createElement("tr");
    var when = document.createElement("time");
    if (!isNaN(time)) {
      when.dateTime = time.toISOString();
      when.textContent = time.toLocaleTimeString();
      when.title = time.toString();
    }
    var cells = [when, url, text(meta.ip, 64) || "unknown", text(view.title, 200)];
    cells.forEach(function (content) {
      var td = document.createElement("td");
      if (typeof content === "string") td.textContent = content;
      else td.appendChild(content);
      row.appendChild(td);
    });
    row.className = "view";
    // Newest first.
    var body = $("pageviews");
    body.insertBefore(row, body.firstChild);
    while (body.rows.length > MAX_ROWS) body.deleteRow(body.rows.length - 1);
    views += 1;
    $("views").textContent = String(views);
    $("empty").hidden = true;
  }

  socket.on("pageview", function (view, meta) {
    if (waiting) waiting.push([view, meta]);
    else addView(view, meta);
  });

  socket.on("$presence", function (p) {
    if (p && (p.room === "pages" || p.room === "dashboard") && typeof p.count === "number") {
      members[p.room] = p.count;
      showCount();
    }
  });

  socket.on("connect", function () {
    status("Connected, loading past views…");
    waiting = [];
    // The room's past views come with the join (oldest first), so a refreshed dashboard
    // loses nothing; then the pages room, whose count (and $presence) is the live
    // number of connected pages.
    socket.emit("$join", { room: "dashboard", history: HISTORY }, function (reply) {
      if (!reply || !reply.ok) {
        status("Could not join the dashboard: " + (reply && reply.error));
        return;
      }
      members.dashboard = reply.count;
      (reply.events || []).forEach(function (e) {
        if (e && e.event === "pageview" && Array.isArray(e.args)) addView(e.args[0], e.args[1]);
      });
      var early = waiting;
      waiting = null;
      early.forEach(function (v) { addView(v[0], v[1]); });
      socket.emit("$join", "pages", function (r) {
        if (!r || !r.ok) {
          status("Could not count the pages: " + (r && r.error));
          return;
        }
        members.pages = r.count;
        showCount();
        status("Live");
      });
    });
  });

  socket.on("connect_error", function (err) { status("Cannot connect: " + err.message); });
  socket.on("disconnect", function () {
    status("Disconnected, reconnecting…");
    $("connections").textContent = "–";
  });
})();
