"""The cluster's PKI: a CA, the API server's serving certificate, one client certificate per
identity and the service-account signing key, made with the openssl CLI (ECDSA P-256: fast)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

CA_DAYS = 3650
LEAF_DAYS = 825
# The in-cluster names of the API server: loopback, the `kubernetes` Service's IP (the first of
# hostnetwork.SERVICE_CIDR) and the real node's IP, where pods reach the API server.
APISERVER_SANS = (
    "IP:127.0.0.1",
    "IP:198.19.0.1",
    "IP:198.18.0.1",
    "DNS:localhost",
    "DNS:kubernetes",
    "DNS:kubernetes.default",
    "DNS:kubernetes.default.svc",
    "DNS:kubernetes.default.svc.cluster.local",
)


@dataclass(frozen=True, kw_only=True)
class Identity:
    """A client certificate's subject: CN is the user name, O the groups (RBAC subjects)."""

    name: str
    common_name: str
    organization: str | None = None


KUBELET_CLIENT = "apiserver-kubelet-client"

# Who talks to the API server; system:masters needs no RBAC binding.
IDENTITIES = (
    Identity(name="admin", common_name="kuberank-admin", organization="system:masters"),
    Identity(name="controller-manager", common_name="system:kube-controller-manager"),
    Identity(name="scheduler", common_name="system:kube-scheduler"),
    Identity(name="kwok", common_name="kwok-controller", organization="system:masters"),
    # the API server's client certificate towards kubelets (logs, exec): --kubelet-client-*
    Identity(
        name=KUBELET_CLIENT,
        common_name="kube-apiserver-kubelet-client",
        organization="system:masters",
    ),
)


@dataclass(frozen=True)
class KeyPair:
    cert: Path
    key: Path


# The API server's identity towards aggregated API servers (requestheader authentication).
FRONT_PROXY_CLIENT = "front-proxy-client"


@dataclass(frozen=True, kw_only=True)
class Pki:
    ca: KeyPair
    apiserver: KeyPair
    front_proxy_client: KeyPair
    clients: dict[str, KeyPair]
    service_account_key: Path
    service_account_pub: Path


def render_openssl_config(
    *,
    common_name: str,
    organization: str | None,
    extended_key_usage: str | None,
    subject_alt_names: tuple[str, ...] = (),
    ca: bool = False,
) -> str:
    """An openssl req config that sets exactly these subject fields and extensions."""
    lines = [
        "[req]",
        "prompt = no",
        "distinguished_name = dn",
        "x509_extensions = ext",
        "[dn]",
    ]
    if organization:
        lines.append(f"O = {organization}")
    lines += [f"CN = {common_name}", "[ext]"]
    if ca:
        lines += [
            "basicConstraints = critical,CA:TRUE",
            "keyUsage = critical,keyCertSign,cRLSign,digitalSignature",
            "subjectKeyIdentifier = hash",
        ]
    else:
        lines += [
            "basicConstraints = critical,CA:FALSE",
            "keyUsage = critical,digitalSignature",
        ]
    if extended_key_usage:
        lines.append(f"extendedKeyUsage = {extended_key_usage}")
    if subject_alt_names:
        lines.append("subjectAltName = " + ",".join(subject_alt_names))
    return "\n".join(lines) + "\n"


def _openssl(*args: str) -> None:
    result = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed: {result.stderr.strip()}")


def _issue(directory: Path, name: str, config: str, *, days: int, ca: KeyPair | None) -> KeyPair:
    pair = KeyPair(cert=directory / f"{name}.crt", key=directory / f"{name}.key")
    config_file = directory / f"{name}.cnf"
    config_file.write_text(config)
    args = [
        "req", "-x509", "-new", "-config", str(config_file), "-days", str(days),
        "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", str(pair.key), "-out", str(pair.cert),
    ]  # fmt: skip
    if ca is not None:
        args += ["-CA", str(ca.cert), "-CAkey", str(ca.key)]
    _openssl(*args)
    config_file.unlink()
    return pair


def issue_certificate(
    directory: Path,
    name: str,
    *,
    ca: KeyPair,
    common_name: str,
    organization: str | None = None,
    extended_key_usage: str,
    subject_alt_names: tuple[str, ...] = (),
) -> KeyPair:
    """One more leaf certificate signed by the cluster's CA (the real node's identities)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    config = render_openssl_config(
        common_name=common_name,
        organization=organization,
        extended_key_usage=extended_key_usage,
        subject_alt_names=subject_alt_names,
    )
    return _issue(directory, name, config, days=LEAF_DAYS, ca=ca)


def generate_pki(directory: Path) -> Pki:
    """Write a fresh PKI for one cluster into `directory` (created, private to the user)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    ca = _issue(
        directory,
        "ca",
        render_openssl_config(
            common_name="kuberank-local-ca", organization=None, extended_key_usage=None, ca=True
        ),
        days=CA_DAYS,
        ca=None,
    )
    apiserver = _issue(
        directory,
        "apiserver",
        render_openssl_config(
            common_name="kube-apiserver",
            organization=None,
            extended_key_usage="serverAuth",
            subject_alt_names=APISERVER_SANS,
        ),
        days=LEAF_DAYS,
        ca=ca,
    )
    front_proxy_client = _issue(
        directory,
        FRONT_PROXY_CLIENT,
        render_openssl_config(
            common_name=FRONT_PROXY_CLIENT, organization=None, extended_key_usage="clientAuth"
        ),
        days=LEAF_DAYS,
        ca=ca,
    )
    clients = {
        identity.name: _issue(
            directory,
            identity.name,
            render_openssl_config(
                common_name=identity.common_name,
                organization=identity.organization,
                extended_key_usage="clientAuth",
            ),
            days=LEAF_DAYS,
            ca=ca,
        )
        for identity in IDENTITIES
    }
    sa_key = directory / "service-account.key"
    sa_pub = directory / "service-account.pub"
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-out", str(sa_key))  # fmt: skip
    _openssl("pkey", "-in", str(sa_key), "-pubout", "-out", str(sa_pub))
    return Pki(
        ca=ca,
        apiserver=apiserver,
        front_proxy_client=front_proxy_client,
        clients=clients,
        service_account_key=sa_key,
        service_account_pub=sa_pub,
    )
