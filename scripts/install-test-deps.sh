#!/bin/sh
# Install the Debian packages the tests need, if missing: the capture tests
# (tests/test_capture.py) and the Redis-backed rate-limit and revocation tests
# (tests/test_ratelimit.py, which start a private redis-server when none answers on
# 127.0.0.1:6379).
#
#   xvfb                 headless X server (the RDP client's screen and the test server's)
#   freerdp2-x11         xfreerdp, the RDP client the rdp capture source runs
#   freerdp2-shadow-x11  freerdp-shadow-cli, the RDP server of scripts/rdp-test-server
#   fonts-dejavu-core    the font the test server's animated Tk app draws with
#   redis-server         a private Redis for the rate-limit and revocation tests
#   chromium             the browser the web UI tests drive (tests/test_ui_browser.py,
#                        Playwright with executable_path=/usr/bin/chromium)
#   nodejs npm           only when npm is missing: solc and hardhat (the anchoring contract
#                        is recompiled and the evm backend runs against a hardhat node)
#   python3-tk           only when PYTHON (default: python3) is Debian's own Python
#   prometheus           only when promtool is missing: `promtool check rules` on the
#                        shipped alert rules (tests/test_alert_rules.py)
#
# As root: runs `apt-get update` once and installs what is missing.  Otherwise: prints
# what is missing and exits 0, so the tests skip with that reason.  Exit 1 only if an
# install was attempted and failed.
set -eu

PYTHON="${PYTHON:-python3}"
PACKAGES="xvfb freerdp2-x11 freerdp2-shadow-x11 fonts-dejavu-core redis-server chromium"

installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

missing=""
for pkg in $PACKAGES; do
    installed "$pkg" || missing="$missing $pkg"
done
command -v npm >/dev/null 2>&1 || missing="$missing nodejs npm"
command -v promtool >/dev/null 2>&1 || missing="$missing prometheus"
if ! "$PYTHON" -c "import tkinter" 2>/dev/null; then
    case "$(command -v "$PYTHON" 2>/dev/null)" in
        /usr/bin/*) missing="$missing python3-tk" ;;
        *) echo "note: $PYTHON has no tkinter; the test server needs a Python with tkinter" >&2 ;;
    esac
fi

if [ -z "$missing" ]; then
    echo "test dependencies: all installed"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "test dependencies missing:$missing"
    echo "install them as root: apt-get install --no-install-recommends$missing"
    exit 0
fi

echo "installing:$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends $missing
