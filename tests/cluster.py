"""Real services for the cluster path: a single-node SLURM cluster and an MLflow server on PostgreSQL.

Both come from Debian's packages (installed on first use when we are root), keep all their state in
one fixed directory under the system temp dir, and are stopped by pid at teardown. The directory is
fixed so that the next session finds the pid files of a crashed run and stops its daemons first.
Outside it, only /etc/slurm/slurm.conf is touched: a link to our config while the cluster runs.
Test modules use the fixtures with `from cluster import slurm_cluster, postgres_mlflow_server`.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TRACKING_SCRIPT = REPO / "scripts" / "start_tracking_server.sh"
SLURM_STATE = Path(tempfile.gettempdir()) / "sparsenets-slurm"
MLFLOW_STATE = Path(tempfile.gettempdir()) / "sparsenets-mlflow"
SLURM_PACKAGES = {"slurmctld": "slurm-wlm", "slurmd": "slurm-wlm", "sbatch": "slurm-wlm", "munged": "munge",
                  "mungekey": "munge"}
MEMORY_HEADROOM_MB = 1024
SYSTEM_SLURM_CONF = Path("/etc/slurm/slurm.conf")


# ---------------------------------------------------------------- packages and processes


def ensure_debian_packages(binaries: dict[str, str]) -> None:
    """Install the packages providing missing binaries, so a fresh CI machine needs no setup step."""
    missing = sorted({pkg for exe, pkg in binaries.items() if not _which(exe)})
    if not missing:
        return
    if os.geteuid() != 0:
        pytest.skip(f"needs Debian packages {missing}: not installed, and installing them needs root")
    if not shutil.which("apt-get"):
        pytest.skip(f"needs Debian packages {missing}: not installed, and there is no apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    lock = ["-o", "DPkg::Lock::Timeout=600"]  # other sessions on the machine may be installing too
    run_checked(["apt-get", *lock, "update", "-qq"], env=env)
    run_checked(["apt-get", *lock, "install", "-y", "-qq", "--no-install-recommends", *missing], env=env)


def run_checked(cmd: list, **kwargs) -> None:
    """Run a setup command; on failure, raise with its output, which is where the reason is."""
    done = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, **kwargs)
    if done.returncode:
        output = (done.stdout + done.stderr)[-2000:]
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({done.returncode}):\n{output}")


def _which(exe: str) -> str | None:
    """Find system daemons too: sbin is often not on a non-root PATH."""
    return shutil.which(exe, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))


def free_port() -> int:
    """A port nobody listens on now; daemons of a lingering run keep theirs, so we never collide."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Daemon:
    """A process started in its own session, so its whole group (workers too) stops with it."""

    name: str
    proc: subprocess.Popen
    log: Path

    def tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace").splitlines() if self.log.exists() else []
        return f"--- {self.name} ({self.log}) ---\n" + "\n".join(text[-lines:])


