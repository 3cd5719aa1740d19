"""The nodes run the data path CI asked for (both are tested in CI)."""

from __future__ import annotations

import os

import pytest

pytestmark = pytest.mark.system


def test_nodes_run_the_requested_data_path(lab):
    wanted = os.environ.get("CYPHONIC_DATAPLANE", "offload")
    for host in ("mn", "cn"):
        dataplane = lab.status(host)["dataplane"]
        assert dataplane["path"] == wanted, (host, dataplane)
        if wanted == "offload":
            # this kernel has every offload: a silent fallback would hide a regression
            assert set(dataplane["tun_offloads"]) >= {"csum", "tso4", "tso6"}
            assert dataplane["udp_gso"] and dataplane["udp_gro"]
