"""A real, local Kubernetes control plane for tests and development.

etcd + kube-apiserver (TLS, RBAC, service-account tokens) + kube-controller-manager +
kube-scheduler + kwok, all on loopback with free ports, in a temp dir or a given state dir.
kwok plays the kubelets of a few fake nodes (two 8-GPU nodes, one CPU "system" node) and
drives pods through the annotation-controlled stages in ``kubetune_dev.kwok_stages``, so
Jobs really get scheduled, run, succeed or fail, and are garbage-collected, without
containers.

    with ControlPlane() as cp:
        subprocess.run([cp.binaries["kubectl"], "--kubeconfig", cp.kubeconfig, "get", "nodes"])
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import logging
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from kubetune_api.constants import (
    GPU_NODE_LABEL_KEY,
    GPU_NODE_LABEL_VALUE,
    GPU_PRODUCT_LABEL,
    GPU_RESOURCE,
    GPU_TAINT_EFFECT,
    GPU_TAINT_KEY,
    GPU_TAINT_VALUE,
)
from kubetune_dev.binaries import ensure_binaries
from kubetune_dev.kwok_stages import (
    FAKE_NODE_ANNOTATION_KEY,
    FAKE_NODE_ANNOTATION_VALUE,
    kwok_config,
)

log = logging.getLogger("kubetune_dev")

GPU_PRODUCT: Final = "NVIDIA-H100-80GB-HBM3"
GPUS_PER_NODE: Final = 8
GPU_NODE_NAMES: Final = ("kwok-gpu-0", "kwok-gpu-1")
SYSTEM_NODE_NAME: Final = "kwok-system-0"
ADMIN_USER: Final = "kubetune-admin"

SERVICE_CIDR: Final = "10.96.0.0/16"
POD_CIDR: Final = "10.244.0.0/16"
SERVICE_ACCOUNT_ISSUER: Final = "https://kubernetes.default.svc.cluster.local"
# kubeadm's set: the defaults plus NodeRestriction, written out so the list is visible.
ADMISSION_PLUGINS: Final = (
    "NamespaceLifecycle,LimitRanger,ServiceAccount,NodeRestriction,PodSecurity,"
    "DefaultTolerationSeconds,Priority,ResourceQuota,RuntimeClass,"
    "MutatingAdmissionWebhook,ValidatingAdmissionPolicy,ValidatingAdmissionWebhook"
)
# Enough for Jobs, Deployments (the operator's chart), Services and namespaces to behave as
# in a real cluster. node-lifecycle removes the not-ready taint from new nodes; without it
# nothing would ever be scheduled.
CONTROLLERS: Final = ",".join(
    (
        "job-controller",
        "garbage-collector-controller",
        "serviceaccount-token-controller",
        "serviceaccount-controller",
        "namespace-controller",
        "ttl-after-finished-controller",
        "pod-garbage-collector-controller",
        "node-lifecycle-controller",
        "taint-eviction-controller",
        "root-ca-certificate-publisher-controller",
        "clusterrole-aggregation-controller",
        "deployment-controller",
        "replicaset-controller",
        "endpointslice-controller",
        "cronjob-controller",
        "resourcequota-controller",
        "disruption-controller",
    )
)
# Start order; shutdown runs in reverse.
COMPONENTS: Final = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
STATE_FILE: Final = "controlplane.json"


class ControlPlaneError(RuntimeError):
    """A component failed to start or the cluster never became ready."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _die_with_parent() -> None:
    """Runs in the child before exec: if the Python process dies (even SIGKILL), the kernel
    sends SIGTERM, so a killed pytest never leaves an API server behind."""
    with contextlib.suppress(Exception):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# ---- PKI ------------------------------------------------------------------------------------


def _pem_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


