"""`cyphonic`: the operator's tool — CA and enrollment, status, the lab."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

from cyphonic import config_check, crypto, enrollment, keys, status_command, systemd
from cyphonic.auth.settings import DEFAULT_VIP4, DEFAULT_VIP6
from cyphonic.enrollment import DAY

GENERAL_NODE_HELP = "a general node: its MAC, its name, and ',ipv6' to serve it IPv6 too"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cyphonic", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    ca = sub.add_parser("ca", help="certificate authority").add_subparsers(dest="ca_command", required=True)
    init = ca.add_parser("init", help="create a CA, the AS identity and a cloud.toml")
    init.add_argument("--dir", type=Path, required=True)
    init.add_argument("--domain", required=True)
    init.add_argument(
        "--trs",
        action="append",
        default=[],
        metavar="ADDRESS",
        help="a Tunnel Relay Service's public address (repeat per family); writes trs.toml",
    )
    init.set_defaults(func=ca_init)
    revoke = ca.add_parser("revoke", help="revoke a certificate")
    revoke.add_argument("--ca", type=Path, required=True, help="the CA directory")
    revoke.add_argument("certificate", type=Path)
    revoke.set_defaults(func=ca_revoke)

    enroll = sub.add_parser("enroll", help="issue a bundle for a node or an adapter").add_subparsers(
        dest="kind", required=True
    )
    node = enroll.add_parser("node", help="certificate, keys and node.toml for NAME.<domain>")
    node.add_argument("name")
    node.add_argument("--ca", type=Path, required=True, help="the CA directory")
    node.add_argument("--out", type=Path, required=True)
    node.add_argument("--cloud", action="append", required=True, help="cloud address (repeat per family)")
    _validity_arguments(node)
    node.set_defaults(func=enroll_node)
    adapter = enroll.add_parser(
        "adapter", help="certificates, keys and adapter.toml for NAME.<domain> and its general nodes"
    )
    adapter.add_argument("name")
    adapter.add_argument("--ca", type=Path, required=True, help="the CA directory")
    adapter.add_argument("--out", type=Path, required=True)
    adapter.add_argument("--cloud", action="append", required=True, help="cloud address (repeat per family)")
    adapter.add_argument("--lan", default="lan0", help="the LAN interface of the general nodes (default lan0)")
    adapter.add_argument(
        "--general-node", action="append", default=[], metavar="MAC=NAME[,ipv6]", help=GENERAL_NODE_HELP
    )
    _validity_arguments(adapter)
    adapter.set_defaults(func=enrollment.enroll_adapter)

    general = sub.add_parser("adapter", help="the general nodes an adapter serves").add_subparsers(
        dest="adapter_command", required=True
    )
    add = general.add_parser("add", help="issue general nodes' identities into the bundle and record them")
    remove = general.add_parser("remove", help="forget general nodes, revoke and delete their identities")
    for command in (add, remove):
        command.add_argument("--ca", type=Path, required=True, help="the CA directory")
        command.add_argument("--bundle", type=Path, required=True, help="the adapter's bundle directory")
        command.add_argument("--adapter", required=True, metavar="NAME")
    add.add_argument("general_node", nargs="+", metavar="MAC=NAME[,ipv6]", help=GENERAL_NODE_HELP)
    _validity_arguments(add)
    add.set_defaults(func=enrollment.adapter_add)
    remove.add_argument("general_node", nargs="+", metavar="MAC|NAME")
    remove.set_defaults(func=enrollment.adapter_remove)
    listing = general.add_parser("list", help="general nodes, their adapter and virtual IPs")
    listing.add_argument("--ca", type=Path, required=True, help="the CA directory")
    listing.add_argument("--adapter", metavar="NAME", help="only this adapter's")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=enrollment.adapter_list)

    status = sub.add_parser("status", help="state of the daemon in this network namespace")
    status.add_argument("--json", action="store_true")
    status.add_argument(
        "--daemon", help="control socket name: node, cloud, trs or a node's `control` key (default: the one running)"
    )
    status.add_argument(
        "--watch",
        nargs="?",
        type=float,
        const=2.0,
        metavar="SECONDS",
        help="redraw every SECONDS (default 2) until Ctrl-C, with rates",
    )
    status.set_defaults(func=status_command.show)

    configs = sub.add_parser("config", help="configuration files").add_subparsers(dest="config_command", required=True)
    check = configs.add_parser("check", help="validate a file as this machine's daemon would, starting nothing")
    check.add_argument("file", type=Path)
    check.add_argument("--kind", choices=["node", "adapter", "cloud", "trs"], help="default: from its name or keys")
    check.set_defaults(func=lambda args: config_check.check(args.file, args.kind))

    systemd.add_parser(sub)

    try:
        from cyphonic.lab.commands import add_lab_parser
    except ImportError:  # the lab is optional outside a source checkout
        pass
    else:
        add_lab_parser(sub)

    args = parser.parse_args(argv)
    return args.func(args)


def _validity_arguments(parser: argparse.ArgumentParser) -> None:
    """Of the certificates a command issues."""
    parser.add_argument("--start", type=dt.date.fromisoformat, help="validity start (YYYY-MM-DD)")
    parser.add_argument("--days", type=int, default=365, help="validity in days")


def ca_init(args) -> int:
    d: Path = args.dir
    d.mkdir(parents=True, exist_ok=True)
    if (d / "ca.key").exists():
        print(f"cyphonic ca init: {d}/ca.key exists; refusing to overwrite a CA", file=sys.stderr)
        return 2
    now = int(time.time())
    ca = crypto.Identity.generate()

    def authority(name: str, role: str, holder: crypto.Identity) -> None:
        """`name`.key and `name`.crt: a ten-year certificate the CA signs."""
        holder.save(d / f"{name}.key")
        cert = crypto.issue_certificate(
            ca,
            serial=enrollment.new_serial(),
            role=role,
            fqdn=f"{name}.{args.domain}",
            sign_key=holder.sign_public,
            dh_key=holder.dh_public,
            not_before=now - 60,
            not_after=now + 10 * 365 * DAY,
        )
        (d / f"{name}.crt").write_text(keys.certificate_to_pem(cert))

    authority("ca", "ca", ca)  # self-signed
    authority("as", "authority", crypto.Identity.generate())
    keys.write_secret(d / "as-nms.key", crypto.random_key())
    keys.write_secret(d / "nms-trs.key", crypto.random_key())
    trs = ", ".join(f'"[{a}]:7002"' if ":" in a else f'"{a}:7002"' for a in args.trs)
    (d / "trs.toml").write_text(
        f"""# python -m cyphonic.trs --config trs.toml
