#!/usr/bin/env python3
"""Runs the README's quick start against a real mqd and checks that it prints what the README shows.

The quick start is marked in README.md by HTML comments, each right before a fenced block:
  <!-- quickstart:terminal-1 -->  `$ <mqd command>` and the line(s) mqd prints when it starts
  <!-- quickstart:terminal-2 -->  `$ <consume command>` and the events it prints
  <!-- quickstart:terminal-3 -->  `$ <command>` lines (produce, ack, ...), each followed by its answer
  <!-- quickstart:stop -->        what mqd prints after Ctrl-C (SIGINT)
In a block, a line starting with "$ " is a command and the lines after it are its expected output.

The test starts the mqd given by --mqd (in place of the README's program) on a free port of
127.0.0.1, in a temporary working directory (so DATA_DIR=./data is temporary too), with none of
mqd's variables inherited from the caller's environment; substitutes the port for 8080 in the
commands and outputs; runs terminal 2's command in the background, terminal 3's commands in
order (an ack, nack or touch only once terminal 2 printed what the README shows, as a reader would
wait for the event), then sends SIGINT to mqd. Outputs are compared exactly, with every
"timestamp":<number> masked. A README whose example drifts from what mqd does (a wrong partition:
the consume waits in vain, the ack is a 404) fails. Python 3 standard library and curl only.
"""

import argparse
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from free_port import free_port  # noqa: E402

README_PORT = "8080"
WAIT_SECONDS = 10.0  # for mqd to start, for an event to arrive, for mqd and the stream to end
BLOCKS = ("terminal-1", "terminal-2", "terminal-3", "stop")
# Every variable mqd reads (docs/http-api.md): none is inherited, so that the caller's environment
# cannot change what mqd prints.
MQD_VARIABLES = (
    "PORT", "HOST", "DATA_DIR", "TOPICS", "BROKER_INDEX", "BROKER_COUNT", "BROKER_ADDRS", "FSYNC",
    "FSYNC_INTERVAL_MS", "MAX_PAYLOAD_BYTES", "MAX_BODY_BYTES", "MAX_CONNECTIONS",
    "VISIBILITY_TIMEOUT_MS", "MAX_DELIVERIES", "REQUEST_TIMEOUT_MS", "HEARTBEAT_MS", "AUTH_TOKEN",
    "TLS_CERT_FILE", "TLS_KEY_FILE",
)

failures = []


def fail(message):
    failures.append(message)
    print("FAIL: " + message, flush=True)


def extract_blocks(readme_text):
    """{name: [(command, [expected lines])]} for every quick-start block; commandless lines go
    under command None."""
    blocks = {}
    lines = readme_text.splitlines()
    for i, line in enumerate(lines):
        marker = re.fullmatch(r"\s*<!--\s*quickstart:([\w-]+)\s*-->\s*", line)
        if not marker:
            continue
        name = marker.group(1)
        if name in blocks:
            raise SystemExit(f"README: quickstart:{name} is marked twice")
        j = i + 1
        while j < len(lines) and not lines[j].strip():
            j += 1
        if j >= len(lines) or not lines[j].startswith("```"):
            raise SystemExit(f"README: quickstart:{name} is not followed by a fenced block")
        fence = re.match(r"`{3,}", lines[j]).group(0)
        entries = []
        k = j + 1
        while k < len(lines) and not lines[k].startswith(fence):
            text = lines[k]
            if text.startswith("$ "):
                entries.append((text[2:].strip(), []))
            else:
                if not entries:
                    entries.append((None, []))
                entries[-1][1].append(text)
            k += 1
        if k >= len(lines):
            raise SystemExit(f"README: the block of quickstart:{name} is not closed")
        blocks[name] = entries
    missing = [name for name in BLOCKS if name not in blocks]
    if missing:
        raise SystemExit("README: no quick-start block marked " + ", ".join(f"<!-- quickstart:{m} -->" for m in missing))
    return blocks


def mask(text):
    return re.sub(r'"timestamp":\d+', '"timestamp":<ms>', text)


def normalise(text):
    """Masked, with trailing spaces and trailing empty lines removed."""
    return "\n".join(line.rstrip() for line in mask(text).rstrip().splitlines())


def expected_text(lines, port):
    return normalise("\n".join(lines).replace(README_PORT, port))


def substitute(command, port):
    return command.replace("localhost:" + README_PORT, "127.0.0.1:" + port)


class Output:
    """Collects a pipe's text on a thread."""

    def __init__(self, pipe):
        self._text = ""
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self._thread.start()

    def _read(self, pipe):
        for chunk in iter(lambda: pipe.read1(4096), b""):
            with self._lock:
                self._text += chunk.decode("utf-8", "replace")

    def text(self):
        with self._lock:
            return self._text

    def join(self, timeout):
        self._thread.join(timeout)


