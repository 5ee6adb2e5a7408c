"""TLS identities per role: ``just-distribute tls ca | issue | refuse``.

Work travels as pickles, so a certificate of the service's CA is the right to run code on
its machines. Hence one identity per role and per machine, and a CA key that never leaves
the machine where it was made::

    CA folder (stays home)     ca.pem  ca-key.pem  crl.pem  issued.json
         | issue --role scheduler|worker|client --name NAME
         v
    identity folder (copied)   ca.pem  cert.pem  key.pem  crl.pem     (no CA key)

``refuse NAME`` adds that identity's certificates to the CA's revocation list
(``crl.pem``); copy the new list to the scheduler's and the workers' folders and restart
them: that identity is refused, every other one keeps working, nothing is re-issued.
Private keys are written 0600, also over files that were there before.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Iterable
from pathlib import Path

from just_distribute.service import certs

__all__ = ["configure", "issue", "main", "make_ca", "refuse"]

CA_KEY, CA_CERT, CRL, ISSUED = "ca-key.pem", "ca.pem", "crl.pem", "issued.json"


def _issued(ca_dir: Path) -> list[dict[str, object]]:
    path = ca_dir / ISSUED
    return list(json.loads(path.read_text())) if path.is_file() else []


def make_ca(ca_dir: str | Path) -> Path:
    """Make a private CA in ``ca_dir`` (kept if one is there). Keep this folder home.

    Returns:
        The folder.
    """
    folder = Path(ca_dir)
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    if (folder / CA_KEY).is_file():
        return folder
    key, cert = certs.new_ca()
    certs.write_file(folder / CA_KEY, certs.pem(key), True)
    certs.write_file(folder / CA_CERT, certs.pem(cert), False)
    certs.write_file(folder / CRL, certs.build_crl(key, cert, ()), False)
    certs.write_file(folder / ISSUED, b"[]", False)
    return folder


def issue(
    ca_dir: str | Path, out_dir: str | Path, role: str, name: str, hosts: Iterable[str] = ()
) -> tuple[str, str, str]:
    """Issue one identity (a scheduler, a worker host, a client) into ``out_dir``.

    ``out_dir`` receives the CA's certificate and revocation list, the identity's
    certificate and its key (0600), and never the CA key.

    Returns:
        The ``(ca, cert, key)`` paths, usable as ``tls=``.

    Raises:
        FileNotFoundError: ``ca_dir`` holds no CA key.
        ValueError: an unknown role, or ``out_dir`` is the CA folder.
    """
    ca_folder, folder = Path(ca_dir), Path(out_dir)
    if folder.resolve() == ca_folder.resolve():
        raise ValueError("the identity folder must not be the CA folder (it would hold the "
                         "CA key): give another one")
    ca_key, ca_cert = certs.load_ca(ca_folder)
    key, cert = certs.new_identity(ca_key, ca_cert, name, role, hosts)
    folder.mkdir(parents=True, exist_ok=True)
    certs.write_file(folder / "key.pem", certs.pem(key), True)
    certs.write_file(folder / "cert.pem", certs.pem(cert), False)
    shutil.copyfile(ca_folder / CA_CERT, folder / CA_CERT)
    if (ca_folder / CRL).is_file():
        shutil.copyfile(ca_folder / CRL, folder / CRL)
    issued = _issued(ca_folder)
    issued.append({"name": name, "role": role, "serial": cert.serial_number,
                   "folder": str(folder.resolve())})
    certs.write_file(ca_folder / ISSUED, json.dumps(issued, indent=1).encode(), False)
    return str(folder / CA_CERT), str(folder / "cert.pem"), str(folder / "key.pem")


def refuse(ca_dir: str | Path, name: str) -> list[int]:
    """Refuse the identity ``name`` from now on: add its certificates to ``crl.pem``.

    Returns:
        The serial numbers refused.

    Raises:
        KeyError: no identity of that name was issued by this CA.
    """
    ca_folder = Path(ca_dir)
    ca_key, ca_cert = certs.load_ca(ca_folder)
    issued = _issued(ca_folder)
    mine = [int(str(item["serial"])) for item in issued if item["name"] == name]
    if not mine:
        known = ", ".join(sorted({str(i["name"]) for i in issued})) or "none"
        raise KeyError(f"this CA issued no identity named {name!r} (issued: {known})")
    for item in issued:
        if item["name"] == name:
            item["refused"] = True
    refused = [int(str(i["serial"])) for i in issued if i.get("refused")]
    crl = certs.build_crl(ca_key, ca_cert, refused)
    certs.write_file(ca_folder / CRL, crl, False)
    certs.write_file(ca_folder / ISSUED, json.dumps(issued, indent=1).encode(), False)
    return mine


def configure(parser: argparse.ArgumentParser) -> None:
    """Declare the arguments of ``just-distribute tls``."""
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    ca = sub.add_parser("ca", help="make a private CA in a folder that stays on this machine")
    ca.add_argument("ca_dir", metavar="CA_DIR")
    iss = sub.add_parser("issue", help="issue one identity into a folder with no CA key")
    iss.add_argument("out_dir", metavar="OUT_DIR")
    iss.add_argument("--ca", dest="ca_dir", required=True, help="the CA folder")
    iss.add_argument("--role", choices=certs.ROLES, required=True)
    iss.add_argument("--name", required=True, help="who it is for, e.g. the worker's host")
    iss.add_argument("--host", action="append", default=[],
                     help="a name or IP address the holder serves on (repeat as needed)")
    ref = sub.add_parser("refuse", help="refuse one identity from now on (updates crl.pem)")
    ref.add_argument("name")
    ref.add_argument("--ca", dest="ca_dir", required=True, help="the CA folder")


def main(args: argparse.Namespace) -> int:
    """Run ``just-distribute tls``."""
    if args.action == "ca":
        print(f"CA in {make_ca(args.ca_dir)}: keep this folder on this machine")
    elif args.action == "issue":
        _ca, cert, _key = issue(args.ca_dir, args.out_dir, args.role, args.name, args.host)
        print(f"{args.role} identity {args.name!r} in {Path(cert).parent}: copy this folder "
              f"to its machine (it holds no CA key)")
    else:
        try:
            serials = refuse(args.ca_dir, args.name)
        except KeyError as exc:
            print(f"just-distribute tls: {exc.args[0]}", file=sys.stderr)
            return 2
        print(f"refused {args.name!r} ({len(serials)} certificate(s)): copy "
              f"{Path(args.ca_dir) / CRL} to the scheduler's and the workers' folders and "
              f"restart them")
    return 0
