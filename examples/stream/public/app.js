// The seed's public/javascripts/app.js against iorelay: the page watches one search term
// by being in that term's room of /stream. The backend (backend.py) pushes `item` events
// into the rooms that have watchers; the page never emits anything but $join and $leave.
//
// Pause leaves the room (the relay stops sending, and when nobody else watches the term
// the backend stops producing it, as the seed's stream.stop() did); resume joins again
// and asks for the room's latest items, so what came in meanwhile shows up (README).
(function () {
  "use strict";

  var $ = function (id) { return document.getElementById(id); };
  var socket = io("/stream");

  var term = null;      // the term the user asked for
  var paused = false;
  var inRoom = null;    // the room the relay has us in (after its ack)
  var seen = new Set(); // ids of the items in the list
  var chain = Promise.resolve();

  function limit() { return Number($("limit").value); }

  // What the room pattern in iorelay.toml accepts: lowercase, single spaces, 1–32 chars.
  function normalize(s) { return s.trim().toLowerCase().replace(/\s+/g, " ").slice(0, 32); }

  function status(text) { $("status").textContent = text; }

  function showState() {
    if (!socket.connected) return status("Disconnected, reconnecting…");
    if (!term) return status("Pick a term to watch.");
    status(paused ? "Paused" : "Watching “" + term + "” · live");
  }

  function ask(event, arg) {
    return socket.timeout(5000).emitWithAck(event, arg);
  }

  // Move the socket to the room it should be in (the term, or none while paused). One
  // move at a time, in order: max_rooms = 1 lets the relay hold one term per page.
  function sync() {
    chain = chain.then(async function () {
      var want = paused || !socket.connected ? null : term;
      if (inRoom === want) return;
      try {
        if (inRoom !== null) {
          await ask("$leave", inRoom);
          inRoom = null;
        }
        if (want === null) return;
        var reply = await ask("$join", { room: want, history: limit() });
        if (!reply || !reply.ok) {
          status("Cannot watch “" + want + "”: " + (reply && reply.error));
          return;
        }
        inRoom = want;
        // The room's latest items, oldest first; those already shown are skipped.
        (reply.events || []).forEach(function (e) { if (e.event === "item") add(e.args[0]); });
      } catch (err) {
        status("No answer from the relay: " + err.message);
        return;
      } finally {
        // The room the relay has confirmed, for whoever looks (a test, devtools).
        document.body.dataset.room = inRoom === null ? "" : inRoom;
      }
      showState();
    });
    return chain;
  }

  var COLORS = ["#337ab7", "#5cb85c", "#d9534f", "#8e44ad", "#f0ad4e", "#16a085", "#2c3e50"];
  function colorOf(s) {
    var h = 0;
    for (var i = 0; i < s.length; i++) h = (h * 31 + s.charCodeAt(i)) >>> 0;
    return COLORS[h % COLORS.length];
  }

  // Network input: only text nodes, never HTML.
  function add(item) {
    if (!item || typeof item !== "object" || typeof item.id !== "string") return;
    if (item.term !== term || seen.has(item.id)) return;
    seen.add(item.id);
    var li = document.createElement("li");
    li.className = "item";
    li.dataset.id = item.id;
    li.dataset.term = item.term;
    li.dataset.seq = String(item.seq);
    var avatar = document.createElement("div");
    avatar.className = "avatar";
    avatar.setAttribute("aria-hidden", "true");
    var name = String(item.name || "?");
    avatar.textContent = name.split(" ").map(function (w) { return w.charAt(0); }).join("").slice(0, 2);
    avatar.style.background = colorOf(name);
    var names = document.createElement("div");
    names.className = "names";
    var full = document.createElement("span");
    full.className = "full";
    full.textContent = name;
    var user = document.createElement("span");
    user.className = "user";
    user.textContent = "@" + String(item.screen_name || "");
    var when = document.createElement("time");
    var t = new Date(Number(item.time) || Date.now());
    when.dateTime = t.toISOString();
    when.textContent = t.toLocaleTimeString();
    names.append(full, user, when);
    var text = document.createElement("div");
    text.className = "text";
    text.textContent = String(item.text || "");
    li.append(avatar, names, text);
    // Newest first (by the backend's sequence number: a replayed item may be older than
    // what is shown), then keep the latest `limit`.
    var list = $("items");
    var seq = Number(item.seq);
    var after = Array.prototype.find.call(list.children, function (c) { return Number(c.dataset.seq) < seq; });
    list.insertBefore(li, after || null);
    trim();
  }

  function trim() {
    var list = $("items");
    while (list.children.length > limit()) {
      seen.delete(list.lastElementChild.dataset.id);
      list.lastElementChild.remove();
    }
  }

  function clear() {
    $("items").textContent = "";
    seen.clear();
  }

  socket.on("item", function (item) {
    // While paused nothing is rendered, even an item that was on its way before the
    // $leave was answered; items of a term the page just switched away from neither.
    if (paused) return;
    add(item);
  });

  socket.on("connect", function () {
    // A new connection is in no room: join again.
    inRoom = null;
    showState();
    sync();
  });
  socket.on("disconnect", function () { inRoom = null; showState(); });
  socket.on("connect_error", function (err) { status("Cannot connect: " + err.message); });

  $("search").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var next = normalize($("term").value);
    if (!next) return;
    $("term").value = next;
    if (next !== term) {
      term = next;
      clear();
    }
    paused = false;
    $("current_term").textContent = term;
    $("toggle").hidden = false;
    $("toggle").textContent = "Pause";
    $("toggle").setAttribute("aria-pressed", "false");
    showState();
    sync();
  });

  $("toggle").addEventListener("click", function () {
    paused = !paused;
    $("toggle").textContent = paused ? "Resume" : "Pause";
    $("toggle").setAttribute("aria-pressed", String(paused));
    showState();
    sync();
  });

  $("clear").addEventListener("click", clear);

  $("limit").addEventListener("input", function () {
    $("limit_value").textContent = $("limit").value;
    trim();
  });
})();