def wait_until(predicate, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def compare(what, actual, expected):
    if normalise(actual) != expected:
        fail(f"{what}:\n--- the README shows\n{expected}\n--- mqd gave\n{normalise(actual)}\n---")
        return False
    print(f"ok: {what}", flush=True)
    return True


def start_mqd(command, mqd_path, port, work_dir):
    words = shlex.split(command, comments=True)
    env = {k: v for k, v in os.environ.items() if k not in MQD_VARIABLES}
    while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):
        name, value = words.pop(0).split("=", 1)
        env[name] = value
    if not words or os.path.basename(words[0]) != "mqd":
        raise SystemExit(f"README: terminal 1's command does not start mqd: {command!r}")
    if "DATA_DIR" in env and os.path.isabs(env["DATA_DIR"]):
        raise SystemExit("README: the quick start must use a relative DATA_DIR (the test runs it in a temporary directory)")
    env["PORT"] = port
    return subprocess.Popen([mqd_path] + words[1:], cwd=work_dir, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def run_shell(command, work_dir):
    return subprocess.run(["bash", "-c", command], cwd=work_dir, stdin=subprocess.DEVNULL,
                          capture_output=True, timeout=WAIT_SECONDS)


def stop(process):
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--readme", required=True, help="the README.md to check")
    parser.add_argument("--mqd", required=True, help="the mqd binary to run")
    args = parser.parse_args()
    with open(args.readme, encoding="utf-8") as f:
        blocks = extract_blocks(f.read())
    mqd_path = os.path.abspath(args.mqd)

    terminal_1, terminal_2, terminal_3, stop_block = (blocks[name] for name in BLOCKS)
    if len(terminal_1) != 1 or terminal_1[0][0] is None:
        raise SystemExit("README: terminal 1 must hold exactly one command (mqd)")
    if len(terminal_2) != 1 or terminal_2[0][0] is None:
        raise SystemExit("README: terminal 2 must hold exactly one command (the consume)")
    if not terminal_3 or any(command is None for command, _ in terminal_3):
        raise SystemExit("README: terminal 3 must start with a command")
    if len(stop_block) != 1 or stop_block[0][0] is not None:
        raise SystemExit("README: the stop block holds what mqd prints, no command")

    port = str(free_port())
    with tempfile.TemporaryDirectory(prefix="readme_quickstart_") as work_dir:
        # 1. mqd.
        mqd = start_mqd(terminal_1[0][0], mqd_path, port, work_dir)
        mqd_stderr = Output(mqd.stderr)
        mqd_stdout = Output(mqd.stdout)
        start_lines = terminal_1[0][1]
        started = wait_until(lambda: len(mqd_stderr.text().splitlines()) >= len(start_lines) or mqd.poll() is not None,
                             WAIT_SECONDS)
        if not started or mqd.poll() is not None:
            mqd.kill()
            mqd.wait()
            raise SystemExit(f"mqd did not start: {mqd_stderr.text()}")
        compare("terminal 1: what mqd prints at start", mqd_stderr.text(), expected_text(start_lines, port))

        consume = None
        try:
            # 2. The consume, in the background.
            consume_command, consume_lines = terminal_2[0]
            consume = subprocess.Popen(["bash", "-c", substitute(consume_command, port)], cwd=work_dir,
                                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                       stderr=subprocess.DEVNULL, start_new_session=True)
            events = Output(consume.stdout)
            consume_expected = expected_text(consume_lines, port)
            # No need to wait for the stream to open before producing: a new group starts at the
            # earliest message, so the event arrives either way.

            # 3. Produce, then acknowledge (and whatever else terminal 3 does), in order.
            waited_for_events = False
            for command, lines in terminal_3:
                if not waited_for_events and re.search(r"/(ack|nack|touch)\b", command):
                    waited_for_events = True
                    if not wait_until(lambda: normalise(events.text()) == consume_expected, WAIT_SECONDS):
                        fail(f"terminal 2: after {WAIT_SECONDS:.0f} s the consume printed\n{normalise(events.text())}\n"
                             f"--- but the README shows\n{consume_expected}\n---")
                result = run_shell(substitute(command, port), work_dir)
                compare(f"terminal 3: {command}", result.stdout.decode("utf-8", "replace"),
                        expected_text(lines, port))
                if result.returncode != 0:
                    fail(f"terminal 3: {command} exited with {result.returncode}: "
                         f"{result.stderr.decode('utf-8', 'replace')}")
            if not waited_for_events:
                wait_until(lambda: normalise(events.text()) == consume_expected, WAIT_SECONDS)

            # 4. Ctrl-C: mqd stops, and the stream ends by itself.
            mqd.send_signal(signal.SIGINT)
            try:
                code = mqd.wait(timeout=WAIT_SECONDS)
                if code != 0:
                    fail(f"mqd exited with {code} after SIGINT")
            except subprocess.TimeoutExpired:
                fail("mqd did not stop within 10 s of SIGINT")
                mqd.kill()
                mqd.wait()
            mqd_stderr.join(WAIT_SECONDS)
            mqd_stdout.join(WAIT_SECONDS)
            printed = mqd_stderr.text().splitlines()
            compare("stop: what mqd prints after Ctrl-C", "\n".join(printed[len(start_lines):]),
                    expected_text(stop_block[0][1], port))
            if mqd_stdout.text():
                fail(f"mqd printed on stdout: {mqd_stdout.text()!r}")
            try:
                consume.wait(timeout=WAIT_SECONDS)
            except subprocess.TimeoutExpired:
                fail("terminal 2: the consume did not end when mqd stopped")
            events.join(WAIT_SECONDS)
            compare(f"terminal 2: {consume_command}", events.text(), consume_expected)
        finally:
            if consume is not None:
                stop(consume)
            if mqd.poll() is None:
                mqd.kill()
                mqd.wait()

    if failures:
        print(f"\n{len(failures)} check(s) failed: the README's quick start does not match what mqd does", flush=True)
        return 1
    print("the README's quick start matches mqd", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
