// The book's rooms.js against iorelay: $rooms on /chat_infra lists rooms with user counts,
// asked again whenever the counts may have changed, so that the list stays live.
(function () {
  "use strict";

  // The book's shared session: the relay names us on both namespaces from this cookie.
  function rememberNickname(nick) {
    localStorage.setItem("nickname", nick);
    document.cookie = "nickname=" + encodeURIComponent(nick) + "; path=/; SameSite=Lax";
  }

  var $ = function (id) { return document.getElementById(id); };
  var chatInfra = io("/chat_infra", { auth: { name: localStorage.getItem("nickname") || null } });

  function roomUrl(room) { return "index.html?room=" + encodeURIComponent(room); }

  function render(rooms) {
    var list = $("rooms_list");
    list.textContent = "";
    rooms.sort(function (a, b) { return b.count - a.count || (a.room < b.room ? -1 : 1); });
    rooms.forEach(function (r) {
      var li = document.createElement("li");
      var name = document.createElement("span");
      name.className = "room_name";
      name.textContent = r.room;
      var count = document.createElement("span");
      count.className = "room_users";
      count.textContent = "[ " + r.count + (r.count === 1 ? " User ]" : " Users ]");
      var link = document.createElement("a");
      link.href = roomUrl(r.room);
      link.textContent = "Join";
      link.setAttribute("aria-label", "Join " + r.room);
      li.append(name, count, link);
      list.appendChild(li);
    });
    $("status").textContent = rooms.length ? rooms.length + " room(s)" : "No rooms yet: start one.";
  }

  // One $rooms at a time, at most one every GAP_MS: a burst of changes (a class opening
  // the chat at once) costs a few asks, within the namespace's rate limit.
  var GAP_MS = 250;
  var busy = false;
  var again = false;
  function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    again = false;
    chatInfra.timeout(5000).emit("$rooms", function (err, reply) {
      if (err) $("status").textContent = "No answer from the relay.";
      else if (reply && reply.ok) render(reply.rooms);
      else $("status").textContent = "Could not list rooms: " + (reply && reply.error);
      setTimeout(function () {
        busy = false;
        if (again) refresh();
      }, GAP_MS);
    });
  }

  chatInfra.on("connect", refresh);
  // Live counts: someone connected or left (the relay's announcement, "room": null), or a
  // chat page joined a room (its rooms_changed). Either way the relay has the counts.
  chatInfra.on("$presence", function (p) { if (p && p.room === null) refresh(); });
  chatInfra.on("rooms_changed", refresh);
  chatInfra.on("connect_error", function (err) { $("status").textContent = "Cannot connect: " + err.message; });
  $("refresh").addEventListener("click", refresh);

  $("nickname").value = localStorage.getItem("nickname") || "";
  $("nameform").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var nick = $("nickname").value.trim();
    if (nick) rememberNickname(nick);
    $("status").textContent = nick ? "Nickname saved: " + nick : "";
  });

  $("new_room").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var nick = $("nickname").value.trim();
    if (nick) rememberNickname(nick);
    var room = $("new_room_name").value.trim();
    if (room) location.href = roomUrl(room);
  });
})();
