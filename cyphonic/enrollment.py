"""Enrollment bundles: what a node or an adapter takes home from the CA
(keys, certificates, its config), and the AS's record of the general nodes
each adapter serves (seed: "General Node Management").

A general node is a stock device on an adapter's LAN, known by its MAC
address, with its own CYPHONIC identity (role `general`) that its adapter
holds for it in the bundle's `general/` directory. The AS lists them to the
adapter in a Node Information Response and lets one log in only while an
adapter serves it.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import re
import secrets
import sqlite3
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cyphonic import crypto, keys
from cyphonic.auth.settings import DEFAULT_VIP4, DEFAULT_VIP6
from cyphonic.store import GeneralNode, GeneralNodeConflict, Store, canonical_mac

DAY = 86400
GENERAL_DIR = "general"
# One DNS label (RFC 1035 2.3.1, lower case): the first label of the FQDN is
# also the stem of a general node's key and certificate files, which is how
# its adapter finds them.
NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
IFNAME = re.compile(r"[A-Za-z0-9_.:-]{1,15}")  # IFNAMSIZ 16, with the NUL
# A locked AS database (the AS is writing) is worth waiting for here.
CLI_DB_TIMEOUT = 5.0


class EnrollmentError(Exception):
    """A value the operator gave that cannot be enrolled: one line, exit 2."""


@dataclass(frozen=True)
class GeneralNodeSpec:
    """MAC=NAME[,ipv6] of the command line."""

    mac: str  # canonical: aa:bb:cc:dd:ee:ff
    name: str
    ipv6: bool


# --- pieces every bundle shares ------------------------------------------------


def new_serial() -> int:
    return secrets.randbits(63)


def domain_of(ca_dir: Path) -> str:
    try:
        return tomllib.loads((ca_dir / "cloud.toml").read_text())["domain"]
    except (OSError, tomllib.TOMLDecodeError, KeyError) as exc:
        raise EnrollmentError(f"{ca_dir} is not a CA directory (cloud.toml: {exc})") from None


def validity(start: dt.date | None, days: int) -> tuple[int, int]:
    """(not_before, not_after) of a certificate valid `days` from `start`
    (midnight UTC), or from a minute ago."""
    begin = int(dt.datetime.combine(start, dt.time(), dt.UTC).timestamp()) if start else int(time.time()) - 60
    return begin, begin + days * DAY


def issue(ca: crypto.Identity, role: str, fqdn: str, period: tuple[int, int]) -> tuple[crypto.Identity, bytes]:
    """A new identity and its certificate."""
    holder = crypto.Identity.generate()
    cert = crypto.issue_certificate(
        ca,
        serial=new_serial(),
        role=role,
        fqdn=fqdn,
        sign_key=holder.sign_public,
        dh_key=holder.dh_public,
        not_before=period[0],
        not_after=period[1],
    )
    return holder, cert


def write_identity(directory: Path, stem: str, holder: crypto.Identity, cert: bytes) -> None:
    """`stem`.key (mode 600) and `stem`.crt in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    holder.save(directory / f"{stem}.key")
    (directory / f"{stem}.crt").write_text(keys.certificate_to_pem(cert))


def cloud_lists(clouds: list[str]) -> tuple[str, str]:
    """The `auth` and `nms` TOML lists of a bundle's config for these cloud addresses."""
    hosts = [f"[{a}]" if ":" in a else a for a in clouds]
    return ", ".join(f'"{h}:7000"' for h in hosts), ", ".join(f'"{h}:7001"' for h in hosts)


def append_revoked(ca_dir: Path, serial: int, fqdn: str) -> None:
    """`serial` into the CA's revoked.txt, which the AS and NMS re-read."""
    with open(ca_dir / "revoked.txt", "a") as f:
        f.write(f"{serial}  # {fqdn} revoked {dt.datetime.now(dt.UTC):%Y-%m-%dT%H:%M:%SZ}\n")


# --- values from the command line ---------------------------------------------------


def label(name: str, domain: str) -> str:
    """NAME (or NAME.<domain>), checked, lower case, without the domain."""
    short = name.strip().lower().removesuffix("." + domain)
    if not NAME.fullmatch(short) or len(f"{short}.{domain}") > 253:
        raise EnrollmentError(f"{name!r} is not a name (one DNS label: letters, digits, '-')")
    return short


def general_node_spec(text: str, domain: str) -> GeneralNodeSpec:
    """MAC=NAME[,ipv6]."""
    mac, sep, rest = text.partition("=")
    name, *options = rest.split(",")
    if not sep or not name or any(o != "ipv6" for o in options):
        raise EnrollmentError(f"{text!r} is not MAC=NAME[,ipv6]")
    try:
        canonical = canonical_mac(mac)
    except ValueError as exc:
        raise EnrollmentError(str(exc)) from None
    return GeneralNodeSpec(canonical, label(name, domain), "ipv6" in options)


