"""The operator's commands that keep the AS's record of general nodes:
`cyphonic enroll adapter`, `cyphonic adapter add|remove|list`."""

from __future__ import annotations

import ipaddress
import json
import time
from pathlib import Path

import pytest

from cyphonic import cli, config, crypto, keys
from cyphonic.adapter import settings as adapter_settings
from cyphonic.auth import settings as auth_settings
from cyphonic.auth.service import AuthenticationService
from cyphonic.cloud import settings as cloud_settings
from cyphonic.core.login import LoginClient, LoginRefused
from cyphonic.keys import RevocationList
from cyphonic.wire.common import parse
from tests.unit.test_general_nodes import ask
from tests.unit.test_services import DOMAIN

ADAPTER = ("198.51.100.20", 4500)
ELSEWHERE = ("203.0.113.66", 4500)
TV, CAM, LAMP = "02:00:5e:00:53:01", "02:00:5e:00:53:02", "02:00:5e:00:53:03"


# --- the operator's commands ------------------------------------------------------------------


@pytest.fixture
def ca(tmp_path) -> Path:
    d = tmp_path / "ca"
    assert cli.main(["ca", "init", "--dir", str(d), "--domain", DOMAIN]) == 0
    return d


def enroll_adapter(ca: Path, out: Path, name: str, *general: str, extra=()) -> int:
    argv = ["enroll", "adapter", name, "--ca", str(ca), "--out", str(out), "--cloud", "192.0.2.1", *extra]
    for g in general:
        argv += ["--general-node", g]
    return cli.main(argv)


def as_of(ca: Path) -> AuthenticationService:
    """The AS that `python -m cyphonic.cloud --config cloud.toml` would run."""
    return auth_settings.build(config.load(ca / "cloud.toml", cloud_settings.SCHEMA))


EXPECTED_TOML = f"""# CYPHONIC adapter hall.{DOMAIN}
certificate = "adapter.crt"
key = "adapter.key"
ca = "ca.crt"
auth = ["192.0.2.1:7000", "[2001:db8::1]:7000"]
nms = ["192.0.2.1:7001", "[2001:db8::1]:7001"]
listen_port = 4500
lan = "eth1"
mtu = 1400
general_nodes = "general"
leases = "leases.json"

[resolver]
upstream = []
"""


def test_enroll_adapter_writes_a_loadable_bundle(ca, tmp_path):
    out = tmp_path / "hall"
    extra = ("--cloud", "2001:db8::1", "--lan", "eth1")
    assert enroll_adapter(ca, out, "hall", f"{TV.upper()}=tv,ipv6", f"{CAM}=cam", extra=extra) == 0
    assert (out / "adapter.toml").read_text() == EXPECTED_TOML
    cfg = config.load(out / "adapter.toml", adapter_settings.SCHEMA)
    assert cfg["lan"] == "eth1" and cfg["general_nodes"] == out / "general"
    now = time.time()
    ca_public = crypto.ca_public_key(keys.read_certificate(cfg["ca"]))
    adapter = crypto.verify_certificate(keys.read_certificate(cfg["certificate"]), ca_public, now, role="adapter")
    assert adapter.fqdn == f"hall.{DOMAIN}"
    assert bytes(adapter.sign_key) == crypto.Identity.load(cfg["key"]).sign_public
    for name in ("tv", "cam"):
        identity = crypto.Identity.load(out / "general" / f"{name}.key")
        body = crypto.verify_certificate(keys.read_certificate(out / "general" / f"{name}.crt"), ca_public, now)
        assert (str(body.role), body.fqdn) == ("general", f"{name}.{DOMAIN}")
        assert bytes(body.sign_key) == identity.sign_public and bytes(body.dh_key) == identity.dh_public
        assert (out / "general" / f"{name}.key").stat().st_mode & 0o077 == 0
    auth = as_of(ca)
    assert [(g.mac, g.fqdn, g.adapter, g.ipv6) for g in auth.store.general_nodes(f"hall.{DOMAIN}")] == [
        (CAM, f"cam.{DOMAIN}", f"hall.{DOMAIN}", False),
        (TV, f"tv.{DOMAIN}", f"hall.{DOMAIN}", True),
    ]
    # the AS lists them to the adapter, and lets each log in with its own identity
    listed = ask(auth, ca_public, bundle_identity(out / "adapter.key"), now=now)
    assert [g.fqdn for g in listed] == [f"cam.{DOMAIN}", f"tv.{DOMAIN}"]
    grant = login_with(auth, ca_public, bundle_identity(out / "general" / "tv.key"), now)
    assert (grant.vip4, grant.vip6) == (listed[1].vip4, listed[1].vip6)
    auth.store.close()


