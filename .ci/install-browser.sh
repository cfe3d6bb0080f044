#!/usr/bin/env bash
# Installs Debian's chromium for the end-to-end browser test (tests/test_e2e_browser.py drives it
# with Playwright; `playwright install` cannot download browsers on our machines). Idempotent.
set -euo pipefail
if [ -x /usr/bin/chromium ] && [ "${1:-}" != "--force" ]; then
    echo "chromium already installed: $(/usr/bin/chromium --version 2>/dev/null || echo '?')"
    exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core fonts-noto-color-emoji >/dev/null
echo "installed: $(/usr/bin/chromium --version 2>/dev/null || echo chromium)"
