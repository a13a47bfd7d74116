// The instrumentation of the seed's user pages (user-script.js, and the Node Cellar
// "pageview" script): report each page view to the relay, on load and on every
// `hashchange` (a single-page app changes only the hash). The relay sends it on to the
// dashboard room with the visitor's address and the time (the namespace's `meta`); the
// page itself never hears of other pages' views.
(function () {
  "use strict";

  // Views emitted while the connection is down wait in the client's send buffer.
  var socket = io("/analytics");

  function report() {
    socket.emit("pageview", { url: location.href, title: document.title });
  }

  // Counted among the connected pages (the dashboard hears the join with the count).
  // Rooms do not outlive a connection, so again after every reconnect.
  socket.on("connect", function () {
    socket.emit("$join", "pages");
  });

  // Reported once per load (buffered until connected), not once per connection: a
  // reconnect is not a new view.
  report();
  window.addEventListener("hashchange", report);
})();