@pytest.mark.parametrize(
    "general, bad",
    [
        (["01:00:5e:00:00:01=tv"], "01:00:5e:00:00:01"),
        (["00:00:00:00:00:00=tv"], "00:00:00:00:00:00"),
        (["nonsense=tv"], "nonsense"),
        ([TV], TV),
        ([f"{TV}=tv,ipv9"], "ipv9"),
        ([f"{TV}=tv/../x"], "tv/../x"),
        ([f"{TV}=tv", f"{TV}=cam"], TV),
        ([f"{TV}=tv", f"{CAM}=tv"], "tv"),
        ([f"{TV}=hall"], "hall"),
    ],
)
def test_enroll_adapter_refuses_a_bad_general_node_in_one_line(ca, tmp_path, capsys, general, bad):
    assert enroll_adapter(ca, tmp_path / "hall", "hall", *general) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("cyphonic enroll adapter: ") and bad in err
    assert not (tmp_path / "hall").exists()


def test_enroll_adapter_refuses_a_mac_or_name_another_adapter_has(ca, tmp_path, capsys):
    assert enroll_adapter(ca, tmp_path / "hall", "hall", f"{TV}=tv") == 0
    capsys.readouterr()
    assert enroll_adapter(ca, tmp_path / "shed", "shed", f"{TV.upper()}=lamp") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and TV in err and f"hall.{DOMAIN}" in err
    assert enroll_adapter(ca, tmp_path / "shed", "shed", f"{CAM}=tv") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"tv.{DOMAIN}" in err
    assert not (tmp_path / "shed").exists()
    assert [(r["mac"], r["adapter"]) for r in listing(ca, capsys)] == [(TV, f"hall.{DOMAIN}")]


def test_adapter_add_list_and_remove(ca, tmp_path, capsys):
    bundle = tmp_path / "hall"
    assert enroll_adapter(ca, bundle, "hall", f"{TV}=tv") == 0
    assert adapter_cli(ca, bundle, "add", f"{CAM}=cam,ipv6", f"{LAMP}=lamp") == 0
    names = ["cam.crt", "cam.key", "lamp.crt", "lamp.key", "tv.crt", "tv.key"]
    assert sorted(p.name for p in (bundle / "general").iterdir()) == names
    rows = listing(ca, capsys, "--adapter", "hall")
    assert [(r["mac"], r["fqdn"], r["ipv6"]) for r in rows] == [
        (CAM, f"cam.{DOMAIN}", True),
        (LAMP, f"lamp.{DOMAIN}", False),
        (TV, f"tv.{DOMAIN}", False),
    ]
    assert len({r["vip4"] for r in rows}) == len({r["vip6"] for r in rows}) == 3
    assert all(ipaddress.ip_address(r["vip4"]) in ipaddress.ip_network("10.96.0.0/16") for r in rows)
    assert listing(ca, capsys, "--adapter", "shed") == []

    auth = as_of(ca)
    ca_public = crypto.ca_public_key(keys.read_certificate(ca / "ca.crt"))
    now = time.time()
    tv = bundle_identity(bundle / "general" / "tv.key")
    assert login_with(auth, ca_public, tv, now).fqdn == f"tv.{DOMAIN}"

    assert adapter_cli(ca, bundle, "remove", "tv", LAMP.upper()) == 0
    assert sorted(p.name for p in (bundle / "general").iterdir()) == ["cam.crt", "cam.key"]
    assert [r["fqdn"] for r in listing(ca, capsys)] == [f"cam.{DOMAIN}"]
    serial = parse(crypto.wire_cert.Certificate, tv[0]).body.value.serial
    assert serial in RevocationList(ca / "revoked.txt")()
    with pytest.raises(LoginRefused) as info:  # its certificate is revoked, and no adapter serves it
        login_with(auth, ca_public, tv, now + 1)
    assert info.value.reason == "revoked"
    assert [g.fqdn for g in ask(auth, ca_public, bundle_identity(bundle / "adapter.key"), now=now + 1)] == [
        f"cam.{DOMAIN}"
    ]
    auth.store.close()

    capsys.readouterr()
    assert cli.main(["adapter", "list", "--ca", str(ca)]) == 0
    out = capsys.readouterr().out
    assert CAM in out and f"cam.{DOMAIN}" in out and f"hall.{DOMAIN}" in out


