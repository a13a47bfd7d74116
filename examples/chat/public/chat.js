// The book's chat.js (chapters 3–4) against iorelay: no server code, only the relay's
// $join / $presence and two namespaces multiplexed on one connection.
(function () {
  "use strict";

  var $ = function (id) { return document.getElementById(id); };
  var roomName = new URLSearchParams(location.search).get("room");
  var nickname = localStorage.getItem("nickname") || "";

  // The book's shared session: the relay names us on both namespaces from this cookie.
  function rememberNickname(nick) {
    localStorage.setItem("nickname", nick);
    document.cookie = "nickname=" + encodeURIComponent(nick) + "; path=/; SameSite=Lax";
  }

  function append(cls, text, name) {
    var log = $("messages");
    var div = document.createElement("div");
    div.className = cls;
    if (name) {
      var span = document.createElement("span");
      span.className = "name";
      span.textContent = name + ":";
      div.appendChild(span);
    }
    div.appendChild(document.createTextNode(text));
    var atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    log.appendChild(div);
    if (atBottom) log.scrollTop = log.scrollHeight;
  }

  function status(text) { $("status").textContent = text; }

  function users(n) { return n + (n === 1 ? " user" : " users"); }

  function start() {
    $("nameform").hidden = true;
    $("chat").hidden = false;
    $("room_title").textContent = "— " + roomName;
    document.title = "Awesome Chat — " + roomName;

    rememberNickname(nickname);
    // One connection, two namespaces: the client multiplexes them over the same Manager.
    var chatInfra = io("/chat_infra", { auth: { name: nickname } });
    var chatCom = io("/chat_com", { auth: { name: nickname } });

    // The relay's greet: our own auth payload, the book's name_set.
    chatInfra.on("name_set", function (data) {
      append("systemMessage", "Hello " + data.name);
      append("serverMessage", "Welcome to the most interesting chat room on earth!");
    });

    // Join the room from the URL in both namespaces, again after every reconnect.
    function joinRoom(socket, label) {
      socket.emit("$join", roomName, function (reply) {
        if (reply && reply.ok) {
          if (label === "infra") {
            status("In " + reply.room + " · " + users(reply.count));
            // Open rooms pages ask for the counts again (iorelay.toml, rooms_changed).
            socket.emit("rooms_changed");
          }
        } else {
          append("error", "Could not join " + roomName + ": " + (reply && reply.error));
        }
      });
    }
    chatInfra.on("connect", function () { joinRoom(chatInfra, "infra"); });
    chatCom.on("connect", function () { joinRoom(chatCom, "com"); });
    chatInfra.on("disconnect", function () { status("Disconnected, reconnecting…"); });
    chatInfra.on("connect_error", function (err) { status("Cannot connect: " + err.message); });

    // The book's user_entered, from the relay's presence events.
    chatInfra.on("$presence", function (p) {
      // "room": null is the namespace's connect/leave announcement, for the rooms page.
      if (!p || typeof p.room !== "string" || p.room !== roomName) return;
      var who = p.user || "Someone";
      var what = p.action === "join" ? " has joined the room." : " has left the room.";
      append("systemMessage", who + what);
      status("In " + p.room + " · " + users(p.count));
    });

    chatCom.on("message", function (msg) {
      if (!msg || typeof msg.message !== "string") return;
      var mine = msg.from === chatCom.id;
      append(mine ? "myMessage" : "userMessage", msg.message, msg.username || "?");
    });
    chatCom.on("$error", function (e) { append("error", "Not sent: " + e.error); });

    $("sendform").addEventListener("submit", function (ev) {
      ev.preventDefault();
      var text = $("message").value.trim();
      if (!text) return;
      // route "rooms" + echo: the others in the room get it, and so do we (our own copy).
      chatCom.emit("message", { username: nickname, message: text, from: chatCom.id }, function (reply) {
        if (!reply || !reply.ok) append("error", "Not sent: " + (reply && reply.error));
      });
      $("message").value = "";
      $("message").focus();
    });
    $("message").focus();
  }

  if (!roomName) {
    $("no_room").hidden = false;
    return;
  }
  if (nickname) {
    start();
  } else {
    $("nameform").hidden = false;
    $("nickname").focus();
    $("nameform").addEventListener("submit", function (ev) {
      ev.preventDefault();
      nickname = $("nickname").value.trim();
      if (!nickname) return;
      start();
    });
  }
})();
