'use strict';
// Starts an Ordo broker for one test and stops it with SIGTERM, insisting on a
// clean exit (status 0) within a few seconds.
//
// The port file's first line is the plain address (host, port); with TLS on,
// its second line is the amqps address (tlsHost, tlsPort). reload() sends
// SIGHUP and waits for the broker to say it re-read its config. makePki(dir)
// makes the TLS tests' certificates with interop-tests/pki.sh.

const { spawn, execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const REPO = path.resolve(__dirname, '..', '..', '..');
const START_TIMEOUT_MS = 15000;
const STOP_TIMEOUT_MS = 5000;
const RELOAD_TIMEOUT_MS = 10000;
const PKI_SCRIPT = path.join(REPO, 'interop-tests', 'pki.sh');

// What the broker logs once a SIGHUP reload was applied (src/server.rs,
// Reloader::apply), and when it was refused (src/main.rs, reload_on_hangup).
const RELOADED = /configuration reloaded/;
const RELOAD_REFUSED = /reload refused/;

const DEFAULT_CONFIG = `[listener]
address = "127.0.0.1"
port = 0

[sasl]
allow-anonymous = true

[logging]
level = "info"
format = "text"
`;

function ordoBin() {
  const bin = process.env.ORDO_BIN
    ? path.resolve(process.env.ORDO_BIN)
    : path.join(REPO, 'target', 'debug', 'ordo');
  try {
    fs.accessSync(bin, fs.constants.X_OK);
  } catch {
    throw new Error(`Ordo binary not found at ${bin}: run \`cargo build\` or set ORDO_BIN`);
  }
  return bin;
}

function hashPassword(password) {
  return execFileSync(ordoBin(), ['hash-password'], { input: password + '\n' }).toString().trim();
}

// Runs interop-tests/pki.sh in `dir` (see that script for the files it
// makes); returns `dir`.
function makePki(dir) {
  execFileSync('bash', [PKI_SCRIPT, dir], { stdio: ['ignore', 'pipe', 'pipe'], timeout: 120000 });
  return dir;
}

// "HOST:PORT" (IPv6 hosts in brackets) as [host, port].
function hostPort(address) {
  const i = address.lastIndexOf(':');
  return [address.slice(0, i).replace(/^\[|\]$/g, ''), Number(address.slice(i + 1))];
}

function brokerEnv() {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith('ORDO_') && k !== 'RUST_LOG') env[k] = v;
  }
  if (process.env.ORDO_TEST_LOG) env.RUST_LOG = process.env.ORDO_TEST_LOG;
  return env;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

class Broker {
  // `files` ({name: source path}) are copied into the broker's directory, its
  // working directory, before it starts (e.g. the certificates a config names
  // by relative path).
  constructor(config = DEFAULT_CONFIG, { files = {} } = {}) {
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ordo-rhea-'));
    this.configFile = path.join(this.dir, 'ordo.toml');
    fs.writeFileSync(this.configFile, config);
    for (const [name, source] of Object.entries(files)) {
      fs.copyFileSync(source, path.join(this.dir, name));
    }
    this.portFile = path.join(this.dir, 'port');
    this.logFile = path.join(this.dir, 'broker.log');
    this.exited = null; // {code, signal} once the process ended
    this.tlsAddress = null; // the amqps address (port file's second line)
  }

  async start() {
    // A broker killed with SIGKILL leaves its port file behind.
    fs.rmSync(this.portFile, { force: true });
    this.exited = null;
    const log = fs.openSync(this.logFile, 'a');
    this.proc = spawn(ordoBin(), [
      'run', '--listen', '127.0.0.1:0', '--port-file', this.portFile,
      '--data-dir', path.join(this.dir, 'data'), '--config', this.configFile,
    ], { cwd: this.dir, env: brokerEnv(), stdio: ['ignore', log, log] });
    fs.closeSync(log);
    this.exitPromise = new Promise((resolve) => {
      this.proc.on('exit', (code, signal) => {
        this.exited = { code, signal };
        resolve(this.exited);
      });
    });
    const deadline = Date.now() + START_TIMEOUT_MS;
    for (;;) {
      if (fs.existsSync(this.portFile)) {
        // Written whole (renamed into place): plain address, then the amqps
        // one when TLS is on.
        const lines = fs.readFileSync(this.portFile, 'utf8').split('\n')
          .map((l) => l.trim()).filter((l) => l);
        if (lines.length) {
          this.address = lines[0];
          [this.host, this.port] = hostPort(lines[0]);
          this.tlsAddress = lines[1] || null;
          if (this.tlsAddress) [this.tlsHost, this.tlsPort] = hostPort(this.tlsAddress);
          else this.tlsHost = this.tlsPort = undefined;
          return this;
        }
      }
      if (this.exited) {
        throw new Error(`broker exited (${JSON.stringify(this.exited)}) before listening:\n${this.log()}`);
      }
      if (Date.now() > deadline) {
        this.proc.kill('SIGKILL');
        throw new Error(`broker wrote no port file within ${START_TIMEOUT_MS} ms:\n${this.log()}`);
      }
      await sleep(10);
    }
  }

