#!/usr/bin/env bash
# Installs what the dashboard's browser test (tests/it/dashboard.rs driving
# tests/ui/test_dashboard.py) needs: Debian's headless Chromium and its
# WebDriver, and the Python `selenium` client. Idempotent: skips what is
# already there.
set -euo pipefail
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
fi
if ! python3 -c 'import selenium' 2>/dev/null; then
    python3 -m pip install --quiet --disable-pip-version-check 'selenium>=4.20,<5' \
        || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages 'selenium>=4.20,<5'
fi
chromium --version
