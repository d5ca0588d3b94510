#!/usr/bin/env sh
# The dashboard's browser tests (tests/brokers/test_dashboard_browser.py) drive Debian's chromium
# through Playwright: Playwright's own browser downloads are not used.
# Install the package when this can (root, apt-get); otherwise say so: the
# browser tests then skip, or fail under CI=true.
set -u
for name in chromium chromium-browser; do
    if command -v "$name" >/dev/null 2>&1; then
        exit 0
    fi
done
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "tools/ensure_chromium.sh: installing Debian's chromium for the browser tests" >&2
    if apt-get install -y -q chromium >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; }; then
        exit 0
    fi
fi
echo "tools/ensure_chromium.sh: no chromium (apt-get install chromium): the browser tests will be skipped" >&2
exit 0