  log() {
    try {
      return fs.readFileSync(this.logFile, 'utf8');
    } catch {
      return '';
    }
  }

  // Waits until a line of the broker's log matches `re`.
  async waitForLog(re, timeoutMs = 10000) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const line = this.log().split('\n').find((l) => re.test(l));
      if (line) return line;
      if (Date.now() > deadline) {
        throw new Error(`broker logged nothing matching ${re} within ${timeoutMs} ms:\n${this.log()}`);
      }
      await sleep(10);
    }
  }

  // Sends SIGHUP and waits for the broker's answer, a log line written after
  // the signal: `configuration reloaded` (throws if it logs `reload refused`
  // instead) or, with {refused: true}, `reload refused`. Resolves with it.
  async reload({ refused = false, timeoutMs = RELOAD_TIMEOUT_MS } = {}) {
    if (this.exited) throw new Error(`broker is not running (${JSON.stringify(this.exited)})`);
    const seen = this.log().length; // only what is logged after the signal counts
    this.proc.kill('SIGHUP');
    const [want, other] = refused ? [RELOAD_REFUSED, RELOADED] : [RELOADED, RELOAD_REFUSED];
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      for (const line of this.log().slice(seen).split('\n')) {
        if (want.test(line)) return line;
        if (other.test(line)) {
          throw new Error(`after SIGHUP the broker logged ${JSON.stringify(line)}, expected ${want}:\n${this.log()}`);
        }
      }
      if (this.exited) {
        throw new Error(`broker exited (${JSON.stringify(this.exited)}) after SIGHUP:\n${this.log()}`);
      }
      if (Date.now() > deadline) {
        throw new Error(`broker logged nothing matching ${want} within ${timeoutMs} ms of SIGHUP:\n${this.log()}`);
      }
      await sleep(10);
    }
  }

  // SIGKILL, as a crash would stop it; then starts it on the same data dir.
  async crashAndRestart() {
    if (!this.exited) {
      this.proc.kill('SIGKILL');
      await this.exitPromise;
    }
    return this.start();
  }

  // SIGTERM; throws unless the broker exits with status 0 in time.
  async stop() {
    if (!this.exited) {
      this.proc.kill('SIGTERM');
      let timer;
      const timedOut = new Promise((resolve) => {
        timer = setTimeout(() => resolve(null), STOP_TIMEOUT_MS);
      });
      const result = await Promise.race([this.exitPromise, timedOut]);
      clearTimeout(timer);
      if (!result) {
        this.proc.kill('SIGKILL');
        await this.exitPromise;
        throw new Error(`broker did not exit within ${STOP_TIMEOUT_MS} ms of SIGTERM:\n${this.log()}`);
      }
    }
    if (this.exited.code !== 0) {
      throw new Error(`broker exited with ${JSON.stringify(this.exited)} after SIGTERM:\n${this.log()}`);
    }
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

// Runs `fn(broker)` with a fresh broker, then stops it. A failing test gets the
// broker's log appended to its error. `options` go to the Broker (files).
async function withBroker(fn, config, options) {
  const broker = await new Broker(config, options).start();
  try {
    await fn(broker);
  } catch (e) {
    const log = broker.log();
    await broker.stop().catch(() => {});
    if (e && typeof e === 'object') e.message += `\n--- broker log (${broker.dir}) ---\n${log}`;
    throw e;
  }
  await broker.stop();
}

module.exports = {
  Broker, withBroker, hashPassword, makePki, DEFAULT_CONFIG,
};
