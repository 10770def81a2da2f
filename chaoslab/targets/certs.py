"""Run-time certificates: a CA for the run and one ECDSA P-256 leaf for its targets."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from chaoslab.errors import PreflightError
from chaoslab.proc import run


@dataclass(frozen=True)
class Certs:
    ca: Path
    cert: Path
    key: Path


def make(directory: Path, ips: list[str]) -> Certs:
    if shutil.which("openssl") is None:
        raise PreflightError(
            "openssl is missing (needed for the run's certificates)", "apt-get install openssl"
        )
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, csr, cert = (
        directory / n for n in ("ca.key", "ca.pem", "tls.key", "tls.csr", "tls.pem")
    )
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    run(
        [
            "openssl",
            "req",
            "-x509",
            *ec,
            "-keyout",
            str(ca_key),
            "-out",
            str(ca),
            "-days",
            "2",
            "-subj",
            "/CN=chaoslab run CA",
        ]
    )
    run(["openssl", "req", *ec, "-keyout", str(key), "-out", str(csr), "-subj", "/CN=chaoslab target"])
    ext = directory / "san.ext"
    ext.write_text("subjectAltName=" + ",".join(["DNS:localhost", *(f"IP:{ip}" for ip in ips)]) + "\n")
    run(
        [
            "openssl",
            "x509",
            "-req",
            "-in",
            str(csr),
            "-CA",
            str(ca),
            "-CAkey",
            str(ca_key),
            "-CAcreateserial",
            "-out",
            str(cert),
            "-days",
            "2",
            "-extfile",
            str(ext),
        ]
    )
    return Certs(ca, cert, key)
