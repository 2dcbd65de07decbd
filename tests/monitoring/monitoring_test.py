#!/usr/bin/env python3
"""examples/monitoring against a real mqd and Debian's Prometheus (`bash cmake/install-deps.sh prometheus`):

- a real mqd, after produces (rolling segments), consumes, acks, a nack that dead-letters and a delayed
  message, exports every metric family docs/http-api.md lists, each with samples, as Content-Type
  `text/plain; version=0.0.4`, and `promtool check metrics` finds nothing wrong with it;
- every metric the Grafana dashboard and the alerting rules use is one mqd exports;
- `promtool check config` accepts prometheus.yml (and its rule file), `promtool test rules` passes
  alerts_test.yml;
- a real Prometheus, run with prometheus.yml pointed at that mqd, scrapes it, evaluates the rules
  without errors, and answers every query of the dashboard (its template variables too) with data.
"""
import argparse
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

import yaml

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from free_port import free_port  # noqa: E402

# docs/http-api.md "GET /metrics": every family mqd exports, and its type.
FAMILIES = {
    "mq_produced_total": "counter",
    "mq_log_bytes": "gauge",
    "mq_log_start_offset": "gauge",
    "mq_log_segments": "gauge",
    "mq_retention_deleted_messages_total": "counter",
    "mq_delivered_total": "counter",
    "mq_acked_total": "counter",
    "mq_redelivered_total": "counter",
    "mq_dead_lettered_total": "counter",
    "mq_delayed": "gauge",
    "mq_inflight": "gauge",
    "mq_lag": "gauge",
    "mq_committed_offset": "gauge",
}

failures = []
passed = 0


def check(condition, what):
    global passed
    if condition:
        passed += 1
    else:
        failures.append(what)
        print(f"FAILED: {what}", flush=True)
    return condition


def wait_for_port(port, process, what, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.02)  # polling a port: there is no event to await
    return False


def request(port, method, target, body=None):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    connection.request(method, target, body=None if body is None else json.dumps(body))
    response = connection.getresponse()
    data = response.read().decode()
    connection.close()
    return response.status, response.getheader("Content-Type"), data


def expect_ok(port, method, target, body=None):
    status, _, data = request(port, method, target, body)
    if not check(status == 200, f"{method} {target}: {status} {data}"):
        raise SystemExit(1)
    return json.loads(data)


