#!/usr/bin/env python3
"""Checks the deployment files against the code, without a Docker engine or a cluster:

- Dockerfile: multi-stage on Debian 12; its build stage runs the README's and CI's scripts (and with
  --build-root those steps are actually run, with the compilation itself a dry run: the packages are
  installed and CMake configures the Release tree for real, and every file the runtime stages copy
  must be one that tree's build makes); the runtime stages install the Debian package of every
  shared library the copied binaries need (read off the same targets as built by --built-tree); the broker stage keeps /root/data as a volume, exposes 8080, checks /healthz and
  runs mqd as PID 1 in exec form so that docker stop's SIGTERM reaches it.
- docker-compose.yml: the brokers agree on BROKER_COUNT and BROKER_ADDRS, have distinct indexes and
  volumes; the templates point at services that exist; the prometheus service runs
  examples/monitoring/prometheus.yml (and its rule files), whose mqd job scrapes exactly the brokers.
- examples/kubernetes: a StatefulSet with BROKER_INDEX=auto, BROKER_COUNT = replicas, BROKER_ADDRS
  from the headless Service's stable names, a volume claim per pod at /root/data, probes on /healthz.
"""
import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys

import yaml

failures = []


def check(condition, what):
    if not condition:
        failures.append(what)
    return condition


def read(path):
    with open(path) as f:
        return f.read()


# ---------------------------------------------------------------- Dockerfile
def dockerfile_stages(text):
    """[(base image, name, [(instruction, argument)])] with continuation lines joined."""
    text = re.sub(r"\\\n", " ", text)
    stages = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, argument = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            m = re.match(r"(\S+)(?:\s+AS\s+(\S+))?", argument, re.IGNORECASE)
            stages.append((m.group(1), m.group(2), []))
        elif check(stages, f"Dockerfile: {instruction} before any FROM"):
            stages[-1][2].append((instruction, argument.strip()))
    return stages


def apt_packages(instructions):
    packages = set()
    for instruction, argument in instructions:
        if instruction == "RUN" and "apt-get install" in argument:
            after = argument.split("apt-get install", 1)[1].split("&&")[0]
            packages |= {w for w in after.split() if not w.startswith("-")}
    return packages


def needed_libraries(binary):
    out = subprocess.run(["readelf", "-d", binary], capture_output=True, text=True, check=True).stdout
    return re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", out)


def package_of(library):
    out = subprocess.run(["dpkg", "-S", library], capture_output=True, text=True).stdout
    for line in out.splitlines():
        package, _, path = line.partition(": ")
        if path.endswith("/" + library):
            return package.split(":")[0]
    return None


def dry_run_environment(build_root):
    """The environment for the build stage's steps with `cmake --build` turned into a Ninja dry run.

    The tests' own tree compiles every source of mqd and the services already (gcc, -Werror); a
    second, Release compilation of all of them took four of the CI run's minutes. What the build
    steps still do for real: install the packages and configure the Release tree. Each
    `cmake --build` call is written down (built_by_the_build_steps reads which targets it asked for)
    and runs as Ninja's dry run; a call that passes Ninja options of its own fails (`-n` would then be
    taken for a target), which is the safe direction.
    """
    shim = os.path.join(build_root, "dry-run-bin")
    os.makedirs(shim, exist_ok=True)
    calls = os.path.abspath(os.path.join(shim, "build-calls"))
    if os.path.exists(calls):
        os.remove(calls)
    # Looked up now, outside the shim; on a machine without cmake the steps' install-deps.sh installs
    # it, and the shim then finds it on the PATH.
    real_cmake = shutil.which("cmake") or "cmake"
    with open(os.path.join(shim, "cmake"), "w") as f:
        f.write("#!/bin/sh\n"
                "# deploy_test's cmake: `cmake --build` runs Ninja's dry run (-n) and is written down;\n"
                "# everything else is cmake.\n"
                f'PATH={shlex.quote(os.environ["PATH"])}\n'
                'if [ "$1" = --build ]; then\n'
                f'  printf "%s\\0" "$@" >> {shlex.quote(calls)}; printf "\\n" >> {shlex.quote(calls)}\n'
                f'  exec {shlex.quote(real_cmake)} "$@" -- -n\n'
                'fi\n'
                f'exec {shlex.quote(real_cmake)} "$@"\n')
    os.chmod(os.path.join(shim, "cmake"), 0o755)
    return dict(os.environ, PATH=shim + os.pathsep + os.environ["PATH"])