class Services:
    """Daemons sharing one state directory; closing it stops them all, whatever failed midway."""

    def __init__(self, state: Path):
        self.state = fresh_state_dir(state)
        self.daemons: list[Daemon] = []

    def start(self, name: str, argv: list[str], **popen) -> Daemon:
        """Start argv in the background, logging to NAME.log, its pid in NAME.pid for a later cleanup."""
        log = self.state / f"{name}.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True, **popen)
        (self.state / f"{name}.pid").write_text(str(proc.pid))
        self.daemons.append(Daemon(name, proc, log))
        return self.daemons[-1]

    def wait_until(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll ready(); on timeout or a dead daemon, fail with every daemon's log tail."""
        deadline = time.monotonic() + timeout
        while not ready():
            dead = [d.name for d in self.daemons if d.proc.poll() is not None]
            if dead or time.monotonic() > deadline:
                reason = f"{dead} exited" if dead else f"not ready after {timeout:.0f} s"
                logs = "\n".join(d.tail() for d in self.daemons)
                raise RuntimeError(f"{what}: {reason}\n{logs}")
            time.sleep(0.5)

    def __enter__(self) -> Services:
        return self

    def __exit__(self, *exc) -> None:
        """Stop in reverse start order (clients before their service), then drop the state."""
        for daemon in reversed(self.daemons):
            stop_group(daemon.proc.pid)
            daemon.proc.wait(timeout=5)
        shutil.rmtree(self.state, ignore_errors=True)


def fresh_state_dir(state: Path) -> Path:
    """Stop the daemons a previous (possibly crashed) run left in state, then empty it."""
    for pid_file in state.glob("*.pid"):
        pid = int(pid_file.read_text())
        if pid_file.stem in _cmdline(pid):  # else the pid was reused by an unrelated program
            stop_group(pid)
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir(parents=True)
    return state


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def stop_group(pid: int, timeout: float = 15.0) -> None:
    """SIGTERM the process group led by pid, then SIGKILL whatever is left after the timeout."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not _group_alive(pid):
                return
            time.sleep(0.1)


def _group_alive(pgid: int) -> bool:
    """Reap the leader first if it is our child: a zombie would keep the group alive."""
    try:
        os.waitpid(pgid, os.WNOHANG)
    except ChildProcessError:
        pass
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


# ---------------------------------------------------------------- SLURM


@dataclass(frozen=True)
class SlurmCluster:
    """What a client needs: `env` is a complete environment (SLURM_CONF, PATH) for snakemake and sbatch."""

    env: dict[str, str]
    partition: str


def slurm_conf(state: Path, node: str, cpus: int, memory_mb: int, ports: tuple[int, int]) -> str:
    """A single-node cluster with no cgroups and no accounting: what a container can run."""
    ctld_port, slurmd_port = ports
    return f"""\
ClusterName=sparsenets
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={state}/munge.socket
StateSaveLocation={state}/ctld
SlurmdSpoolDir={state}/slurmd
SlurmctldPidFile={state}/slurmctld.daemon-pid
SlurmdPidFile={state}/slurmd.daemon-pid
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MpiDefault=none
ReturnToService=2
MinJobAge=300
MailProg=/bin/true
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""


def usable_memory_mb() -> int:
    """MemTotal less headroom: slurmd drains a node that reports less memory than configured."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024 - MEMORY_HEADROOM_MB
    raise RuntimeError("no MemTotal in /proc/meminfo")


def node_state(env: dict[str, str], node: str) -> str:
    done = subprocess.run(["sinfo", "-h", "-N", "-n", node, "-o", "%T"], env=env,
                          capture_output=True, text=True)
    return done.stdout.strip()


def link_system_conf(conf: Path) -> None:
    """Link the default slurm.conf to ours: the plugin's job step drops SLURM_CONF before its srun."""
    unlink_system_conf()
    if SYSTEM_SLURM_CONF.exists() or SYSTEM_SLURM_CONF.is_symlink():
        raise RuntimeError(f"{SYSTEM_SLURM_CONF} exists: jobs would read it instead of the test cluster's {conf}")
    SYSTEM_SLURM_CONF.parent.mkdir(parents=True, exist_ok=True)
    SYSTEM_SLURM_CONF.symlink_to(conf)


def unlink_system_conf() -> None:
    """Remove our link (maybe left by a crashed run), never a real cluster's slurm.conf."""
    if SYSTEM_SLURM_CONF.is_symlink() and SYSTEM_SLURM_CONF.readlink().is_relative_to(SLURM_STATE):
        SYSTEM_SLURM_CONF.unlink()


def start_slurm(services: Services) -> SlurmCluster:
    """munged, slurmctld and slurmd in the foreground (so their pids are ours), waited on until idle."""
    state, node = services.state, socket.gethostname().split(".")[0]
    conf, key = state / "slurm.conf", state / "munge.key"
    conf.write_text(slurm_conf(state, node, os.cpu_count() or 1, usable_memory_mb(), (free_port(), free_port())))
    link_system_conf(conf)
    for sub in ("ctld", "slurmd"):
        (state / sub).mkdir()
    run_checked([_which("mungekey"), "--create", f"--keyfile={key}"])
    path = os.pathsep.join([str(Path(sys.executable).parent), "/usr/sbin", os.environ.get("PATH", "/usr/bin:/bin")])
    env = {**os.environ, "SLURM_CONF": str(conf), "PATH": path}
    services.start("munged", [_which("munged"), "--foreground", f"--key-file={key}", f"--socket={state}/munge.socket",
                              f"--pid-file={state}/munged.daemon-pid", f"--seed-file={state}/munged.seed"])
    services.wait_until(lambda: (state / "munge.socket").exists(), 30, "munged socket")
    services.start("slurmctld", [_which("slurmctld"), "-D", "-f", str(conf)], env=env)
    services.start("slurmd", [_which("slurmd"), "-D", "-N", node, "-f", str(conf)], env=env)
    services.wait_until(lambda: node_state(env, node) == "idle", 60, f"SLURM node {node} idle")
    return SlurmCluster(env=env, partition="debug")


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    """A real single-node SLURM cluster for the session, its slurm.conf linked from the default path."""
    if os.geteuid() != 0:
        pytest.skip("slurmd must run as root to launch jobs")
    ensure_debian_packages(SLURM_PACKAGES)
    with Services(SLURM_STATE) as services:
        try:
            yield start_slurm(services)
        finally:
            unlink_system_conf()


# ---------------------------------------------------------------- PostgreSQL and MLflow


def postgres_bin() -> Path:
    """The newest installed server's bin dir; Debian keeps server binaries out of PATH."""
    def newest() -> list[Path]:
        return sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))

    if not newest():
        ensure_debian_packages({"/usr/lib/postgresql/15/bin/postgres": "postgresql"})
    return newest()[-1]