def consume(port, target, count):
    """The first `count` events of a /consume stream, which stays open (the messages in flight)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    connection.request("GET", target)
    response = connection.getresponse()
    check(response.status == 200, f"GET {target}: {response.status}")
    events = []
    while len(events) < count:
        line = response.readline().decode()
        if not line:
            break
        if line.startswith("data: "):
            events.append(json.loads(line[len("data: "):]))
    check(len(events) == count, f"GET {target}: {len(events)} events of {count}")
    return connection, events


def load_mqd(port):
    """Produces, consumes, acks, nacks (dead-letters) and delays, so that every family has samples."""
    payload = {"text": "x" * 200}
    for i in range(20):  # 20 * ~260 bytes: the 1024-byte segments roll
        expect_ok(port, "POST", "/produce?topic=events&partition=0", {"payload": payload, "key": f"k{i}"})
    expect_ok(port, "POST", "/produce?topic=events&partition=1",
              {"messages": [{"payload": i} for i in range(5)]})
    expect_ok(port, "POST", "/produce?topic=events&partition=1", {"payload": "later", "delay_ms": 3600000})
    stream, events = consume(port, "/consume?topic=events&partition=0&group=billing", 10)
    ids = [e["id"] for e in events]
    expect_ok(port, "POST", "/ack?topic=events&partition=0&group=billing", {"ids": ids[:8]})
    expect_ok(port, "POST", "/nack?topic=events&partition=0&group=billing", {"id": ids[8]})  # dead-lettered
    other, others = consume(port, "/consume?topic=events&partition=1&group=audit", 5)
    expect_ok(port, "POST", "/ack?topic=events&partition=1&group=audit", {"id": others[0]["id"]})
    return [stream, other]


def parse_families(text):
    types, samples = {}, {}
    for line in text.splitlines():
        m = re.match(r"# TYPE (\S+) (\S+)$", line)
        if m:
            types[m.group(1)] = m.group(2)
        elif line and not line.startswith("#"):
            name = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0)
            samples[name] = samples.get(name, 0) + 1
    return types, samples


def metric_names(text):
    """The mq_* metric names an expression or rule file uses."""
    return set(re.findall(r"\bmq_[a-z_]+\b", text))


def dashboard_queries(dashboard):
    queries = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            queries.append((panel["title"], target["expr"]))
    return queries


def grafana_to_promql(expr):
    # The dashboard's variables as Grafana would fill them in with "All" selected.
    return (expr.replace("$__rate_interval", "10s").replace("$__range", "1m").replace("$topic", ".*")
            .replace("$group", ".*"))


def prometheus_query(port, path, params):
    url = f"http://127.0.0.1:{port}{path}?{urllib.parse.urlencode(params, doseq=True)}"
    try:
        with urllib.request.urlopen(url, timeout=15) as response:
            return json.load(response)
    except urllib.error.HTTPError as error:  # a query refused (its JSON says why), or not ready yet (503)
        text = error.read().decode(errors="replace")
        try:
            return json.loads(text)
        except ValueError:
            return {"status": "error", "error": f"HTTP {error.code}: {text}"}


def run_prometheus(example_dir, mqd_port, work, dashboard):
    config = yaml.safe_load(open(os.path.join(example_dir, "prometheus.yml")))
    config["global"]["scrape_interval"] = "1s"
    config["global"]["evaluation_interval"] = "1s"
    config["rule_files"] = [os.path.join(example_dir, f) for f in config["rule_files"]]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    if not check("mqd" in jobs, "prometheus.yml: no job mqd (the dashboard's up{job=\"mqd\"})"):
        return
    jobs["mqd"]["static_configs"][0]["targets"] = [f"127.0.0.1:{mqd_port}"]
    config_path = os.path.join(work, "prometheus.yml")
    with open(config_path, "w") as f:
        yaml.safe_dump(config, f)
    port = free_port()
    log = open(os.path.join(work, "prometheus.log"), "w")
    prometheus = subprocess.Popen(
        ["prometheus", f"--config.file={config_path}", f"--storage.tsdb.path={os.path.join(work, 'tsdb')}",
         f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
    try:
        if not check(wait_for_port(port, prometheus, "prometheus"), "prometheus did not start: " +
                     open(os.path.join(work, "prometheus.log")).read()[-2000:]):
            return
        # Wait (bounded) for a few scrapes, so that rates have samples; Prometheus has no event to await.
        deadline = time.monotonic() + 60
        scrapes = 0
        while time.monotonic() < deadline:
            try:
                answer = prometheus_query(port, "/api/v1/query", {"query": 'count_over_time(up{job="mqd"}[1m])'})
            except OSError:  # not listening yet
                answer = {}
            result = answer.get("data", {}).get("result")
            scrapes = int(result[0]["value"][1]) if result else 0
            if scrapes >= 4:
                break
            time.sleep(0.5)
        check(scrapes >= 4, f"prometheus scraped mqd {scrapes} times in 60 s")
        up = prometheus_query(port, "/api/v1/query", {"query": 'up{job="mqd"}'})["data"]["result"]
        check(up and up[0]["value"][1] == "1", f"up{{job=\"mqd\"}} is {up}")
        for title, expr in dashboard_queries(dashboard):
            promql = grafana_to_promql(expr)
            answer = prometheus_query(port, "/api/v1/query", {"query": promql})
            check(answer["status"] == "success" and answer["data"]["result"],
                  f"dashboard panel '{title}': {promql} answered {json.dumps(answer)[:300]}")
        for variable in dashboard["templating"]["list"]:
            if variable["type"] != "query":
                continue
            m = re.match(r"label_values\((.+), (\w+)\)$", variable["query"]["query"])
            if not check(m, f"dashboard variable {variable['name']}: {variable['query']['query']}"):
                continue
            values = prometheus_query(port, f"/api/v1/label/{m.group(2)}/values",
                                      {"match[]": grafana_to_promql(m.group(1))})["data"]
            check(values, f"dashboard variable {variable['name']}: no values")
        rules = prometheus_query(port, "/api/v1/rules", {})["data"]["groups"]
        loaded = [r for g in rules for r in g["rules"]]
        check(len(loaded) >= 4, f"prometheus loaded {len(loaded)} rules")
        for rule in loaded:
            check(rule.get("health") in ("ok", "unknown") and not rule.get("lastError"),
                  f"rule {rule['name']}: {rule.get('health')} {rule.get('lastError')}")
    finally:
        prometheus.terminate()
        try:
            prometheus.wait(timeout=20)
        except subprocess.TimeoutExpired:
            prometheus.kill()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--mqd", required=True)
    parser.add_argument("--repo", required=True)
    args = parser.parse_args()
    example_dir = os.path.join(args.repo, "examples", "monitoring")
    for tool in ("promtool", "prometheus"):
        if shutil.which(tool) is None:
            print(f"FAILED: {tool} is not installed (bash cmake/install-deps.sh prometheus)")
            return 1

    work = tempfile.mkdtemp(prefix="mqd-monitoring-")
    port = free_port()
    env = {"PORT": str(port), "HOST": "127.0.0.1", "DATA_DIR": os.path.join(work, "data"), "FSYNC": "never",
           "TOPICS": "events:2:segment_bytes=1024,orders:1", "MAX_DELIVERIES": "1"}
    stderr = open(os.path.join(work, "mqd.stderr"), "w")
    mqd = subprocess.Popen([args.mqd], env=env, stdout=subprocess.DEVNULL, stderr=stderr)
    streams = []
    try:
        if not check(wait_for_port(port, mqd, "mqd"), "mqd did not start: " +
                     open(os.path.join(work, "mqd.stderr")).read()):
            return 1
        streams = load_mqd(port)

        status, content_type, text = request(port, "GET", "/metrics")
        check(status == 200, f"GET /metrics: {status}")
        check(content_type == "text/plain; version=0.0.4", f"GET /metrics: Content-Type {content_type}")
        lint = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
        check(lint.returncode == 0 and not lint.stdout.strip() and not lint.stderr.strip(),
              f"promtool check metrics: exit {lint.returncode}: {lint.stdout}{lint.stderr}")
        types, samples = parse_families(text)
        for family, kind in FAMILIES.items():
            check(types.get(family) == kind, f"/metrics: {family} has type {types.get(family)}, expected {kind}")
            check(samples.get(family, 0) > 0, f"/metrics: {family} has no samples")
        check(set(types) == set(FAMILIES), f"/metrics: families {sorted(set(types) ^ set(FAMILIES))} are new "
              "or gone: update docs/http-api.md, this test and the dashboard")
        values = {}
        for line in text.splitlines():
            m = re.match(r'(mq_\w+)\{topic="events",partition="0"(?:,group="billing")?\} (\d+)$', line)
            if m:
                values[m.group(1)] = int(m.group(2))
        check(values.get("mq_log_segments", 0) > 1, f"the 1024-byte segments rolled: {values}")
        check(values.get("mq_dead_lettered_total") == 1 and values.get("mq_acked_total") == 8,
              f"acks and the dead letter are counted: {values}")

        dashboard_path = os.path.join(example_dir, "grafana-dashboard.json")
        dashboard = json.load(open(dashboard_path))
        check(dashboard.get("uid") and dashboard.get("panels"), "grafana-dashboard.json: no uid or panels")
        used = set()
        for title, expr in dashboard_queries(dashboard):
            used |= metric_names(expr)
        for variable in dashboard["templating"]["list"]:
            used |= metric_names(json.dumps(variable.get("query", "")))
        used_by_rules = metric_names(open(os.path.join(example_dir, "alerts.yml")).read())
        for name in sorted(used | used_by_rules):
            check(name in types, f"examples/monitoring uses {name}, which mqd does not export")
        # The dashboard shows what the task asks of it.
        for wanted in ("mq_produced_total", "mq_delivered_total", "mq_acked_total", "mq_lag", "mq_inflight",
                       "mq_dead_lettered_total", "mq_log_bytes", "mq_log_segments"):
            check(wanted in used, f"the dashboard does not show {wanted}")

        result = subprocess.run(["promtool", "check", "config", os.path.join(example_dir, "prometheus.yml")],
                                capture_output=True, text=True)
        check(result.returncode == 0, f"promtool check config: {result.stdout}{result.stderr}")
        result = subprocess.run(["promtool", "test", "rules", "alerts_test.yml"], cwd=example_dir,
                                capture_output=True, text=True)
        check(result.returncode == 0, f"promtool test rules: {result.stdout}{result.stderr}")

        run_prometheus(example_dir, port, work, dashboard)
    finally:
        for connection in streams:
            connection.close()
        mqd.terminate()
        try:
            mqd.wait(timeout=20)
        except subprocess.TimeoutExpired:
            mqd.kill()
        shutil.rmtree(work, ignore_errors=True)
    print(f"monitoring_test: {passed} passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
