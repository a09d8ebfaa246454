"""A real multi-node Ray cluster that shares nothing with the driver but the network.

* **Its own venv.** Ray and the worker-side libraries at the versions of ``requirements.lock``,
  NOT the project, built once per lock content under ``$QUANT_META_CLUSTER_VENVS`` (default
  ``~/.cache/quant_meta_assets/cluster-venvs``), outside the checkout so the cluster can see it.
* **Its own view of the files.** ``ray start`` runs inside ``unshare --mount --pid``: a tmpfs is
  mounted over the checkout, the driver's venv and the test's temporary directory (where the
  driver-only plug-in package, DAGSTER_HOME and the storage root live), so no cluster process
  can import or read the driver's files. The PID namespace makes teardown total: killing the
  ``unshare`` process (by its id) kills every Ray process of the cluster, whatever state it is in;
  ``unshare`` is also killed by the kernel if the test process dies first (PR_SET_PDEATHSIG).
* **Token auth.** ``RAY_AUTH_MODE=token`` and a fresh token, in a HOME of its own.

Linux only, needs root (``unshare``); CI runs as root.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
LOCK = REPO_ROOT / "requirements.lock"
# ray[client]: the head's Ray Client server (ray://) needs grpcio
RAY_AND_WORKER_LIBS = ("ray[client]", "numpy", "pandas", "pyarrow", "scipy", "scikit-learn", "PyYAML")


def can_run() -> str | None:
    """Why the cluster cannot be built here, or None."""
    if not sys.platform.startswith("linux"):
        return "needs Linux namespaces"
    if os.geteuid() != 0:
        return "needs root for `unshare --mount` (CI runs as root)"
    if shutil.which("unshare") is None:
        return "needs util-linux `unshare`"
    return None


def _base_python() -> str:
    """The interpreter the driver's venv was made from: a stock Python without the project."""
    return getattr(sys, "_base_executable", None) or sys.executable


