"""A private single-node SLURM cluster (munged, slurmctld, slurmd) for tests.

Everything lives under one directory: slurm.conf, munge key and socket, state,
spool and logs.  Nothing under /etc or /run is read or written and no system
service is touched; clients find the cluster through ``SLURM_CONF`` (see
:meth:`LocalSlurm.env`).  Needs root and the Debian packages in INSTALL_HINT.

Typical pytest use::

    reason = slurm_cluster.unavailable_reason()
    if reason:
        pytest.skip(reason)
    cluster = slurm_cluster.LocalSlurm.start(tmp_path_factory.mktemp("slurm"))
    try:
        job = cluster.submit(script)
        assert cluster.wait(job)["JobState"] == "COMPLETED"
    finally:
        cluster.stop()
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "srun", "scontrol", "scancel", "squeue")
INSTALL_HINT = "apt-get install -y --no-install-recommends munge slurmctld slurmd slurm-client"
NODE = "localhost"
# A requeued job starts again CRED_EXPIRE_S + 1 s after the requeue; SLURM
# replaces values below 5 with its default of 120.
CRED_EXPIRE_S = 10
# Base job states after which a job never runs again; a requeued job goes
# through COMPLETING, PENDING and RUNNING instead.
FINAL_STATES = frozenset(
    {
        "BOOT_FAIL",
        "CANCELLED",
        "COMPLETED",
        "DEADLINE",
        "FAILED",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PREEMPTED",
        "SPECIAL_EXIT",
        "TIMEOUT",
    }
)
_KEY = re.compile(r"[A-Za-z][\w/:]*=")


def unavailable_reason() -> str | None:
    """Return why a local cluster cannot be started here, or None if it can."""
    missing = [b for b in BINARIES if shutil.which(b) is None]
    if missing:
        return f"SLURM binaries missing ({', '.join(missing)}); run: {INSTALL_HINT}"
    if os.geteuid() != 0:
        return "a local SLURM cluster needs root (slurmd launches the jobs)"
    return None


def _free_ports(count: int) -> list[int]:
    """Return count distinct TCP ports that are free right now."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _tail(path: Path, lines: int = 30) -> str:
    """Return the last lines of a file, or a note that it does not exist."""
    if not path.exists():
        return f"({path} does not exist)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _slurm_conf(root: Path, cpus: int, memory_mb: int, gpus: int) -> str:
    """Return the text of slurm.conf for a one-node cluster rooted at root.

    gpus > 0 declares that many pretend GPUs (empty files as their devices), so jobs that ask for
    --gpus-per-node are scheduled on a machine without any.
    """
    ctld_port, slurmd_port = _free_ports(2)
    return f"""\
ClusterName=ltgen-test
SlurmctldHost={NODE}
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge/munge.socket,cred_expire={CRED_EXPIRE_S}
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/run/slurmctld.pid
SlurmdPidFile={root}/run/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
PlugStackConfig={root}/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerParameters=sched_interval=2,bf_interval=1
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
GresTypes=gpu
MailProg=/bin/true
JobRequeue=1
ReturnToService=2
KillWait=10
NodeName={NODE} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} Gres=gpu:{gpus} State=UNKNOWN
PartitionName=debug Nodes={NODE} Default=YES MaxTime=INFINITE State=UP
"""


def _parse_record(text: str) -> dict[str, str]:
    """Parse the first record of ``scontrol show ... -o`` output into a dict."""
    fields: dict[str, str] = {}
    key = ""
    lines = text.strip().splitlines()
    for token in lines[0].split(" ") if lines else []:
        if _KEY.match(token):
            key, value = token.split("=", 1)
            fields[key] = value
        elif key:  # part of a value that contains spaces
            fields[key] += " " + token
    return fields