def general_node_specs(texts: list[str], domain: str) -> list[GeneralNodeSpec]:
    specs = [general_node_spec(t, domain) for t in texts]
    for what in ("mac", "name"):
        values = [getattr(s, what) for s in specs]
        for value in values:
            if values.count(value) > 1:
                raise EnrollmentError(f"{value} is given twice")
    return specs


def open_store(ca_dir: Path) -> Store:
    """The AS database of the CA directory's cloud.toml."""
    auth = tomllib.loads((ca_dir / "cloud.toml").read_text()).get("auth", {})
    return Store(
        ca_dir / auth.get("database", "cloud.sqlite"),
        ipaddress.ip_network(auth.get("vip4_pool", DEFAULT_VIP4)),
        ipaddress.ip_network(auth.get("vip6_pool", DEFAULT_VIP6)),
        timeout=CLI_DB_TIMEOUT,
    )


@contextmanager
def _authority(ca_dir: Path) -> Iterator[tuple[str, Store]]:
    """The CA directory's domain and its AS database."""
    domain = domain_of(ca_dir)
    store = open_store(ca_dir)
    try:
        yield domain, store
    finally:
        store.close()


def guarded(command: str, action: Callable[[], int]) -> int:
    """`action`'s exit status; a bad value is one line and exit 2."""
    try:
        return action()
    except EnrollmentError as exc:
        print(f"cyphonic {command}: {exc}", file=sys.stderr)
        return 2
    except sqlite3.Error as exc:  # e.g. the AS holds it locked for longer than we wait
        print(f"cyphonic {command}: AS database: {exc}", file=sys.stderr)
        return 1


# --- general nodes -------------------------------------------------------------------


def check_conflicts(store: Store, specs: list[GeneralNodeSpec], domain: str, adapter: str) -> None:
    for spec in specs:
        conflict = store.general_node_conflict(spec.mac, f"{spec.name}.{domain}", adapter)
        if conflict is not None:
            raise EnrollmentError(conflict)


def enroll_general_nodes(
    store: Store,
    ca: crypto.Identity,
    specs: list[GeneralNodeSpec],
    domain: str,
    adapter: str,
    bundle: Path,
    period: tuple[int, int],
) -> list[GeneralNode]:
    """Issues each general node's identity into `bundle`/general (unless
    it is there already) and records it, with its virtual IPs, for
    `adapter`; a conflict is an EnrollmentError before anything is written."""
    check_conflicts(store, specs, domain, adapter)
    recorded = []
    for spec in specs:
        fqdn = f"{spec.name}.{domain}"
        known = store.general_node_by_fqdn(fqdn)
        if known is None or not (bundle / GENERAL_DIR / f"{spec.name}.key").exists():
            write_identity(bundle / GENERAL_DIR, spec.name, *issue(ca, "general", fqdn, period))
        try:
            recorded.append(store.add_general_node(spec.mac, fqdn, adapter, spec.ipv6))
        except GeneralNodeConflict as exc:  # another operator was quicker
            raise EnrollmentError(str(exc)) from None
        store.reserve(fqdn)
    return recorded


def enroll_adapter(args) -> int:
    """`cyphonic enroll adapter`: a bundle for NAME.<domain> and its general nodes."""
    return guarded("enroll adapter", lambda: _enroll_adapter(args))


def _enroll_adapter(args) -> int:
    if not IFNAME.fullmatch(args.lan):
        raise EnrollmentError(f"--lan {args.lan!r} is not an interface name")
    for address in args.cloud:
        _ip(address)
    with _authority(args.ca) as (domain, store):
        name = label(args.name, domain)
        fqdn = f"{name}.{domain}"
        specs = general_node_specs(args.general_node, domain)
        if any(s.name == name for s in specs):
            raise EnrollmentError(f"{name} is the adapter's own name")
        check_conflicts(store, specs, domain, fqdn)  # before writing anything
        ca = crypto.Identity.load(args.ca / "ca.key")
        period = validity(args.start, args.days)
        out: Path = args.out
        write_identity(out, "adapter", *issue(ca, "adapter", fqdn, period))
        (out / "ca.crt").write_text((args.ca / "ca.crt").read_text())
        (out / "adapter.toml").write_text(adapter_toml(fqdn, args.cloud, args.lan))
        for spec in specs:  # a new bundle: every general node gets a new identity too
            (out / GENERAL_DIR / f"{spec.name}.key").unlink(missing_ok=True)
        nodes = enroll_general_nodes(store, ca, specs, domain, fqdn, out, period)
    print(f"enrolled adapter {fqdn} with {len(nodes)} general nodes in {out}")
    return 0


def adapter_toml(fqdn: str, clouds: list[str], lan: str) -> str:
    """The adapter daemon's config (its keys are read by cyphonic.adapter)."""
    auth, nms = cloud_lists(clouds)
    return f"""# CYPHONIC adapter {fqdn}
certificate = "adapter.crt"
key = "adapter.key"
ca = "ca.crt"
auth = [{auth}]
nms = [{nms}]
listen_port = 4500
lan = "{lan}"
mtu = 1400
general_nodes = "{GENERAL_DIR}"
leases = "leases.json"

[resolver]
upstream = []
"""