def test_adapter_add_keeps_an_existing_identity_and_updates_ipv6(ca, tmp_path, capsys):
    bundle = tmp_path / "hall"
    assert enroll_adapter(ca, bundle, "hall", f"{TV}=tv") == 0
    key = (bundle / "general" / "tv.key").read_text()
    assert adapter_cli(ca, bundle, "add", f"{TV}=tv,ipv6") == 0
    assert (bundle / "general" / "tv.key").read_text() == key
    assert [r["ipv6"] for r in listing(ca, capsys)] == [True]


def test_adapter_commands_refuse_another_adapters_general_nodes_and_bundles(ca, tmp_path, capsys):
    hall, shed = tmp_path / "hall", tmp_path / "shed"
    assert enroll_adapter(ca, hall, "hall", f"{TV}=tv") == 0
    assert enroll_adapter(ca, shed, "shed", f"{CAM}=cam") == 0
    capsys.readouterr()
    shed_remove = ["adapter", "remove", "--ca", str(ca), "--bundle", str(shed), "--adapter", "shed"]
    assert cli.main([*shed_remove, "tv"]) == 2
    assert f"hall.{DOMAIN}" in capsys.readouterr().err
    assert cli.main([*shed_remove, LAMP]) == 2
    assert "no general node" in capsys.readouterr().err
    assert adapter_cli(ca, shed, "add", f"{LAMP}=lamp") == 2  # the bundle is shed's, not hall's
    assert f"shed.{DOMAIN}" in capsys.readouterr().err
    assert adapter_cli(ca, hall, "add", f"{CAM}=camera") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and CAM in err
    assert (hall / "general" / "tv.key").exists() and not (hall / "general" / "camera.key").exists()
    assert len(listing(ca, capsys)) == 2


# helpers of the command tests


def adapter_cli(ca: Path, bundle: Path, command: str, *args: str) -> int:
    return cli.main(["adapter", command, "--ca", str(ca), "--bundle", str(bundle), "--adapter", "hall", *args])


def listing(ca: Path, capsys, *args: str) -> list[dict]:
    capsys.readouterr()
    assert cli.main(["adapter", "list", "--ca", str(ca), "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def bundle_identity(key: Path) -> tuple[bytes, crypto.Identity]:
    """(certificate, identity) of `name`.key and `name`.crt in a bundle."""
    return keys.read_certificate(key.with_suffix(".crt")), crypto.Identity.load(key)


def login_with(auth: AuthenticationService, ca_public: bytes, cert_ident, now: float):
    cert, ident = cert_ident
    client = LoginClient(ident, cert, ca_public, now)
    [(reply, _)] = auth.receive(client.request, ADAPTER, now)
    return client.accept(reply, now)
