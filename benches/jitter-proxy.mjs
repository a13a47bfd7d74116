// The cutting TCP proxy of benches/jitter.mjs: one per client, on 127.0.0.1:0, in front of
// the server under test. It forwards bytes both ways untouched (WebSocket or polling, it
// does not look), and on `cut(ms)` destroys both sides of every connection it carries and
// resets every new connection for `ms`, so the client is really offline that long: its
// reconnection attempts fail with ECONNRESET until the outage is over.
//
// One listener per client (rather than one shared listener that would have to recognise
// clients in their requests) keeps the proxy blind to the protocol and lets it cut every
// connection of a polling client too (a long poll and a POST may be open at once).
import net from "node:net";

export class CutProxy {
  /** @param {number} upstreamPort the server's port on 127.0.0.1 */
  constructor(upstreamPort) {
    this.upstreamPort = upstreamPort;
    this.pairs = new Set();
    this.blockedUntil = 0;
    this.closed = false;
    // What happened, for the report: cuts made, connections reset during an outage.
    this.cuts = 0;
    this.refused = 0;
    this.server = net.createServer({ noDelay: true }, (socket) => this.accept(socket));
    // Errors on the listener itself (none expected on loopback) must not crash the run.
    this.server.on("error", () => {});
  }

  /** Listen on 127.0.0.1 at a port the kernel picks; resolves once listening. */
  listen() {
    return new Promise((resolve, reject) => {
      this.server.once("error", reject);
      this.server.listen(0, "127.0.0.1", () => {
        this.port = this.server.address().port;
        resolve();
      });
    });
  }

  accept(client) {
    client.on("error", () => {});
    if (this.closed || Date.now() < this.blockedUntil) {
      this.refused++;
      // An RST, as a host that is gone would be (after its route came back): the client
      // sees ECONNRESET at once instead of waiting for a timeout.
      client.resetAndDestroy();
      return;
    }
    const upstream = net.connect({ port: this.upstreamPort, host: "127.0.0.1", noDelay: true });
    upstream.on("error", () => {});
    const pair = { client, upstream };
    this.pairs.add(pair);
    // Either side closing closes the other: a dead server worker looks dead to the
    // client too, and a client that goes away leaves no half-open upstream behind.
    const end = () => {
      this.pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on("close", end);
    upstream.on("close", end);
    client.pipe(upstream);
    upstream.pipe(client);
  }

  /** Cut the client off: drop its connections now and refuse new ones for `ms`. */
  cut(ms) {
    this.cuts++;
    this.blockedUntil = Math.max(this.blockedUntil, Date.now() + ms);
    for (const { client, upstream } of this.pairs) {
      client.destroy();
      upstream.destroy();
    }
    this.pairs.clear();
  }

  close() {
    this.closed = true;
    for (const { client, upstream } of this.pairs) {
      client.destroy();
      upstream.destroy();
    }
    this.pairs.clear();
    this.server.close();
  }
}