def start_postgres(services: Services, password: str) -> dict[str, str]:
    """A throwaway cluster on 127.0.0.1: trust only on its private socket, a password over TCP.

    The password reaches the server as a bound query parameter, never on a command line or in a file.
    Returns the libpq environment (PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE) of role `mlflow`.
    """
    import psycopg2

    user = "postgres" if os.geteuid() == 0 else None  # postgres refuses to run as root
    pg, root = postgres_bin(), services.state / "pg"
    data, sock = root / "data", root / "socket"
    sock.mkdir(parents=True, mode=0o700)
    if user:
        for path in (root, sock):
            shutil.chown(path, user, user)
    run_checked([pg / "initdb", "-D", data, "-U", "postgres", "-E", "UTF8", "--auth-local=trust",
                 "--auth-host=scram-sha-256", "--no-sync", "--no-instructions"], user=user, cwd=root)
    port = free_port()
    settings = {"listen_addresses": "127.0.0.1", "unix_socket_directories": sock, "fsync": "off"}  # throwaway data
    options = [arg for key, value in settings.items() for arg in ("-c", f"{key}={value}")]
    services.start("postgres", [str(pg / "postgres"), "-D", str(data), "-p", str(port), *options], user=user, cwd=root)
    def connect():
        return psycopg2.connect(host=str(sock), port=port, user="postgres", dbname="postgres")

    def accepts() -> bool:
        """The socket appears before recovery ends ("the database system is starting up"): wait for a session."""
        try:
            connect().close()
            return True
        except psycopg2.OperationalError:
            return False

    services.wait_until(accepts, 60, "postgres accepting connections")
    with closing(connect()) as conn:
        conn.autocommit = True  # CREATE DATABASE cannot run in a transaction
        with conn.cursor() as cur:
            cur.execute("CREATE ROLE mlflow LOGIN PASSWORD %s", (password,))
            cur.execute("CREATE DATABASE mlflow OWNER mlflow")
    return {"PGHOST": "127.0.0.1", "PGPORT": str(port), "PGUSER": "mlflow", "PGPASSWORD": password,
            "PGDATABASE": "mlflow"}


def healthy(uri: str) -> bool:
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@dataclass
class TrackingServer:
    """The `mlflow server` of the session: tests may stop it and start it again (same port, same database)."""

    services: Services
    env: dict[str, str]
    uri: str

    def start(self) -> None:
        """Start it with the user-facing script; return once /health answers."""
        self.services.start("mlflow", ["bash", str(TRACKING_SCRIPT)], env=self.env, cwd=self.services.state)
        self.services.wait_until(lambda: healthy(self.uri), 120, "mlflow server /health")

    def stop(self) -> None:
        """SIGTERM (then SIGKILL) the server and its workers: an outage, PostgreSQL keeps the data."""
        daemon = [d for d in self.services.daemons if d.name == "mlflow"][-1]
        stop_group(daemon.proc.pid)
        daemon.proc.wait(timeout=5)
        self.services.daemons.remove(daemon)  # not a daemon that died: start() waits on the others only
        assert not healthy(self.uri)


@pytest.fixture(scope="session")
def tracking_server() -> Iterator[TrackingServer]:
    """An `mlflow server` on a throwaway PostgreSQL, started by the user-facing script."""
    with Services(MLFLOW_STATE) as services:
        libpq = start_postgres(services, secrets.token_urlsafe(24))
        port = free_port()
        path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "/usr/bin:/bin")])
        env = {**os.environ, **libpq, "PATH": path, "MLFLOW_HOST": "127.0.0.1", "MLFLOW_PORT": str(port),
               "MLFLOW_WORKERS": "2",
               "MLFLOW_ARTIFACTS_DESTINATION": str(services.state / "artifacts")}
        server = TrackingServer(services, env, f"http://127.0.0.1:{port}")
        server.start()
        yield server


@pytest.fixture(scope="session")
def postgres_mlflow_server(tracking_server: TrackingServer) -> str:
    """The session's tracking server, by its URI."""
    return tracking_server.uri
