#!/usr/bin/env bash
# Installs everything CYPHONIC-py needs on a fresh Debian machine (as root),
# then runs the demo (`demo`) or the whole test suite (`test`).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
what=${1:-test}

if [ "$(id -u)" != 0 ]; then
  echo "bootstrap: run as root (it installs packages and builds network namespaces)" >&2
  exit 2
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
  python3 python3-venv python3-dev gcc iproute2 nftables iptables iperf3 \
  dnsutils iputils-ping tcpdump curl procps kmod isc-dhcp-client udhcpc \
  nebula wireguard-go wireguard-tools openvpn openssl >/dev/null

if [ ! -x .venv/bin/python ]; then
  /usr/bin/python3 -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip >/dev/null
.venv/bin/pip install -q -e '.[test]'
# the data path's compiled per-packet loops (cyphonic/fastpath; gcc and
# python3-dev above). pip built them already, but optionally (a machine
# without a compiler still installs); here a failed build must stop us
.venv/bin/python -m cyphonic.fastpath.build

case "$what" in
  demo) exec .venv/bin/cyphonic lab demo ;;
  test)
    # lint, format and types of the product first: cheap, and CI fails on them
    .venv/bin/ruff check cyphonic
    .venv/bin/ruff format --check cyphonic
    .venv/bin/mypy cyphonic
    # every tier once (the data-path stress test at its full 10^6 packets per
    # path; system tests on the compiled loops with cipher auto: AES-256-GCM
    # on a CPU with AES-NI), then the system tier again on the pure-Python
    # loops with ChaCha20-Poly1305 (but the tests marked control_plane or once:
    # their subject does not change with the loops), and the data path's on
    # the plain path
    CYPHONIC_STRESS_PACKETS=1000000 .venv/bin/python -m pytest -q -p no:cacheprovider tests
    CYPHONIC_DATAPLANE=python CYPHONIC_CIPHER=chacha20-poly1305 \
      .venv/bin/python -m pytest -q -p no:cacheprovider -m "not control_plane and not once" tests/system
    CYPHONIC_DATAPLANE=plain CYPHONIC_CIPHER=chacha20-poly1305 \
      exec .venv/bin/python -m pytest -q -p no:cacheprovider tests/system/test_dataplane.py ;;
  *) echo "bootstrap: unknown action '$what' (use demo or test)" >&2; exit 2 ;;
esac
