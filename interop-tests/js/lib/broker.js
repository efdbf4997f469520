'use strict';
// Starts an Ordo broker for one test and stops it with SIGTERM, insisting on a
// clean exit (status 0) within a few seconds.

const { spawn, execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const REPO = path.resolve(__dirname, '..', '..', '..');
const START_TIMEOUT_MS = 15000;
const STOP_TIMEOUT_MS = 5000;

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
  constructor(config = DEFAULT_CONFIG) {
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ordo-rhea-'));
    this.configFile = path.join(this.dir, 'ordo.toml');
    fs.writeFileSync(this.configFile, config);
    this.portFile = path.join(this.dir, 'port');
    this.logFile = path.join(this.dir, 'broker.log');
    this.exited = null; // {code, signal} once the process ended
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
        const text = fs.readFileSync(this.portFile, 'utf8').trim();
        if (text) {
          this.address = text;
          const [host, port] = text.split(':');
          this.host = host;
          this.port = Number(port);
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
// broker's log appended to its error.
async function withBroker(fn, config) {
  const broker = await new Broker(config).start();
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

module.exports = { Broker, withBroker, hashPassword, DEFAULT_CONFIG };