def _ip(address: str) -> None:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        raise EnrollmentError(f"--cloud {address!r} is not an IP address") from None


def _certificate(path: Path):
    """The body of the certificate in `path` (not verified: it is ours)."""
    from cyphonic.wire import certificate as wire_cert
    from cyphonic.wire.common import parse

    return parse(wire_cert.Certificate, keys.read_certificate(path)).body.value


def _adapter(args, domain: str) -> str:
    """The FQDN of --adapter, whose bundle --bundle must be."""
    fqdn = f"{label(args.adapter, domain)}.{domain}"
    path = args.bundle / "adapter.crt"
    if not path.exists():
        raise EnrollmentError(f"{args.bundle} is not an adapter bundle (no adapter.crt)")
    holder = _certificate(path).fqdn
    if holder != fqdn:
        raise EnrollmentError(f"{args.bundle} is the bundle of {holder}, not of {fqdn}")
    return fqdn


def adapter_add(args) -> int:
    """`cyphonic adapter add`: general nodes for an enrolled adapter."""
    return guarded("adapter add", lambda: _adapter_add(args))


def _adapter_add(args) -> int:
    with _authority(args.ca) as (domain, store):
        adapter = _adapter(args, domain)
        specs = general_node_specs(args.general_node, domain)
        if any(f"{s.name}.{domain}" == adapter for s in specs):
            raise EnrollmentError(f"{adapter} is the adapter's own name")
        ca = crypto.Identity.load(args.ca / "ca.key")
        nodes = enroll_general_nodes(store, ca, specs, domain, adapter, args.bundle, validity(args.start, args.days))
    for node in nodes:
        print(f"{node.mac} {node.fqdn}{' (ipv6)' if node.ipv6 else ''} served by {adapter}")
    return 0


def adapter_remove(args) -> int:
    """`cyphonic adapter remove`: forget general nodes, revoke and delete their identities."""
    return guarded("adapter remove", lambda: _adapter_remove(args))


def _adapter_remove(args) -> int:
    with _authority(args.ca) as (domain, store):
        adapter = _adapter(args, domain)
        nodes = [_served(store, key, domain, adapter) for key in args.general_node]
        general = args.bundle / GENERAL_DIR
        for node in nodes:
            name = node.fqdn.removesuffix("." + domain)
            # revoked first: whatever fails later, the identity is dead
            _revoke(args.ca, store, general / f"{name}.crt", node.fqdn)
            store.remove_general_node(node.mac)
            for suffix in (".key", ".crt"):
                (general / f"{name}{suffix}").unlink(missing_ok=True)
            print(f"removed {node.mac} {node.fqdn} from {adapter}")
    return 0


def _served(store: Store, key: str, domain: str, adapter: str) -> GeneralNode:
    """The general node `key` (MAC, NAME or FQDN) of `adapter`."""
    node = store.general_node(key)
    if node is None:
        try:
            canonical_mac(key)
        except ValueError:
            node = store.general_node_by_fqdn(f"{label(key, domain)}.{domain}")
    if node is None:
        raise EnrollmentError(f"{key} is no general node")
    if node.adapter != adapter:
        raise EnrollmentError(f"{key} is a general node of {node.adapter}, not of {adapter}")
    return node


def _revoke(ca_dir: Path, store: Store, certificate: Path, fqdn: str) -> None:
    """Revokes the general node's certificate: the one in the bundle, and
    the one it last logged in with if that is another."""
    serials = set()
    if certificate.exists():
        serials.add(_certificate(certificate).serial)
    enrollment = store.lookup(fqdn)
    if enrollment is not None and enrollment.serial:
        serials.add(enrollment.serial)
    for serial in sorted(serials):
        append_revoked(ca_dir, serial, fqdn)
    if not serials:
        print(f"cyphonic adapter remove: {fqdn}: no certificate to revoke", file=sys.stderr)


def adapter_list(args) -> int:
    """`cyphonic adapter list`: general nodes, their adapter and virtual IPs."""
    return guarded("adapter list", lambda: _adapter_list(args))


def _adapter_list(args) -> int:
    with _authority(args.ca) as (domain, store):
        adapter = f"{label(args.adapter, domain)}.{domain}" if args.adapter else None
        rows = []
        for node in store.general_nodes(adapter):
            enrollment = store.lookup(node.fqdn)
            rows.append(
                dict(
                    mac=node.mac,
                    fqdn=node.fqdn,
                    adapter=node.adapter,
                    ipv6=node.ipv6,
                    vip4=str(enrollment.vip4) if enrollment else None,
                    vip6=str(enrollment.vip6) if enrollment else None,
                )
            )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'MAC':<17}  {'FQDN':<28} {'adapter':<28} {'ipv6':<4}  {'vip4':<15} vip6")
    for r in rows:
        print(
            f"{r['mac']:<17}  {r['fqdn']:<28} {r['adapter']:<28} {'yes' if r['ipv6'] else 'no':<4}"
            f"  {r['vip4'] or '-':<15} {r['vip6'] or '-'}"
        )
    if not rows:
        print("(no general nodes)")
    return 0
