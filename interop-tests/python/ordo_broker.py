"""Start and stop an Ordo broker process for a test.

Each Broker gets its own temporary directory holding its config file, data
directory, port file and log. start() waits (bounded) for the port file;
stop() sends SIGTERM and insists on a clean exit (status 0) within a few
seconds, which is part of what the tests check.

The port file's first line is the plain address (HOST:PORT); with TLS on, its
second line is the amqps address (`tls_address`). reload() sends SIGHUP and
waits for the broker to say it re-read its config. make_pki() makes the test
certificates of the TLS tests (interop-tests/pki.sh).
"""

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PKI_SCRIPT = REPO / "interop-tests" / "pki.sh"

START_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0
RELOAD_TIMEOUT = 10.0

# What the broker logs once a SIGHUP reload was applied (src/server.rs,
# Reloader::apply), and when it was refused (src/main.rs, reload_on_hangup).
RELOADED = r"configuration reloaded"
RELOAD_REFUSED = r"reload refused"

DEFAULT_CONFIG = """\
[listener]
address = "127.0.0.1"
port = 0

[sasl]
allow-anonymous = true

[logging]
level = "info"
format = "text"
"""


def ordo_bin():
    """The broker binary: $ORDO_BIN, or target/debug/ordo of this repo."""
    env = os.environ.get("ORDO_BIN")
    path = Path(env).resolve() if env else REPO / "target" / "debug" / "ordo"
    if not path.is_file() or not os.access(path, os.X_OK):
        raise RuntimeError(
            f"Ordo binary not found at {path}: run `cargo build` or set ORDO_BIN")
    return path


def hash_password(password):
    """The SCRAM-SHA-256 credential string `ordo hash-password` makes."""
    out = subprocess.run([str(ordo_bin()), "hash-password"], input=password + "\n",
                         capture_output=True, text=True, timeout=30, check=True)
    return out.stdout.strip()


def make_pki(directory):
    """Runs interop-tests/pki.sh in `directory` (see that script for the files
    it makes) and returns the directory as a Path."""
    directory = Path(directory)
    subprocess.run(["bash", str(PKI_SCRIPT), str(directory)], check=True,
                   capture_output=True, text=True, timeout=120)
    return directory


def broker_env():
    """The environment minus anything that would reconfigure the broker."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("ORDO_") and k != "RUST_LOG"}
    # ORDO_TEST_LOG=debug (or any tracing filter) turns up the broker's log.
    if os.environ.get("ORDO_TEST_LOG"):
        env["RUST_LOG"] = os.environ["ORDO_TEST_LOG"]
    return env


class Broker:
    def __init__(self, workdir, config=DEFAULT_CONFIG, files=None):
        """`files` ({name: source path}) are copied into the broker's
        directory, its working directory, before it starts (e.g. the
        certificates a config names by relative path)."""
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config_file = self.dir / "ordo.toml"
        self.config_file.write_text(config)
        for name, source in (files or {}).items():
            shutil.copyfile(source, self.dir / name)
        self.data_dir = self.dir / "data"
        self.port_file = self.dir / "port"
        self.log_file = self.dir / "broker.log"
        self.proc = None
        self.address = None
        # The amqps address (the port file's second line), None without TLS.
        self.tls_address = None

    @property
    def url(self):
        return f"amqp://{self.address}"

    @property
    def amqps_url(self):
        assert self.tls_address, "this broker has no TLS listener (port file has one line)"
        return f"amqps://{self.tls_address}"

    @staticmethod
    def _host_port(address):
        host, _, port = address.rpartition(":")
        return host.strip("[]"), int(port)

    @property
    def host_port(self):
        """(host, port) of the plain listener, for raw sockets."""
        return self._host_port(self.address)

    @property
    def tls_host_port(self):
        """(host, port) of the amqps listener."""
        assert self.tls_address, "this broker has no TLS listener (port file has one line)"
        return self._host_port(self.tls_address)

    def url_with(self, user, password):
        return f"amqp://{user}:{password}@{self.address}"

    def start(self):
        # A broker killed with SIGKILL leaves its port file behind.
        self.port_file.unlink(missing_ok=True)
        log = open(self.log_file, "ab")
        self.proc = subprocess.Popen(
            [str(ordo_bin()), "run", "--listen", "127.0.0.1:0",
             "--port-file", str(self.port_file), "--data-dir", str(self.data_dir),
             "--config", str(self.config_file)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env=broker_env(), cwd=self.dir)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.port_file.exists():
                # Written whole (renamed into place): plain address, then the
                # amqps one when TLS is on.
                lines = [ln.strip() for ln in self.port_file.read_text().splitlines()]
                lines = [ln for ln in lines if ln]
                if lines:
                    self.address = lines[0]
                    self.tls_address = lines[1] if len(lines) > 1 else None
                    return self
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"broker exited with {self.proc.returncode} before listening:\n{self.log()}")
            if time.monotonic() > deadline:
                self.proc.kill()
                self.proc.wait()
                raise RuntimeError(
                    f"broker wrote no port file within {START_TIMEOUT}s:\n{self.log()}")
            time.sleep(0.01)

    def log(self):
        try:
            return self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for_log(self, pattern, timeout=10.0):
        """Wait until the broker's log has a line matching `pattern` (a regex)."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            for line in self.log().splitlines():
                if rx.search(line):
                    return line
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"broker logged nothing matching {pattern!r} within {timeout}s:\n{self.log()}")
            time.sleep(0.01)

    def reload(self, refused=False, timeout=RELOAD_TIMEOUT):
        """Sends SIGHUP and waits for the broker's answer in its log, a line
        logged after the signal: `configuration reloaded` (fails if it logs
        `reload refused` instead) or, with `refused`, `reload refused`.
        Returns that line."""
        assert self.proc is not None and self.proc.poll() is None, "broker is not running"
        seen = len(self.log())  # only what is logged after the signal counts
        self.proc.send_signal(signal.SIGHUP)
        want, other = (RELOAD_REFUSED, RELOADED) if refused else (RELOADED, RELOAD_REFUSED)
        deadline = time.monotonic() + timeout
        while True:
            for line in self.log()[seen:].splitlines():
                if re.search(want, line):
                    return line
                if re.search(other, line):
                    raise AssertionError(
                        f"after SIGHUP the broker logged {line!r}, expected {want!r}:\n{self.log()}")
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"broker exited with {self.proc.returncode} after SIGHUP:\n{self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"broker logged nothing matching {want!r} within {timeout}s of SIGHUP:\n"
                    f"{self.log()}")
            time.sleep(0.01)

    def kill(self):
        """SIGKILL, as a crash or a power cut would stop the broker."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def restart(self, crash=False):
        """Stops the broker (SIGKILL if `crash`, else SIGTERM, which must exit
        cleanly) and starts it again on the same data directory."""
        if crash:
            self.kill()
        else:
            problem = self.stop()
            assert problem is None, problem
        return self.start()

    def stop(self):
        """SIGTERM; returns None if the broker exited 0 in time, else a complaint."""
        if self.proc is None or self.proc.poll() is not None:
            rc = None if self.proc is None else self.proc.returncode
            return None if rc in (None, 0) else f"broker had already exited with {rc}"
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return f"broker did not exit within {STOP_TIMEOUT}s of SIGTERM"
        if rc != 0:
            return f"broker exited with status {rc} after SIGTERM"
        return None
