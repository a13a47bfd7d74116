// Certificates made at test time with the `openssl` CLI, in a fresh temp dir (no key is
// ever committed): a CA, a server certificate it signs for 127.0.0.1 (subjectAltName
// IP:127.0.0.1, as a TLS client checks it), a client certificate it signs (mutual TLS),
// and a second CA that signed nothing (a client that trusts it must refuse the server).
// ECDSA P-256 keys: quick to make. The daemon under test runs as `nobody` when the tests
// run as root, so the dir and every file, keys too, are readable by all.
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, chmodSync, writeFileSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** Why certificates cannot be made here, or null when `openssl` runs. */
export function opensslMissing() {
  const out = spawnSync("openssl", ["version"], { encoding: "utf8", timeout: 10000 });
  return out.error || out.status !== 0 ? `the openssl CLI does not run: ${out.error?.message ?? out.stderr}` : null;
}

function openssl(dir, ...args) {
  execFileSync("openssl", args, { cwd: dir, stdio: ["ignore", "ignore", "pipe"], timeout: 30000 });
}

const EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];

function makeCa(dir, name, cn) {
  openssl(dir, "req", "-x509", ...EC, "-keyout", `${name}.key`, "-out", `${name}.pem`, "-days", "2",
    "-subj", `/CN=${cn}`,
    "-addext", "basicConstraints=critical,CA:TRUE",
    "-addext", "keyUsage=critical,keyCertSign,cRLSign");
}

function makeLeaf(dir, name, cn, ext) {
  writeFileSync(join(dir, `${name}.ext`), ext);
  openssl(dir, "req", "-new", ...EC, "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", `/CN=${cn}`);
  openssl(dir, "x509", "-req", "-in", `${name}.csr`, "-CA", "ca.pem", "-CAkey", "ca.key",
    "-CAcreateserial", "-out", `${name}.pem`, "-days", "2", "-extfile", `${name}.ext`);
}

/**
 * Make the certificates. Returns { dir, ca, server: { cert, key }, client: { cert,
 * key }, otherCa, remove() } (paths to PEM files).
 */
export function makeCertificates() {
  const dir = mkdtempSync(join(tmpdir(), "iorelay-certs-"));
  try {
    makeCa(dir, "ca", "iorelay test CA");
    makeCa(dir, "other-ca", "iorelay test CA that signed nothing");
    makeLeaf(dir, "server", "127.0.0.1",
      "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n");
    makeLeaf(dir, "client", "iorelay test node",
      "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n");
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`openssl could not make the test certificates: ${err.stderr ?? err.message}`);
  }
  chmodSync(dir, 0o755);
  for (const f of readdirSync(dir)) chmodSync(join(dir, f), 0o644);
  return {
    dir,
    ca: join(dir, "ca.pem"),
    otherCa: join(dir, "other-ca.pem"),
    server: { cert: join(dir, "server.pem"), key: join(dir, "server.key") },
    client: { cert: join(dir, "client.pem"), key: join(dir, "client.key") },
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}