class _Pki:
    """A throw-away CA plus the serving, client and service-account keys of one cluster.

    EC P-256 keeps generation fast; the service-account key is RSA because every OIDC
    consumer understands RS256.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.ca_cert = directory / "ca.crt"
        self.ca_key = directory / "ca.key"
        self.sa_key = directory / "sa.key"
        self.sa_pub = directory / "sa.pub"

    def ensure(self) -> None:
        """Create the CA and keys once; a reused state dir keeps them so kubeconfigs stay
        valid across `up` restarts."""
        self.directory.mkdir(parents=True, exist_ok=True)
        if not self.ca_cert.exists():
            key = ec.generate_private_key(ec.SECP256R1())
            subject = _name("kubetune-dev-ca")
            cert = (
                self._builder(subject, subject, key.public_key(), days=3650)
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(
                    x509.KeyUsage(
                        digital_signature=True,
                        content_commitment=False,
                        key_encipherment=False,
                        data_encipherment=False,
                        key_agreement=False,
                        key_cert_sign=True,
                        crl_sign=True,
                        encipher_only=False,
                        decipher_only=False,
                    ),
                    critical=True,
                )
                .sign(key, hashes.SHA256())
            )
            self._write(self.ca_key, _pem_key(key))
            self._write(self.ca_cert, cert.public_bytes(serialization.Encoding.PEM))
        if not self.sa_key.exists():
            sa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            self._write(self.sa_key, _pem_key(sa))
            self._write(
                self.sa_pub,
                sa.public_key().public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                ),
            )

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        path.write_bytes(data)
        path.chmod(0o600)

    @staticmethod
    def _builder(
        subject: x509.Name, issuer: x509.Name, public_key: Any, days: int
    ) -> x509.CertificateBuilder:
        now = datetime.datetime.now(datetime.UTC)
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
        )

    def issue(
        self,
        name: str,
        common_name: str,
        organization: str | None = None,
        server_names: tuple[str, ...] = (),
        server_ips: tuple[str, ...] = (),
    ) -> tuple[Path, Path]:
        """Issue a client cert (or a serving cert when names/IPs are given) signed by the CA."""
        ca_key = serialization.load_pem_private_key(self.ca_key.read_bytes(), password=None)
        ca_cert = x509.load_pem_x509_certificate(self.ca_cert.read_bytes())
        key = ec.generate_private_key(ec.SECP256R1())
        serving = bool(server_names or server_ips)
        builder = self._builder(
            _name(common_name, organization), ca_cert.subject, key.public_key(), days=365
        ).add_extension(
            x509.ExtendedKeyUsage(
                [x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]
                if serving
                else [x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        if serving:
            alt_names: list[x509.GeneralName] = [x509.DNSName(n) for n in server_names]
            alt_names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in server_ips]
            builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
        cert_path, key_path = self.directory / f"{name}.crt", self.directory / f"{name}.key"
        self._write(key_path, _pem_key(key))
        self._write(cert_path, cert.public_bytes(serialization.Encoding.PEM))
        return cert_path, key_path


def _kubeconfig(server: str, ca_cert: Path, user: str, credentials: dict[str, str]) -> str:
    """A self-contained kubeconfig (JSON is valid YAML, so no YAML dependency)."""
    import base64

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "kubetune-dev",
                "cluster": {
                    "server": server,
                    "certificate-authority-data": base64.b64encode(ca_cert.read_bytes()).decode(),
                },
            }
        ],
        "users": [{"name": user, "user": credentials}],
        "contexts": [{"name": user, "context": {"cluster": "kubetune-dev", "user": user}}],
        "current-context": user,
    }
    return json.dumps(config, indent=2)


def _cert_credentials(cert: Path, key: Path) -> dict[str, str]:
    import base64

    return {
        "client-certificate-data": base64.b64encode(cert.read_bytes()).decode(),
        "client-key-data": base64.b64encode(key.read_bytes()).decode(),
    }


# ---- fake nodes -----------------------------------------------------------------------------


def fake_nodes() -> list[dict[str, Any]]:
    """Two 8-GPU nodes labelled and tainted like the real GPU node pool, one CPU node."""

    def node(
        name: str,
        address: str,
        labels: dict[str, str],
        capacity: dict[str, str],
        taints: list[Any],
    ) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "annotations": {
                    FAKE_NODE_ANNOTATION_KEY: FAKE_NODE_ANNOTATION_VALUE,
                    "node.alpha.kubernetes.io/ttl": "0",
                },
                "labels": {
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "type": "kwok",
                    **labels,
                },
            },
            "spec": {"taints": taints},
            "status": {
                "capacity": capacity,
                "allocatable": capacity,
                # A distinct InternalIP per node; kwok reports it as the pods' hostIP.
                "addresses": [
                    {"type": "InternalIP", "address": address},
                    {"type": "Hostname", "address": name},
                ],
            },
        }

    gpu_nodes = [
        node(
            name,
            f"10.250.0.{index + 10}",
            {GPU_PRODUCT_LABEL: GPU_PRODUCT, GPU_NODE_LABEL_KEY: GPU_NODE_LABEL_VALUE},
            {
                "cpu": "192",
                "memory": "2048Gi",
                "pods": "110",
                "ephemeral-storage": "4Ti",
                GPU_RESOURCE: str(GPUS_PER_NODE),
            },
            [{"key": GPU_TAINT_KEY, "value": GPU_TAINT_VALUE, "effect": GPU_TAINT_EFFECT}],
        )
        for index, name in enumerate(GPU_NODE_NAMES)
    ]
    system = node(
        SYSTEM_NODE_NAME,
        "10.250.0.2",
        {"kubetune.io/node-pool": "system"},
        {"cpu": "16", "memory": "64Gi", "pods": "110", "ephemeral-storage": "500Gi"},
        [],
    )
    return [*gpu_nodes, system]


# ---- the control plane ----------------------------------------------------------------------


class ControlPlane:
    """etcd + kube-apiserver + controller-manager + scheduler + kwok on loopback.

    ``state_dir`` None means a temp dir, removed on a clean stop; it is kept (and its path
    logged) when start-up fails or ``keep_state`` is set, e.g. by a test fixture after a test
    failure. A given state dir is always kept, and reusing it keeps etcd data, PKI and ports.
    """

    def __init__(
        self,
        state_dir: str | Path | None = None,
        *,
        binaries: dict[str, Path] | None = None,
        startup_timeout: float = 90.0,
    ) -> None:
        self._temporary = state_dir is None
        self.state_dir = Path(
            tempfile.mkdtemp(prefix="kubetune-cp-") if state_dir is None else state_dir
        ).resolve()
        self.binaries = binaries or ensure_binaries()
        self.startup_timeout = startup_timeout
        self.keep_state = not self._temporary
        self.log_dir = self.state_dir / "logs"
        self.kubeconfig = self.state_dir / "admin.kubeconfig"
        self.server = ""
        self.startup_seconds = 0.0
        self._pki = _Pki(self.state_dir / "pki")
        self._processes: dict[str, subprocess.Popen[bytes]] = {}
        self._ports: dict[str, int] = {}
        self._ssl: ssl.SSLContext | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is not None and exc_type not in (KeyboardInterrupt, SystemExit):
            self.keep_state = True
        self.stop()

    def start(self) -> None:
        started = time.monotonic()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._prepare()
            self._start_etcd()
            self._start_apiserver()
            self._start_controllers()
            self._create_nodes()
            self._wait_until_usable()
        except BaseException as error:
            self.keep_state = True
            self.stop()
            if isinstance(error, ControlPlaneError):
                raise
            raise ControlPlaneError(f"{error} (logs kept in {self.log_dir})") from error
        self.startup_seconds = time.monotonic() - started
        self._write_state_file()
        log.info(
            "control plane up in %.1fs at %s (state %s)",
            self.startup_seconds,
            self.server,
            self.state_dir,
        )

    def stop(self) -> None:
        """Terminate components in reverse start order (SIGTERM, then SIGKILL after 10s)."""
        for name in reversed(COMPONENTS):
            process = self._processes.pop(name, None)
            if process is None or process.poll() is not None:
                continue
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        (self.state_dir / STATE_FILE).unlink(missing_ok=True)
        if self.keep_state:
            log.warning("control-plane state and logs kept in %s", self.state_dir)
        elif self.state_dir.exists():
            shutil.rmtree(self.state_dir, ignore_errors=True)

    # -- set-up -------------------------------------------------------------------------------

    def _prepare(self) -> None:
        self._pki.ensure()
        self._ports = self._load_ports()
        self.server = f"https://127.0.0.1:{self._ports['apiserver']}"
        pki = self._pki
        self._serving = pki.issue(
            "apiserver",
            "kube-apiserver",
            server_names=(
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ),
            server_ips=("127.0.0.1", str(next(ipaddress.ip_network(SERVICE_CIDR).hosts()))),
        )
        admin = pki.issue("admin", ADMIN_USER, "system:masters")
        self.kubeconfig.write_text(
            _kubeconfig(self.server, pki.ca_cert, ADMIN_USER, _cert_credentials(*admin))
        )
        # The built-in RBAC roles bind these exact user names.
        for component, user in (
            ("kube-controller-manager", "system:kube-controller-manager"),
            ("kube-scheduler", "system:kube-scheduler"),
        ):
            credentials = _cert_credentials(*pki.issue(component, user))
            self._component_kubeconfig(component).write_text(
                _kubeconfig(self.server, pki.ca_cert, user, credentials)
            )
        # kwok updates node and pod status and deletes pods on every node it fakes.
        credentials = _cert_credentials(*pki.issue("kwok", "kwok-controller", "system:masters"))
        self._component_kubeconfig("kwok").write_text(
            _kubeconfig(self.server, pki.ca_cert, "kwok-controller", credentials)
        )
        (self.state_dir / "kwok.yaml").write_text(kwok_config())
        self._ssl = ssl.create_default_context(cafile=str(pki.ca_cert))
        self._ssl.load_cert_chain(*admin)

    def _load_ports(self) -> dict[str, int]:
        """Reuse the ports of a previous run of this state dir while they are free, so an
        exported KUBECONFIG keeps working across `up` restarts."""
        path = self.state_dir / "ports.json"
        previous: dict[str, int] = json.loads(path.read_text()) if path.exists() else {}
        ports = {
            name: previous[name]
            if name in previous and _port_is_free(previous[name])
            else _free_port()
            for name in ("etcd-client", "etcd-peer", "apiserver")
        }
        path.write_text(json.dumps(ports))
        return ports

    def _component_kubeconfig(self, component: str) -> Path:
        return self.state_dir / f"{component}.kubeconfig"

    def _spawn(self, name: str, args: list[str]) -> None:
        binary = "etcd" if name == "etcd" else name
        log_file = (self.log_dir / f"{name}.log").open("ab")
        log.debug("starting %s: %s", name, " ".join(args))
        self._processes[name] = subprocess.Popen(
            [str(self.binaries[binary]), *args],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=self.state_dir,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        log_file.close()

    def _start_etcd(self) -> None:
        client = f"http://127.0.0.1:{self._ports['etcd-client']}"
        peer = f"http://127.0.0.1:{self._ports['etcd-peer']}"
        self._spawn(
            "etcd",
            [
                "--name=kubetune",
                f"--data-dir={self.state_dir / 'etcd'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=kubetune={peer}",
                # Tests do not need durability; fsync dominates etcd latency on CI disks.
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )
        self._wait_for("etcd", lambda: self._http_ok(f"{client}/health"))

    def _start_apiserver(self) -> None:
        pki = self._pki
        cert, key = self._serving
        self._spawn(
            "kube-apiserver",
            [
                f"--etcd-servers=http://127.0.0.1:{self._ports['etcd-client']}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self._ports['apiserver']}",
                f"--cert-dir={self.state_dir / 'pki'}",
                f"--tls-cert-file={cert}",
                f"--tls-private-key-file={key}",
                f"--client-ca-file={pki.ca_cert}",
                f"--service-account-key-file={pki.sa_pub}",
                f"--service-account-signing-key-file={pki.sa_key}",
                f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--authorization-mode=Node,RBAC",
                f"--enable-admission-plugins={ADMISSION_PLUGINS}",
                "--allow-privileged=true",
                "--profiling=false",
            ],
        )
        self._wait_for("kube-apiserver", lambda: self._api_ok("/readyz"))

    def _start_controllers(self) -> None:
        pki = self._pki
        self._spawn(
            "kube-controller-manager",
            [
                f"--kubeconfig={self._component_kubeconfig('kube-controller-manager')}",
                f"--controllers={CONTROLLERS}",
                "--use-service-account-credentials=true",
                f"--root-ca-file={pki.ca_cert}",
                f"--service-account-private-key-file={pki.sa_key}",
                # One instance per cluster: skip the lease round-trips, and serve nothing.
                "--leader-elect=false",
                "--secure-port=0",
            ],
        )
        self._spawn(
            "kube-scheduler",
            [
                f"--kubeconfig={self._component_kubeconfig('kube-scheduler')}",
                "--leader-elect=false",
                "--secure-port=0",
            ],
        )
        self._spawn(
            "kwok",
            [
                f"--kubeconfig={self._component_kubeconfig('kwok')}",
                f"--config={self.state_dir / 'kwok.yaml'}",
                f"--manage-nodes-with-annotation-selector="
                f"{FAKE_NODE_ANNOTATION_KEY}={FAKE_NODE_ANNOTATION_VALUE}",
                "--node-lease-duration-seconds=40",
                f"--cidr={POD_CIDR}",
            ],
        )

    def _create_nodes(self) -> None:
        for node in fake_nodes():
            status, body = self.api("POST", "/api/v1/nodes", node)
            if status not in (201, 409):  # 409: a reused state dir already has it
                raise ControlPlaneError(f"creating node {node['metadata']['name']}: {body}")

    def _wait_until_usable(self) -> None:
        """Ready means: nodes Ready without the not-ready taint (so pods schedule) and the
        default ServiceAccount exists (so pods are admitted)."""
        expected = {node["metadata"]["name"] for node in fake_nodes()}

        def nodes_ready() -> bool:
            status, body = self.api("GET", "/api/v1/nodes")
            if status != 200:
                return False
            ready = set()
            for node in body["items"]:
                conditions = {c["type"]: c["status"] for c in node["status"].get("conditions", [])}
                taints = {t["key"] for t in node["spec"].get("taints", [])}
                if conditions.get("Ready") == "True" and not any(
                    key.startswith("node.kubernetes.io/") for key in taints
                ):
                    ready.add(node["metadata"]["name"])
            return expected <= ready

        self._wait_for("fake nodes Ready", nodes_ready)
        self._wait_for(
            "default ServiceAccount",
            lambda: self.api("GET", "/api/v1/namespaces/default/serviceaccounts/default")[0] == 200,
        )

    def _wait_for(self, what: str, condition: Callable[[], bool]) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            for name, process in self._processes.items():
                if process.poll() is not None:
                    log_path = self.log_dir / f"{name}.log"
                    raise ControlPlaneError(
                        f"{name} exited with {process.returncode} while waiting for {what}; "
                        f"log {log_path}:\n{_tail(log_path)}"
                    )
            with contextlib.suppress(OSError, ValueError):
                if condition():
                    return
            time.sleep(0.2)
        raise ControlPlaneError(
            f"timed out after {self.startup_timeout:.0f}s waiting for {what}; "
            f"logs in {self.log_dir}"
        )

    def _write_state_file(self) -> None:
        state = {
            "supervisor_pid": os.getpid(),
            "server": self.server,
            "kubeconfig": str(self.kubeconfig),
            "components": {name: p.pid for name, p in self._processes.items()},
        }
        (self.state_dir / STATE_FILE).write_text(json.dumps(state, indent=2))

    # -- API access ---------------------------------------------------------------------------

    @staticmethod
    def _http_ok(url: str) -> bool:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)

    def _api_ok(self, path: str) -> bool:
        return self.api("GET", path)[0] == 200

    def api(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> tuple[int, dict[str, Any]]:
        """Call the API server as the admin user; returns (HTTP status, decoded JSON body)."""
        request = urllib.request.Request(
            self.server + path,
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, context=self._ssl, timeout=10) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, raw = error.code, error.read()
        try:
            decoded = json.loads(raw) if raw else {}
        except json.JSONDecodeError:
            decoded = {"raw": raw.decode(errors="replace")}
        return status, decoded if isinstance(decoded, dict) else {"items": decoded}

    def token_kubeconfig(self, token: str, path: str | Path, user: str = "token-user") -> Path:
        """Write a kubeconfig that authenticates with a bearer token."""
        path = Path(path)
        path.write_text(_kubeconfig(self.server, self._pki.ca_cert, user, {"token": token}))
        path.chmod(0o600)
        return path

    def service_account_kubeconfig(
        self,
        namespace: str,
        name: str,
        path: str | Path | None = None,
        expiration_seconds: int = 3600,
    ) -> Path:
        """A kubeconfig acting as ServiceAccount ``namespace/name`` (token from TokenRequest),
        e.g. to run the operator with exactly the chart's RBAC instead of as admin."""
        status, body = self.api(
            "POST",
            f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {"expirationSeconds": expiration_seconds},
            },
        )
        if status != 201:
            raise ControlPlaneError(f"TokenRequest for {namespace}/{name} failed: {body}")
        target = Path(path) if path else self.state_dir / f"sa-{namespace}-{name}.kubeconfig"
        return self.token_kubeconfig(
            body["status"]["token"], target, f"system:serviceaccount:{namespace}:{name}"
        )

    def kubectl(self, *args: str, check: bool = True, input: str | None = None) -> str:
        """Run the pinned kubectl as admin and return stdout."""
        result = subprocess.run(
            [str(self.binaries["kubectl"]), f"--kubeconfig={self.kubeconfig}", *args],
            capture_output=True,
            text=True,
            input=input,
            check=False,
        )
        if check and result.returncode != 0:
            raise ControlPlaneError(f"kubectl {' '.join(args)} failed: {result.stderr}")
        return result.stdout

    def logs(self) -> dict[str, Path]:
        return {name: self.log_dir / f"{name}.log" for name in COMPONENTS}