def built_by_the_build_steps(build_root):
    """The files the build steps' `cmake --build` calls make: {build tree: set of paths in it, or
    None for a call without --target (everything)}."""
    built = {}
    calls = os.path.join(build_root, "dry-run-bin", "build-calls")
    if not os.path.exists(calls):
        return built
    with open(calls) as f:
        for line in f.read().splitlines():
            args = [a for a in line.split("\0") if a]
            tree = os.path.realpath(args[1]) if len(args) > 1 else ""
            targets = []
            if "--target" in args:
                for a in args[args.index("--target") + 1:]:
                    if a.startswith("-"):
                        break
                    targets.append(a)
            if not targets:
                built[tree] = None
                continue
            files = built.setdefault(tree, set())
            if files is None:
                continue
            for target in targets:
                files |= outputs_of(tree, target)
    return built


def outputs_of(tree, target):
    """The files Ninja's `target` stands for: itself, or a phony target's inputs (CMake's `mqd` is
    phony for mqd/mqd)."""
    query = subprocess.run(["ninja", "-C", tree, "-t", "query", target], capture_output=True, text=True)
    if query.returncode != 0:
        return set()
    lines = query.stdout.splitlines()
    if not any(l.strip() == "input: phony" for l in lines):
        return {target}
    inputs, in_inputs = set(), False
    for l in lines:
        if l.startswith("  input:"):
            in_inputs = True
        elif l.startswith("  ") and not l.startswith("    "):
            in_inputs = False
        elif in_inputs and l.startswith("    "):
            inputs.add(l.strip().lstrip("| "))
    return inputs


def is_built_by_the_build_steps(path, built):
    """Whether a `cmake --build` call of the build steps makes the file at path."""
    for tree, files in built.items():
        target = os.path.relpath(os.path.realpath(path), tree)
        if target.startswith(".."):
            continue
        if files is None:  # everything: any file the tree's Ninja graph makes
            query = subprocess.run(["ninja", "-C", tree, "-t", "query", target], capture_output=True, text=True)
            if query.returncode == 0 and re.search(r"^  input: ", query.stdout, re.MULTILINE):
                return True
        elif target in files:
            return True
    return False


# Sanitizer runtimes: a developer's tree built with MQ_SANITIZE links them; a Release image never.
SANITIZER_RUNTIMES = re.compile(r"^lib(asan|ubsan|tsan|lsan)\.so")


# Packages every debian:bookworm-slim image has.
BASE_PACKAGES = {"libc6", "libstdc++6", "libgcc-s1"}


