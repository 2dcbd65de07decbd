#!/usr/bin/env python3
"""The npm side of mqd/openapi.json's tests, run by ctest (tests/openapi/CMakeLists.txt):

  npm_tool.py --work DIR install
      installs the tools that tests/openapi/package-lock.json pins (`npm ci`) into DIR (a build
      directory: the source tree stays clean), unless DIR already holds that lock's install. Fails when
      node or npm is missing or the install fails: the tests that need the tools must not pass without them.
  npm_tool.py --work DIR lint DOCUMENT
      validates DOCUMENT as OpenAPI 3.1 with Redocly CLI (`redocly lint`, tests/openapi/redocly.yaml:
      the recommended-strict rules, so a warning fails too).
  npm_tool.py --work DIR conformance --mqd MQD --document DOCUMENT
      runs tests/openapi/conformance.mjs: a real mqd's answers against the document's schemas.
"""
import argparse
import hashlib
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def fail(message):
    print(f"npm_tool: FAILED: {message}", flush=True)
    sys.exit(1)


def tool(name):
    path = shutil.which(name)
    if path is None:
        fail(f"{name} is not installed (Node.js 20 and npm are needed by the OpenAPI tests)")
    return path


def lock_digest():
    digest = hashlib.sha256()
    for name in ("package.json", "package-lock.json"):
        with open(os.path.join(HERE, name), "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()


def install(work):
    os.makedirs(work, exist_ok=True)
    stamp = os.path.join(work, "installed.sha256")
    wanted = lock_digest()
    if os.path.isdir(os.path.join(work, "node_modules")) and os.path.exists(stamp):
        with open(stamp) as f:
            if f.read().strip() == wanted:
                print(f"npm_tool: {work} holds the pinned tools already", flush=True)
                return
    for name in ("package.json", "package-lock.json"):
        shutil.copyfile(os.path.join(HERE, name), os.path.join(work, name))
    if os.path.exists(stamp):
        os.remove(stamp)
    command = [tool("npm"), "ci", "--no-audit", "--no-fund", "--loglevel=error"]
    print(f"npm_tool: installing the pinned tools in {work}: {' '.join(command)}", flush=True)
    if subprocess.run(command, cwd=work, timeout=600).returncode != 0:
        fail("npm ci failed")
    with open(stamp, "w") as f:
        f.write(wanted + "\n")


def node_env():
    env = dict(os.environ)
    env["REDOCLY_TELEMETRY"] = "off"  # the network is for the package registry only
    env["REDOCLY_SUPPRESS_UPDATE_NOTICE"] = "true"
    env["NO_COLOR"] = "1"
    return env


def installed(work, *path):
    full = os.path.join(work, "node_modules", *path)
    if not os.path.exists(full):
        fail(f"{full} is missing: run the openapi.npm_install test (npm_tool.py install) first")
    return full


def lint(work, document):
    cli = installed(work, "@redocly", "cli", "bin", "cli.js")
    command = [tool("node"), cli, "lint", "--config", os.path.join(HERE, "redocly.yaml"), "--format=stylish",
               document]
    print(f"npm_tool: {' '.join(command)}", flush=True)
    result = subprocess.run(command, env=node_env(), timeout=300, capture_output=True, text=True)
    # Node 20 gets an end-of-support banner; everything else is the linter's.
    for line in (result.stdout + result.stderr).splitlines():
        if not any(c in line for c in "║╔╚"):
            print(line)
    if result.returncode != 0:
        fail(f"redocly lint found problems in {document}")
    print("npm_tool: 1 passed, 0 failed")


def conformance(work, mqd, document):
    installed(work, "ajv", "package.json")
    command = [tool("node"), os.path.join(HERE, "conformance.mjs"), "--mqd", mqd, "--document", document,
               "--node-modules", os.path.join(work, "node_modules")]
    print(f"npm_tool: {' '.join(command)}", flush=True)
    sys.exit(subprocess.run(command, env=node_env(), timeout=600).returncode)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", required=True, help="where the tools are installed (a build directory)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("install")
    lint_parser = sub.add_parser("lint")
    lint_parser.add_argument("document")
    conformance_parser = sub.add_parser("conformance")
    conformance_parser.add_argument("--mqd", required=True)
    conformance_parser.add_argument("--document", required=True)
    args = parser.parse_args()
    work = os.path.abspath(args.work)
    if args.command == "install":
        install(work)
    elif args.command == "lint":
        lint(work, os.path.abspath(args.document))
    else:
        conformance(work, os.path.abspath(args.mqd), os.path.abspath(args.document))


if __name__ == "__main__":
    main()