listen = ["0.0.0.0:7002", "[::]:7002"]
public = [{trs}]  # where nodes reach this TRS
nms_key = "nms-trs.key"
"""
    )
    (d / "revoked.txt").write_text("# revoked certificate serials, one per line\n")
    (d / "cloud.toml").write_text(
        f'''domain = "{args.domain}"

[auth]
listen = ["0.0.0.0:7000", "[::]:7000"]
ca = "ca.crt"
certificate = "as.crt"
key = "as.key"
nms_key = "as-nms.key"
revoked = "revoked.txt"
database = "cloud.sqlite"
vip4_pool = "{DEFAULT_VIP4}"
vip6_pool = "{DEFAULT_VIP6}"

[nms]
listen = ["0.0.0.0:7001", "[::]:7001"]
nms_key = "as-nms.key"
refresh = 10
trs = [{trs}]
trs_key = "nms-trs.key"
'''
    )
    print(f"CA for {args.domain} in {d}: ca.crt, as.crt, cloud.toml, trs.toml")
    return 0


def enroll_node(args) -> int:
    return enrollment.guarded("enroll node", lambda: _enroll_node(args))


def _enroll_node(args) -> int:
    ca_dir: Path = args.ca
    fqdn = f"{args.name}.{enrollment.domain_of(ca_dir)}"
    ca = crypto.Identity.load(ca_dir / "ca.key")
    out: Path = args.out
    enrollment.write_identity(
        out, "node", *enrollment.issue(ca, "node", fqdn, enrollment.validity(args.start, args.days))
    )
    (out / "ca.crt").write_text((ca_dir / "ca.crt").read_text())
    auth, nms = enrollment.cloud_lists(args.cloud)
    (out / "node.toml").write_text(
        f"""# CYPHONIC node {fqdn}
certificate = "node.crt"
key = "node.key"
ca = "ca.crt"
auth = [{auth}]
nms = [{nms}]
listen_port = 4500
tun = "cyph0"
mtu = 1400

[resolver]
listen = "127.0.0.1:53"
upstream = []
"""
    )
    print(f"enrolled {fqdn} in {out}")
    return 0


def ca_revoke(args) -> int:
    from cyphonic.wire import certificate as wire_cert
    from cyphonic.wire.common import parse

    cert = parse(wire_cert.Certificate, keys.read_certificate(args.certificate)).body.value
    enrollment.append_revoked(args.ca, cert.serial, cert.fqdn)
    print(f"revoked {cert.fqdn} (serial {cert.serial})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