def check_dockerfile(repo, build_root, built_tree):
    stages = dockerfile_stages(read(os.path.join(repo, "Dockerfile")))
    check(len(stages) >= 2, "Dockerfile: expected a multi-stage build")
    build = [s for s in stages if s[1] == "build"]
    if not check(build, "Dockerfile: no stage named build"):
        return
    base, _, build_steps = build[0]
    check(base == "debian:bookworm", f"Dockerfile: the build stage is {base}, expected debian:bookworm")
    runs = " && ".join(a for i, a in build_steps if i == "RUN")
    check("bash cmake/install-deps.sh" in runs, "Dockerfile: the build stage does not run cmake/install-deps.sh")
    check("cmake/build-release.sh" in runs, "Dockerfile: the build stage does not run cmake/build-release.sh")
    # The same scripts as the README's commands and CI.
    readme = read(os.path.join(repo, "README.md"))
    first_block = readme.split("```", 2)[1] if readme.count("```") >= 2 else ""
    check("bash cmake/run.sh" in first_block and "bash cmake/test.sh" in first_block,
          "README: the first block must hold the two commands")
    check("cmake/build-release.sh" in read(os.path.join(repo, "cmake/run.sh")), "cmake/run.sh does not run build-release.sh")
    check("cmake/install-deps.sh" in read(os.path.join(repo, "cmake/build-release.sh")), "build-release.sh does not install the packages")
    check("cmake/install-deps.sh" in read(os.path.join(repo, "cmake/test.sh")), "cmake/test.sh does not install the packages")
    check("cmake/test.sh" in read(os.path.join(repo, ".ci/run")), ".ci/run does not run cmake/test.sh")

    final_base, final_name, final = stages[-1]
    check(final_base == "debian:bookworm-slim", f"Dockerfile: the image is {final_base}, expected debian:bookworm-slim")
    args = {}
    for instruction, argument in final:
        args.setdefault(instruction, []).append(argument)
    check(any("DATA_DIR=/root/data" in a for a in args.get("ENV", [])), "Dockerfile: DATA_DIR=/root/data not set")
    check(any("/root/data" in a for a in args.get("VOLUME", [])), "Dockerfile: /root/data is not a VOLUME")
    check("8080" in args.get("EXPOSE", []), "Dockerfile: 8080 not exposed")
    check(any("/healthz" in a for a in args.get("HEALTHCHECK", [])), "Dockerfile: no HEALTHCHECK on /healthz")
    entrypoint = args.get("ENTRYPOINT", [""])[-1]
    try:
        exec_form = json.loads(entrypoint)
    except ValueError:
        exec_form = None
    check(isinstance(exec_form, list) and exec_form and exec_form[0].endswith("/mqd"),
          f"Dockerfile: ENTRYPOINT {entrypoint!r} must be the exec form [\".../mqd\"], so that mqd is PID 1 "
          "and gets docker stop's SIGTERM (the shell form runs it under /bin/sh, which does not pass it on)")
    check(args.get("STOPSIGNAL", ["SIGTERM"])[-1] == "SIGTERM", "Dockerfile: STOPSIGNAL must be SIGTERM")

    if build_root is None:
        return
    # Run the build stage's steps here ("COPY . ." into /src: the repository is the working
    # directory; /build is build_root), then check what the runtime stages copy.
    def in_build_root(text):  # the image's /build, as a path of its own (not cmake/build-release.sh)
        return re.sub(r"(?<![\w./-])/build(?=/|\b)", build_root, text)

    command = in_build_root(runs)
    print(f"deploy_test: running the Dockerfile's build steps, compiling as a dry run: {command}", flush=True)
    if not check(subprocess.run(["bash", "-c", command], cwd=repo, env=dry_run_environment(build_root)).returncode == 0,
                 f"Dockerfile: the build stage's steps failed: {command}"):
        return
    built = built_by_the_build_steps(build_root)
    check(built, "Dockerfile: the build stage's steps never ran `cmake --build`")
    for base_image, name, instructions in stages:
        packages = apt_packages(instructions)
        for instruction, argument in instructions:
            if instruction != "COPY" or "--from=build" not in argument:
                continue
            source = argument.split()[1]
            if not check(is_built_by_the_build_steps(in_build_root(source), built),
                         f"Dockerfile: stage {name} copies {source}, which the build steps do not make"):
                continue
            # The same target of the tree the tests run (same project, same link line; other flags).
            binary = os.path.join(built_tree, os.path.relpath(in_build_root(source), os.path.join(build_root, "release")))
            if not check(os.path.exists(binary), f"deploy_test: {binary} (the built tree's {source}) is missing"):
                continue
            for library in needed_libraries(binary):
                if SANITIZER_RUNTIMES.match(library):
                    continue
                package = package_of(library)
                if check(package, f"Dockerfile: no Debian package has {library}, needed by {source}"):
                    check(package in packages | BASE_PACKAGES,
                          f"Dockerfile: stage {name} copies {source}, which needs {library} from {package}; "
                          f"the stage installs only {sorted(packages)}")