# ---- developer commands ---------------------------------------------------------------------

DEFAULT_STATE_DIR: Final = (
    Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state"))
    / "kubetune"
    / "dev-cluster"
)


def _process_belongs_to(pid: int, marker: str) -> bool:
    """Guard against a recycled pid: only signal a process whose command line names the
    state dir (components) or this package (the `up` supervisor)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return False
    return marker in cmdline


def up(state_dir: str | Path | None = None, block: bool = True) -> ControlPlane:
    """Start a development cluster in ``state_dir`` and, with ``block``, run until SIGINT or
    SIGTERM (what `down` sends). Without ``block`` the caller owns the returned ControlPlane."""
    directory = Path(state_dir or DEFAULT_STATE_DIR).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    existing = directory / STATE_FILE
    if existing.exists():
        pid = json.loads(existing.read_text()).get("supervisor_pid", 0)
        if pid and _process_belongs_to(pid, "kubetune"):
            raise ControlPlaneError(f"a control plane is already running from {directory}")
    control_plane = ControlPlane(directory)
    control_plane.start()
    if not block:
        return control_plane
    print(f"export KUBECONFIG={control_plane.kubeconfig}", flush=True)
    print(
        f"# API server {control_plane.server}, up in {control_plane.startup_seconds:.1f}s; "
        f"logs in {control_plane.log_dir}. Stop with Ctrl-C or "
        f"`python -m kubetune_dev down --state-dir {directory}`.",
        flush=True,
    )

    def on_term(signum: int, frame: Any) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_term)
    try:
        while all(p.poll() is None for p in control_plane._processes.values()):
            time.sleep(1)
        log.error("a component exited; logs in %s", control_plane.log_dir)
    except KeyboardInterrupt:
        pass
    finally:
        control_plane.stop()
    return control_plane


def down(state_dir: str | Path | None = None, timeout: float = 20.0) -> bool:
    """Stop the cluster started by `up` in ``state_dir``. Returns False if none was running."""
    directory = Path(state_dir or DEFAULT_STATE_DIR).resolve()
    state_path = directory / STATE_FILE
    if not state_path.exists():
        return False
    state = json.loads(state_path.read_text())
    supervisor = int(state.get("supervisor_pid", 0))
    if supervisor and _process_belongs_to(supervisor, "kubetune"):
        os.kill(supervisor, signal.SIGTERM)  # it stops its components in order
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _process_belongs_to(supervisor, "kubetune"):
            time.sleep(0.2)
    # The supervisor was killed hard or did not finish: stop leftovers ourselves.
    components: dict[str, int] = state.get("components", {})
    for name in reversed(COMPONENTS):
        pid = components.get(name)
        if pid and _process_belongs_to(pid, str(directory)):
            os.kill(pid, signal.SIGTERM)
    state_path.unlink(missing_ok=True)
    return True


@contextlib.contextmanager
def running(state_dir: str | Path | None = None) -> Iterator[ControlPlane]:
    """Convenience: ``with running() as cp:`` for scripts."""
    with ControlPlane(state_dir) as control_plane:
        yield control_plane
