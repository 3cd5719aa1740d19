"""The nodes run the data path and the cipher CI asked for (CI tests both of each)."""

from __future__ import annotations

import os

import pytest

pytestmark = pytest.mark.system


def test_nodes_run_the_requested_data_path(lab):
    asked = os.environ.get("CYPHONIC_DATAPLANE", "offload")
    wanted, loops = {"offload": ("offload", "compiled"), "python": ("offload", "python"), "plain": ("plain", "python")}[
        asked
    ]
    for host in ("mn", "cn", "adapter"):
        dataplane = lab.status(host)["dataplane"]
        assert dataplane["path"] == wanted, (host, dataplane)
        # the install step builds the compiled loops: a silent fallback would hide a regression
        assert dataplane["packet_loops"] == loops, (host, dataplane)
        if wanted == "offload" and host != "adapter":
            # this kernel has every offload: a silent fallback would hide a regression
            assert set(dataplane["tun_offloads"]) >= {"csum", "tso4", "tso6"}
            assert dataplane["udp_gso"] and dataplane["udp_gro"]


def test_tunnels_use_the_requested_cipher(lab):
    from cyphonic import crypto

    asked = os.environ.get("CYPHONIC_CIPHER", "auto")
    wanted = asked if asked != "auto" else crypto.AES256_GCM if crypto.aes_available() else crypto.CHACHA20_POLY1305
    done = lab.run("mn", ["ping", "-c", "1", "-W", "3", "cn.cyphonic.test"], timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr
    for host, peer in (("mn", "cn"), ("cn", "mn")):
        [row] = [p for p in lab.status(host)["peers"] if p["fqdn"] == f"{peer}.cyphonic.test"]
        assert row["cipher"] == wanted, (host, row)