# ---------------------------------------------------------------- docker-compose.yml
def check_compose(repo):
    compose = yaml.safe_load(read(os.path.join(repo, "docker-compose.yml")))
    services = compose.get("services", {})
    brokers = {n: s for n, s in services.items() if s.get("image") == "msg_queue"}
    check(len(brokers) == 2, f"compose: expected two brokers, found {sorted(brokers)}")
    indexes = {}
    for name, service in brokers.items():
        env = {k: str(v) for k, v in service.get("environment", {}).items()}
        check(env.get("BROKER_COUNT") == str(len(brokers)), f"compose: {name} BROKER_COUNT={env.get('BROKER_COUNT')}")
        indexes[int(env.get("BROKER_INDEX", "-1"))] = name
        port = env.get("PORT", "8080")
        check(any(v.endswith(":/root/data") for v in service.get("volumes", [])), f"compose: {name} has no volume at /root/data")
        addrs = env.get("BROKER_ADDRS", "").split(",")
        check(len(addrs) == len(brokers), f"compose: {name} BROKER_ADDRS lists {len(addrs)} brokers")
        brokers[name]["_addrs"] = addrs
        brokers[name]["_port"] = port
    check(sorted(indexes) == list(range(len(brokers))), f"compose: broker indexes {sorted(indexes)}")
    expected = [f"http://{indexes[i]}:{brokers[indexes[i]]['_port']}" for i in sorted(indexes)]
    for name, service in brokers.items():
        check(service["_addrs"] == expected, f"compose: {name} BROKER_ADDRS {service['_addrs']} != {expected}")
    volumes = [v for s in brokers.values() for v in s.get("volumes", [])]
    check(len(set(volumes)) == len(volumes), "compose: brokers share a volume")
    check("redis" in services, "compose: no redis service")
    check_compose_prometheus(repo, services.get("prometheus"), brokers)
    templates = {n: s for n, s in services.items()
                 if s.get("build", {}) != "." and n not in brokers and n not in ("redis", "prometheus")}
    check(len(templates) >= 2, "compose: expected the integration templates")
    known = {"USE_HTTP_QUEUE", "MSG_QUEUE_ADDR", "MSG_QUEUE_TOPIC", "MSG_QUEUE_GROUP", "MSG_QUEUE_PRODUCER_NAME",
             "MSG_QUEUE_TOKEN", "MSG_QUEUE_PARTITIONS", "REDIS_URL", "REDIS_ADDR"}
    for name, service in templates.items():
        env = {k: str(v) for k, v in service.get("environment", {}).items()}
        check(set(env) <= known, f"compose: {name} sets unknown variables {sorted(set(env) - known)}")
        if env.get("USE_HTTP_QUEUE", "").lower() in ("true", "1", "yes", "on"):
            for addr in env.get("MSG_QUEUE_ADDR", "").split(","):
                host = re.sub(r"^http://([^:/]+).*", r"\1", addr)
                check(host in brokers, f"compose: {name} points at {addr}, not a broker")
        else:
            target = env.get("REDIS_URL", env.get("REDIS_ADDR", ""))
            check("redis" in target, f"compose: {name} uses Redis but points at {target!r}")


def check_compose_prometheus(repo, service, brokers):
    """The prometheus service mounts examples/monitoring/prometheus.yml and its rule files, and the
    configuration's mqd job scrapes every broker of the compose file at its PORT, and nothing else."""
    if not check(service is not None, "compose: no prometheus service (examples/monitoring)"):
        return
    mounts = {}
    for volume in service.get("volumes", []):
        source, _, target = volume.partition(":")
        mounts[target.split(":")[0]] = source
    config_file = "/etc/prometheus/prometheus.yml"
    for argument in service.get("command", []):
        if argument.startswith("--config.file="):
            config_file = argument.split("=", 1)[1]
    source = mounts.get(config_file)
    if not check(source == "./examples/monitoring/prometheus.yml",
                 f"compose: prometheus reads {config_file}, mounted from {source}, not examples/monitoring/prometheus.yml"):
        return
    config = yaml.safe_load(read(os.path.join(repo, source)))
    for rule_file in config.get("rule_files", []):
        mounted = mounts.get(os.path.join(os.path.dirname(config_file), rule_file))
        check(mounted and os.path.exists(os.path.join(repo, mounted)),
              f"compose: prometheus's rule file {rule_file} is not mounted from the repository")
    jobs = {job["job_name"]: job for job in config.get("scrape_configs", [])}
    if not check("mqd" in jobs, "examples/monitoring/prometheus.yml: no job mqd"):
        return
    job = jobs["mqd"]
    check(job.get("metrics_path", "/metrics") == "/metrics", "examples/monitoring/prometheus.yml: mqd's metrics are at /metrics")
    targets = sorted(t for c in job.get("static_configs", []) for t in c.get("targets", []))
    expected = sorted(f"{name}:{broker['_port']}" for name, broker in brokers.items())
    check(targets == expected, f"examples/monitoring/prometheus.yml: the mqd job scrapes {targets}, the brokers are {expected}")
    check(set(service.get("depends_on", [])) >= set(brokers), "compose: prometheus does not depend on the brokers")


