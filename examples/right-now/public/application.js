// The seed's public/application.js against the relay: the welcome, everyone's messages
// (their own included), "someone connected / left" with the number of people here, and
// the backend's push every second. No server code: see ../iorelay.toml.
(function () {
  "use strict";

  var $ = function (id) { return document.getElementById(id); };
  var MAX_LINES = 500; // the log drops its oldest lines past this
  var socket = null;

  function line(cls, text, who) {
    var log = $("messages");
    var div = document.createElement("div");
    div.className = cls;
    if (who) {
      var span = document.createElement("span");
      span.className = "who";
      span.textContent = who + ":";
      div.appendChild(span);
      div.appendChild(document.createTextNode(" "));
    }
    div.appendChild(document.createTextNode(text));
    var atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    log.appendChild(div);
    while (log.childNodes.length > MAX_LINES) log.removeChild(log.firstChild);
    if (atBottom) log.scrollTop = log.scrollHeight;
  }

  function people(n) { return n + (n === 1 ? " person" : " people") + " here"; }
  function status(text) { $("status").textContent = text; }
  function str(value, max) { return typeof value === "string" ? value.slice(0, max) : ""; }

  function start(name) {
    $("nameform").hidden = true;
    $("room").hidden = false;
    socket = io({ auth: { name: name } });

    socket.on("connect", function () {
      // Into the room everyone is in: its answer is how many of us there are; from now
      // on $presence keeps the number (a socket is not told of its own arrival).
      socket.emit("$join", "everyone", function (reply) {
        if (reply && reply.ok) {
          status("Connected as " + name + " · " + people(reply.count));
          line("info", "You are connected (" + people(reply.count) + ").");
        } else {
          line("error", "Could not join: " + (reply && reply.error));
        }
      });
    });

    // Someone connected or left (a closed tab is a leave), with the new number.
    socket.on("$presence", function (p) {
      if (!p || p.room !== "everyone" || typeof p.count !== "number") return;
      var who = str(p.user, 40) || "Someone";
      line("presence", who + (p.action === "join" ? " connected" : " left") + " (" + people(p.count) + ").");
      status("Connected as " + name + " · " + people(p.count));
    });

    // One channel, as in the seed: the relay's welcome and the backend's pushes (no
    // metadata: they are the server's), and everyone's messages (the relay appends
    // {id, user, time} as the last argument).
    socket.on("message", function () {
      var args = Array.prototype.slice.call(arguments);
      var msg = args[0];
      if (!msg || typeof msg !== "object") return;
      if (args.length === 1) {
        var text = str(msg.text, 500);
        if (typeof msg.now === "number") {
          $("ticker").textContent = str(msg.user, 40) + ": " + text;
          $("ticker").dataset.n = String(msg.n);
        } else {
          line("server", text, str(msg.user, 40) || "server");
        }
        return;
      }
      var meta = args[args.length - 1] || {};
      var mine = meta.id === socket.id;
      line(mine ? "mine" : "theirs", str(msg.text, 500), (str(meta.user, 40) || "Someone") + (mine ? " (you)" : ""));
    });

    socket.on("$error", function (e) {
      line("error", "Not sent: " + str(e && e.error, 200));
    });
    socket.on("connect_error", function (err) { status("Cannot connect: " + err.message); });
    socket.on("disconnect", function () { status("Disconnected, reconnecting…"); });

    $("sendform").addEventListener("submit", function (event) {
      event.preventDefault();
      var box = $("message");
      var text = box.value.trim();
      if (!text) return;
      socket.emit("message", { text: text });
      box.value = "";
    });
  }

  $("nameform").addEventListener("submit", function (event) {
    event.preventDefault();
    var name = $("name").value.trim();
    if (!name) return;
    localStorage.setItem("name", name);
    start(name);
    $("message").focus();
  });
  $("name").value = localStorage.getItem("name") || "";
})();