@dataclass
class LocalSlurm:
    """A running private cluster; create it with :meth:`start`."""

    root: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def conf(self) -> Path:
        """Path of the cluster's slurm.conf."""
        return self.root / "slurm.conf"

    @classmethod
    def start(cls, workdir: Path, gpus: int = 0, timeout: float = 60.0) -> LocalSlurm:
        """Configure a cluster in workdir, start its daemons, wait for an idle node (with gpus pretend GPUs)."""
        root = Path(workdir).resolve()
        for sub in ("munge", "state", "spool", "run", "log"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        (root / "munge").chmod(0o700)
        key = root / "munge" / "munge.key"
        if not key.exists():
            key.write_bytes(os.urandom(1024))
            key.chmod(0o600)
        (root / "plugstack.conf").write_text("")
        cpus = len(os.sched_getaffinity(0))
        memory_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
        (root / "slurm.conf").write_text(_slurm_conf(root, cpus, memory_mb * 8 // 10, gpus))
        for index in range(gpus):  # SLURM wants a device file per GPU; empty files do on a machine without any
            (root / f"fake-gpu{index}").touch()
        (root / "gres.conf").write_text(f"Name=gpu File={root}/fake-gpu[0-{gpus - 1}]\n" if gpus else "")
        socket_path = root / "munge" / "munge.socket"
        cluster = cls(root)
        try:
            # --force: munged refuses to run as root without it.
            cluster._spawn(
                "munged",
                [
                    "munged",
                    "--foreground",
                    "--force",
                    f"--socket={socket_path}",
                    f"--key-file={key}",
                    f"--pid-file={root}/run/munged.pid",
                    f"--seed-file={root}/munge/munged.seed",
                ],
            )
            cluster._await("munged", timeout, socket_path.exists)
            cluster._spawn("slurmctld", ["slurmctld", "-D"])
            cluster._await("slurmctld", timeout, cluster._controller_up)
            cluster._spawn("slurmd", ["slurmd", "-D", "-N", NODE])
            cluster._await("slurmd", timeout, lambda: cluster.node()["State"] == "IDLE", cluster.node)
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def env(self) -> dict[str, str]:
        """Return os.environ plus what SLURM clients need to reach this cluster."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *cmd: str, check: bool = True, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        """Run a SLURM client command against this cluster, capturing its output."""
        result = subprocess.run(cmd, check=False, env=self.env(), cwd=cwd, capture_output=True, text=True, timeout=60)
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({result.returncode}): {result.stderr.strip()}")
        return result

    def node(self) -> dict[str, str]:
        """Return the fields of ``scontrol show node -o`` for the cluster's node."""
        out = self.run("scontrol", "show", "node", "-o", NODE, check=False).stdout
        return {"State": "", **_parse_record(out)}

    def submit(self, script: Path, *args: str, options: tuple[str, ...] = (), cwd: Path | None = None) -> str:
        """Submit script with sbatch from cwd (default: the script's directory); return the job id."""
        script = Path(script).resolve()
        cmd = ("sbatch", "--parsable", *options, str(script), *args)
        return self.run(*cmd, cwd=cwd or script.parent).stdout.strip().split(";")[0]

    def job_info(self, job_id: str) -> dict[str, str]:
        """Return the fields of ``scontrol show job -o`` (first record of an array)."""
        return _parse_record(self.run("scontrol", "show", "job", "-o", job_id).stdout)

    def wait(self, job_id: str, timeout: float = 300.0) -> dict[str, str]:
        """Poll job_info every second until the job is final; return that record.

        A requeued job goes back to PENDING and runs again, so it is waited for;
        its ``Restarts`` field counts the requeues.
        """
        deadline = time.monotonic() + timeout
        while True:
            info = self.job_info(job_id)
            if info.get("JobState") in FINAL_STATES:
                return info
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} not final after {timeout} s: {info}")
            time.sleep(1)

    def stop(self) -> None:
        """Cancel all jobs, then stop the daemons this object started (only those)."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            self.run("scancel", "--user", str(os.geteuid()), check=False)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and self._jobs_left():
                time.sleep(0.5)
        for name in reversed(list(self.procs)):
            proc = self.procs.pop(name)
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    def _controller_up(self) -> bool:
        """Whether slurmctld answers."""
        return self.run("scontrol", "ping", check=False).returncode == 0

    def _jobs_left(self) -> bool:
        """Whether the controller still lists any job that is not finished."""
        out = self.run("squeue", "--noheader", check=False).stdout
        return bool(out.strip())

    def _spawn(self, name: str, cmd: list[str]) -> None:
        """Start a daemon in its own session, its output going to log/<name>.out."""
        with open(self.root / "log" / f"{name}.out", "ab") as out:
            self.procs[name] = subprocess.Popen(
                cmd,
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _await(
        self,
        name: str,
        timeout: float,
        ready: Callable[[], bool],
        detail: Callable[[], object] = str,
    ) -> None:
        """Wait for ready(); if the daemon dies or time runs out, raise with its output."""
        deadline = time.monotonic() + timeout
        while not ready():
            proc = self.procs[name]
            if proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)
                continue
            what = f"not ready after {timeout} s" if proc.returncode is None else f"exited with {proc.returncode}"
            out = self.root / "log" / f"{name}.out"
            raise RuntimeError(f"{name} {what} (cluster in {self.root}) {detail()}\n--- {out} ---\n{_tail(out)}")