def check_replicated_compose(repo):
    """examples/replicated/docker-compose.yml: three brokers, R=3, min ISR 2, every broker pointed at the
    etcd service's advertised client URL, BROKER_ADDRS in index order, a volume each."""
    path = os.path.join(repo, "examples/replicated/docker-compose.yml")
    compose = yaml.safe_load(read(path))
    services = compose.get("services", {})
    etcd = services.get("etcd")
    if not check(etcd is not None, "replicated compose: no etcd service"):
        return
    flags = dict(a.lstrip("-").split("=", 1) for a in etcd.get("command", []) if a.startswith("--") and "=" in a)
    advertised = flags.get("advertise-client-urls", "")
    check(advertised.startswith("http://etcd:"), f"replicated compose: etcd advertises {advertised!r}")
    check(any(v.endswith(":" + flags.get("data-dir", "?")) for v in etcd.get("volumes", [])),
          "replicated compose: etcd's data directory is not a volume")
    brokers = {n: s for n, s in services.items() if s.get("image") == "msg_queue"}
    check(len(brokers) == 3, f"replicated compose: expected three brokers, found {sorted(brokers)}")
    indexes = {}
    for name, service in brokers.items():
        env = {k: str(v) for k, v in service.get("environment", {}).items()}
        check(service.get("build") == "../..", f"replicated compose: {name} is not built from the repository")
        check(env.get("BROKER_COUNT") == str(len(brokers)), f"replicated compose: {name} BROKER_COUNT")
        check(env.get("ETCD_ENDPOINTS") == advertised, f"replicated compose: {name} ETCD_ENDPOINTS {env.get('ETCD_ENDPOINTS')} != {advertised}")
        check(env.get("REPLICATION_FACTOR") == "3" and env.get("MIN_INSYNC_REPLICAS") == "2",
              f"replicated compose: {name} is not R=3, min ISR 2")
        check("etcd" in service.get("depends_on", []), f"replicated compose: {name} does not depend on etcd")
        check(any(v.endswith(":/root/data") for v in service.get("volumes", [])), f"replicated compose: {name} has no volume at /root/data")
        indexes[int(env.get("BROKER_INDEX", "-1"))] = (name, env)
    check(sorted(indexes) == list(range(len(brokers))), f"replicated compose: broker indexes {sorted(indexes)}")
    expected = ",".join(f"http://{indexes[i][0]}:{indexes[i][1].get('PORT', '8080')}" for i in sorted(indexes))
    for name, env in indexes.values():
        check(env.get("BROKER_ADDRS") == expected, f"replicated compose: {name} BROKER_ADDRS {env.get('BROKER_ADDRS')} != {expected}")
    volumes = [v for s in brokers.values() for v in s.get("volumes", [])]
    check(len(set(volumes)) == len(volumes), "replicated compose: brokers share a volume")


# ---------------------------------------------------------------- Kubernetes
def kubernetes_documents(directory):
    documents = []
    for file in sorted(os.listdir(directory)):
        if file.endswith((".yaml", ".yml")):
            documents += [d for d in yaml.safe_load_all(read(os.path.join(directory, file))) if d]
    return documents


def check_kubernetes(repo):
    documents = kubernetes_documents(os.path.join(repo, "examples/kubernetes"))
    sets = [d for d in documents if d.get("kind") == "StatefulSet"]
    if not check(len(sets) == 1, "kubernetes: expected one StatefulSet"):
        return
    check_broker_set(sets[0], documents, "kubernetes")


def check_kubernetes_replicated(repo):
    """examples/kubernetes/replicated: an etcd StatefulSet and the brokers', R=3, min ISR 2, every broker
    pointed at the URL etcd advertises (through its headless Service)."""
    label = "replicated kubernetes"
    documents = kubernetes_documents(os.path.join(repo, "examples/kubernetes/replicated"))
    sets = {d["metadata"]["name"]: d for d in documents if d.get("kind") == "StatefulSet"}
    brokers = [s for s in sets.values() if s["spec"]["template"]["spec"]["containers"][0]["name"] == "mqd"]
    etcds = [s for s in sets.values() if s["spec"]["template"]["spec"]["containers"][0]["name"] == "etcd"]
    if not check(len(brokers) == 1 and len(etcds) == 1, f"{label}: expected one mqd and one etcd StatefulSet"):
        return
    etcd = etcds[0]["spec"]
    # The brokers' part, without etcd's own Service.
    env = check_broker_set(brokers[0], [d for d in documents if not (d.get("kind") == "Service" and
                                                                    d["metadata"]["name"] == etcd.get("serviceName"))],
                           label)
    command = etcd["template"]["spec"]["containers"][0].get("command", [])
    flags = dict(arg[2:].split("=", 1) for arg in command if arg.startswith("--") and "=" in arg)
    advertised = flags.get("advertise-client-urls", "")
    name, service = etcds[0]["metadata"]["name"], etcd.get("serviceName")
    check(advertised.startswith(f"http://{name}-0.{service}:"),
          f"{label}: etcd advertises {advertised!r}, not its pod's stable name {name}-0.{service}")
    services = {d["metadata"]["name"]: d for d in documents if d.get("kind") == "Service"}
    check(service in services and services[service]["spec"].get("clusterIP") == "None",
          f"{label}: etcd's serviceName {service!r} must be a headless Service")
    check(env.get("ETCD_ENDPOINTS") == advertised, f"{label}: ETCD_ENDPOINTS {env.get('ETCD_ENDPOINTS')} != {advertised}")
    check(env.get("REPLICATION_FACTOR") == "3" and env.get("MIN_INSYNC_REPLICAS") == "2", f"{label}: not R=3, min ISR 2")
    claims = {c["metadata"]["name"] for c in etcd.get("volumeClaimTemplates", [])}
    mounts = {m["name"]: m["mountPath"] for m in etcd["template"]["spec"]["containers"][0].get("volumeMounts", [])}
    check(any(mounts.get(c) == flags.get("data-dir") for c in claims), f"{label}: etcd's data directory is not a volume")


