#!/usr/bin/env bash
# Headless Chromium for tests/test_docs_site.py, which loads the built pages.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
    exit 0
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
command -v chromium
