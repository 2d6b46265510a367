#!/bin/sh
# Makes sure a browser is on this machine for the desk's browser tests (tests/desk/), which drive
# Debian's Chromium through Playwright for Python (`executable_path`; Playwright never downloads a
# browser of its own here), with a CJK font so that Chinese pages render in screenshots.
#
# Nothing to do when /usr/lib/chromium/chromium (or DESK_CHROMIUM) is there and the Noto CJK
# fonts are installed, or when SKIP_BROWSER_TESTS=1. Otherwise, as root on Debian/Ubuntu,
# installs Debian's `chromium` and `fonts-noto-cjk` packages non-interactively. Anyone else gets
# a message saying what to do, and `make test` stops.
set -eu

if [ "${SKIP_BROWSER_TESTS:-}" = "1" ]; then
    exit 0
fi
BROWSER="${DESK_CHROMIUM:-/usr/lib/chromium/chromium}"
have_all() {
    [ -x "$BROWSER" ] && [ -d /usr/share/fonts/opentype/noto ] && ls /usr/share/fonts/opentype/noto/NotoSansCJK* >/dev/null 2>&1
}
if have_all; then
    exit 0
fi

if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "ensure-chromium: Chromium or the CJK fonts not found; installing Debian's chromium and fonts-noto-cjk" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold chromium fonts-noto-cjk >/dev/null
    if have_all; then
        exit 0
    fi
    echo "ensure-chromium: installed chromium but found no $BROWSER or no Noto CJK font" >&2
    exit 1
fi

cat >&2 <<'MSG'
ensure-chromium: the desk's browser tests need Chromium and a CJK font, and they are not installed.
  Install them (Debian/Ubuntu: sudo apt-get install chromium fonts-noto-cjk; or set DESK_CHROMIUM
  to a Chromium binary), or run without the browser tests: SKIP_BROWSER_TESTS=1 make test
MSG
exit 1