def check_broker_set(sts, documents, label):
    """The brokers' StatefulSet: stable names, BROKER_* matching the replicas, a volume at /root/data,
    probes on /healthz. Returns the mqd container's environment."""
    name, spec = sts["metadata"]["name"], sts["spec"]
    replicas = spec.get("replicas", 1)
    services = {d["metadata"]["name"]: d for d in documents if d.get("kind") == "Service"}
    headless = services.get(spec.get("serviceName"))
    check(headless is not None and headless["spec"].get("clusterIP") == "None",
          f"{label}: serviceName {spec.get('serviceName')!r} must be a headless Service (clusterIP: None)")
    pod_labels = spec["template"]["metadata"]["labels"]
    check(spec["selector"]["matchLabels"].items() <= pod_labels.items(), f"{label}: the selector misses the pods")
    for service in services.values():
        check(service["spec"].get("selector", {}).items() <= pod_labels.items(),
              f"{label}: Service {service['metadata']['name']} selects no broker pod")
    containers = spec["template"]["spec"]["containers"]
    mqd = containers[0]
    env = {e["name"]: str(e.get("value")) for e in mqd.get("env", [])}
    port = int(env.get("PORT", "8080"))
    ports = {p.get("name"): p["containerPort"] for p in mqd.get("ports", [])}
    check(port in ports.values(), f"{label}: PORT {port} is not a containerPort")
    check(env.get("BROKER_INDEX") == "auto", f"{label}: BROKER_INDEX must be auto (pod mq-2 is broker 2)")
    check(env.get("BROKER_COUNT") == str(replicas), f"{label}: BROKER_COUNT {env.get('BROKER_COUNT')} != replicas {replicas}")
    expected = [f"http://{name}-{i}.{spec.get('serviceName')}:{port}" for i in range(replicas)]
    check(env.get("BROKER_ADDRS", "").split(",") == expected,
          f"{label}: BROKER_ADDRS {env.get('BROKER_ADDRS')} != {','.join(expected)}")
    check(env.get("DATA_DIR", "/root/data") == "/root/data", f"{label}: DATA_DIR must be /root/data")
    claims = {c["metadata"]["name"] for c in spec.get("volumeClaimTemplates", [])}
    mounts = {m["name"]: m["mountPath"] for m in mqd.get("volumeMounts", [])}
    check(any(mounts.get(c) == "/root/data" for c in claims),
          f"{label}: no volume claim template mounted at /root/data (claims {claims}, mounts {mounts})")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        http = mqd.get(probe, {}).get("httpGet", {})
        probe_port = ports.get(http.get("port"), http.get("port"))
        check(http.get("path") == "/healthz" and probe_port == port, f"{label}: {probe} must GET /healthz on {port}")
    for service in services.values():
        for p in service["spec"].get("ports", []):
            target = p.get("targetPort", p["port"])
            check(ports.get(target, target) == port, f"{label}: Service {service['metadata']['name']} targets {target}")
    return env


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repo", required=True)
    parser.add_argument("--build-root", help="run the Dockerfile's build steps with /build here")
    parser.add_argument("--built-tree", help="a build tree of this project that has built mqd and the services "
                        "(whose shared libraries are checked against the runtime stages' packages)")
    args = parser.parse_args()
    if args.build_root and not args.built_tree:
        parser.error("--build-root needs --built-tree")
    check_dockerfile(args.repo, args.build_root, args.built_tree)
    check_compose(args.repo)
    check_replicated_compose(args.repo)
    check_kubernetes(args.repo)
    check_kubernetes_replicated(args.repo)
    for failure in failures:
        print("FAILED:", failure)
    print(f"deploy_test: {len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