def cluster_venv(packages: tuple[str, ...] = RAY_AND_WORKER_LIBS, timeout_s: float = 900) -> Path:
    """A venv with ``packages`` pinned by requirements.lock (built once, then reused)."""
    key = hashlib.sha256((LOCK.read_text() + "\n".join(packages) + _base_python()).encode()).hexdigest()[:12]
    root = Path(os.environ.get("QUANT_META_CLUSTER_VENVS") or Path.home() / ".cache" / "quant_meta_assets" / "cluster-venvs")
    missing = sorted(set(RAY_AND_WORKER_LIBS) - set(packages))
    venv = root / f"{'without-' + '-'.join(missing) if missing else 'ray-worker-libs'}-{key}"
    done = venv / ".complete"
    if done.is_file():
        return venv
    shutil.rmtree(venv, ignore_errors=True)  # an interrupted build: start again
    venv.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([_base_python(), "-m", "venv", str(venv)], check=True, timeout=120)
    constraints = venv / "constraints.txt"  # the lock minus the editable project line
    constraints.write_text("".join(line + "\n" for line in LOCK.read_text().splitlines()
                                   if line.strip() and not line.startswith(("-e", "#"))))
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    "-c", str(constraints), *packages], check=True, timeout=timeout_s)
    done.write_text(" ".join(packages) + "\n")
    return venv


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the test process dies, even by SIGKILL, so the
    namespace (and with it every Ray process) cannot outlive a crashed test run."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RayTestCluster:
    """``ray start`` a head and ``workers`` worker nodes from ``venv`` in a mount+PID namespace."""

    venv: Path
    hidden: list[Path]
    workers: int = 1
    cpus_per_node: int = 1
    token: str = field(default_factory=lambda: secrets.token_hex(16))
    port: int = field(default_factory=_free_port)
    client_port: int = field(default_factory=_free_port)
    process: subprocess.Popen | None = None
    temp_dir: Path | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def client_address(self) -> str:
        return f"ray://127.0.0.1:{self.client_port}"

    def driver_env(self) -> dict[str, str]:
        """What a driver sets to reach the cluster (RAY_ADDRESS and the token)."""
        return {"RAY_ADDRESS": self.address, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token}

    def _script(self) -> str:
        bin_dir = shlex.quote(str(self.venv / "bin"))
        common = (f"--num-cpus={self.cpus_per_node} --disable-usage-stats "
                  f"--temp-dir={shlex.quote(str(self.temp_dir / 'ray'))}")
        wait_nodes = (
            "import ray, time, sys; ray.init(address=sys.argv[1]); n = int(sys.argv[2]);\n"
            "deadline = time.time() + 120\n"
            "while sum(x['Alive'] for x in ray.nodes()) < n and time.time() < deadline: time.sleep(0.5)\n"
            "print('NODES', sum(x['Alive'] for x in ray.nodes()), flush=True)"
        )
        lines = ["set -eu"]
        for path in self.hidden:  # the driver's files vanish for everything started below
            lines.append(f"mount -t tmpfs -o size=1m,mode=0755 qm-hidden {shlex.quote(str(path))}")
        lines += [
            f"export HOME={shlex.quote(str(self.temp_dir / 'home'))} RAY_AUTH_MODE=token RAY_AUTH_TOKEN={self.token}",
            "export RAY_USAGE_STATS_ENABLED=0 PYTHONDONTWRITEBYTECODE=1",
            f"cd {shlex.quote(str(self.temp_dir))}",
            f"{bin_dir}/ray start --head --node-ip-address=127.0.0.1 --port={self.port} "
            f"--ray-client-server-port={self.client_port} --include-dashboard=false {common}",
        ]
        lines += [f"{bin_dir}/ray start --address={self.address} --node-ip-address=127.0.0.1 {common}"] * self.workers
        lines += [
            f"{bin_dir}/python -c {shlex.quote(wait_nodes)} {self.address} {1 + self.workers}",
            "echo CLUSTER-READY",
            "exec sleep infinity",  # PID 1 of the namespace: when it dies, every Ray process dies
        ]
        return "\n".join(lines)

    def start(self, timeout_s: float = 180) -> RayTestCluster:
        self.temp_dir = Path(tempfile.mkdtemp(prefix="qmray"))  # short: Ray's unix socket paths
        (self.temp_dir / "home").mkdir()
        log = open(self.temp_dir / "cluster.log", "w")  # noqa: SIM115 - closed in stop()
        self._log = log
        self.process = subprocess.Popen(
            ["unshare", "--mount", "--pid", "--fork", "--kill-child", "--mount-proc",
             "bash", "-c", self._script()],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            text = self.log_text()
            if "CLUSTER-READY" in text:
                return self
            if self.process.poll() is not None:
                break
            time.sleep(0.5)
        text = self.log_text()
        self.stop()
        raise RuntimeError(f"the test Ray cluster did not start:\n{text[-4000:]}")

    def log_text(self) -> str:
        try:
            return (self.temp_dir / "cluster.log").read_text(errors="replace")
        except OSError:
            return ""

    def pids(self) -> list[int]:
        """Processes whose command line mentions this cluster's temp dir (should be none after stop)."""
        found = []
        marker = str(self.temp_dir).encode()
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if marker in (entry / "cmdline").read_bytes():
                        found.append(int(entry.name))
                except OSError:
                    continue
        return found

    def stop(self) -> None:
        """Kill the namespace by the id of its ``unshare`` process; every Ray process goes with it."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)  # --kill-child: its PID 1 gets SIGKILL too
        if self.process is not None:
            self.process.wait(timeout=30)
        deadline = time.monotonic() + 30
        while self.temp_dir is not None and self.pids() and time.monotonic() < deadline:
            time.sleep(0.2)
        leftovers = self.pids() if self.temp_dir is not None else []
        for pid in leftovers:  # never expected (the PID namespace is gone); by id, not by name
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if getattr(self, "_log", None) is not None:
            self._log.close()
        if self.temp_dir is not None:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
        if leftovers:
            raise RuntimeError(f"Ray processes {leftovers} outlived the cluster namespace")
