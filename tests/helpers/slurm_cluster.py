"""A real, throw-away, single-node Slurm cluster for integration tests.

Usage::

    from tests.helpers.slurm_cluster import SlurmCluster, slurm_available

    with SlurmCluster(tmp_dir) as cluster:       # slurmctld + slurmd are up, node idle
        job = cluster.submit(script, env={"MASTER_PORT": "29500"})
        assert cluster.wait(job, timeout=60) == "COMPLETED", cluster.diagnostics(job)

or, in a test module / conftest.py::

    slurm_cluster = slurm_cluster_fixture()      # session-scoped fixture "slurm_cluster"

What it does
------------
* writes ``slurm.conf`` into the scratch directory (controller and node are
  ``hostname -s`` at 127.0.0.1, free ports for slurmctld/slurmd, every
  state/spool/log/pid path inside the scratch directory, no accounting, no
  cgroups) -- nothing under /etc/slurm is read or written;
* makes sure the system ``munged`` runs (as user ``munge``, default socket),
  creating ``/etc/munge/munge.key`` if missing; a munged started here is
  stopped again when the last live SlurmCluster (in any process) exits, one
  that was running before is left alone;
* starts ``slurmctld`` and ``slurmd`` (they daemonise; pids come from the pid
  files in the scratch directory) and waits until ``sinfo`` reports ``idle``;
* on exit cancels the remaining jobs, stops both daemons by their pids (TERM,
  then KILL), and kills whatever process still carries this cluster's
  ``SLURM_CONF`` in its environment (stray job steps).

Clients must use :attr:`SlurmCluster.env` (``os.environ`` + ``SLURM_CONF``).
Accounting is off (no ``sacct``): :meth:`SlurmCluster.wait` polls
``scontrol show job -o``; ``MinJobAge=300`` keeps finished jobs visible there.

Everything here needs root (``SlurmUser=root``, starting munged as ``munge``):
:func:`slurm_available` says why the cluster cannot run, for ``pytest.skip``.
Set ``LAYERPAR_REQUIRE_SLURM=1`` (e.g. in CI) to make the fixture fail instead
of skip when Slurm is unavailable.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from .procs import free_port, run_checked, tail

__all__ = [
    "SlurmCluster",
    "SlurmError",
    "slurm_available",
    "slurm_cluster_fixture",
    "TERMINAL_JOB_STATES",
]

# Binaries live in /usr/sbin on Debian; root's PATH has it, others may not.
_SEARCH_PATH = os.pathsep.join(
    dict.fromkeys(
        p
        for p in os.environ.get("PATH", "").split(os.pathsep) + ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        if p
    )
)
_CLIENTS = ("sbatch", "srun", "squeue", "scontrol", "sinfo", "scancel")
_DAEMONS = ("slurmctld", "slurmd", "munged")

MUNGE_KEY = Path("/etc/munge/munge.key")
MUNGE_RUN_DIR = Path("/run/munge")
MUNGE_SOCKET = MUNGE_RUN_DIR / "munge.socket.2"
MUNGE_PID_FILE = MUNGE_RUN_DIR / "munged.pid"
# One file per live SlurmCluster using the system munged ("<pid>.<id>").
_MUNGE_USERS_DIR = Path("/run/layerpar-test-munge-users")
_MUNGE_LOCK = Path("/run/layerpar-test-munge.lock")
# Holds munged's pid while a munged started by a SlurmCluster is running.
_MUNGE_STARTED_MARK = _MUNGE_USERS_DIR / "started"

TERMINAL_JOB_STATES = frozenset(
    {
        "BOOT_FAIL",
        "CANCELLED",
        "COMPLETED",
        "DEADLINE",
        "FAILED",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PREEMPTED",
        "REVOKED",
        "SPECIAL_EXIT",
        "TIMEOUT",
    }
)
#: returned by :meth:`SlurmCluster.wait` when the job left slurmctld's memory
#: before a final state was seen (should not happen with MinJobAge=300).
VANISHED = "VANISHED"

# Unix socket paths (slurmd puts step sockets in its spool dir) max 108 bytes.
_MAX_WORKDIR_LEN = 70


class SlurmError(RuntimeError):
    """The test cluster could not be started or used; message has log tails."""


def _which(name: str) -> str | None:
    return shutil.which(name, path=_SEARCH_PATH)


def slurm_available() -> str | None:
    """``None`` if a :class:`SlurmCluster` can be started here, else the reason."""
    missing = [b for b in _CLIENTS + _DAEMONS + ("runuser",) if _which(b) is None]
    if missing:
        return (
            "Slurm/munge not installed (missing: " + ", ".join(missing) + "); "
            "install with `apt-get install -y slurm-wlm`"
        )
    if os.geteuid() != 0:
        return "a test Slurm cluster needs root (SlurmUser=root, munged as user munge)"
    try:
        import pwd

        pwd.getpwnam("munge")
    except KeyError:
        return "user 'munge' does not exist (munge package incomplete)"
    if not MUNGE_KEY.exists() and not (_which("mungekey") or _which("create-munge-key")):
        return f"{MUNGE_KEY} missing and neither mungekey nor create-munge-key found"
    return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); treat it as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _proc_cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace"
        )
    except OSError:
        return ""


def _terminate(pid: int, grace: float = 10.0) -> None:
    """SIGTERM ``pid``, wait up to ``grace`` s, then SIGKILL."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 5
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)


def _short_hostname() -> str:
    out = subprocess.run(["hostname", "-s"], capture_output=True, text=True)
    name = out.stdout.strip() if out.returncode == 0 else ""
    return name or socket.gethostname().split(".")[0]


def _parse_scontrol_oneliner(line: str) -> dict[str, str]:
    """``Key=Value Key2=Value with spaces ...`` -> dict (values may contain spaces)."""
    fields: dict[str, str] = {}
    for m in re.finditer(r"(?:^|\s)([A-Za-z][\w:/]*)=(.*?)(?=\s[A-Za-z][\w:/]*=|$)", line.strip()):
        fields.setdefault(m.group(1), m.group(2))
    return fields


# --------------------------------------------------------------------------- munge


class _MungeGuard:
    """Ensure the system munged runs; stop it when the last SlurmCluster leaves.

    munged is stopped only if a SlurmCluster started it (``_MUNGE_STARTED_MARK``)
    and no other live process still holds a token in ``_MUNGE_USERS_DIR``; a
    munged that was running before is never touched.
    """

    def __init__(self) -> None:
        self.started_by_us = False
        self._token: Path | None = None

    @staticmethod
    def _works() -> bool:
        if not MUNGE_SOCKET.exists():
            return False
        try:
            cred = subprocess.run(
                [_which("munge") or "munge", "-n"], capture_output=True, timeout=10
            )
            if cred.returncode != 0:
                return False
            dec = subprocess.run(
                [_which("unmunge") or "unmunge"], input=cred.stdout, capture_output=True, timeout=10
            )
            return dec.returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False

    @staticmethod
    def _ensure_key() -> None:
        if MUNGE_KEY.exists():
            return
        MUNGE_KEY.parent.mkdir(parents=True, exist_ok=True)
        mk = _which("mungekey")
        if mk:
            run_checked([mk, "--create", f"--keyfile={MUNGE_KEY}"], timeout=30)
        else:
            run_checked([_which("create-munge-key") or "create-munge-key", "-f"], timeout=30)
        shutil.chown(MUNGE_KEY, "munge", "munge")
        os.chmod(MUNGE_KEY, 0o400)

    def acquire(self) -> None:
        _MUNGE_USERS_DIR.mkdir(parents=True, exist_ok=True)
        with open(_MUNGE_LOCK, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not self._works():
                self._ensure_key()
                MUNGE_RUN_DIR.mkdir(parents=True, exist_ok=True)
                shutil.chown(MUNGE_RUN_DIR, "munge", "munge")
                os.chmod(MUNGE_RUN_DIR, 0o755)
                # A stale socket/pid left by a killed munged makes it refuse to start.
                if MUNGE_SOCKET.exists():
                    old = _read_pid(MUNGE_PID_FILE)
                    if old is None or not _pid_alive(old):
                        for p in (MUNGE_SOCKET, Path(str(MUNGE_SOCKET) + ".lock"), MUNGE_PID_FILE):
                            p.unlink(missing_ok=True)
                res = run_checked(
                    [_which("runuser") or "runuser", "-u", "munge", "--", _which("munged") or "/usr/sbin/munged"],
                    timeout=30,
                    check=False,
                )
                deadline = time.monotonic() + 10
                while not self._works():
                    if time.monotonic() > deadline:
                        raise SlurmError(
                            "munged did not come up (exit code {}):\n{}\n{}\n--- munged.log ---\n{}".format(
                                res.returncode, tail(res.stdout), tail(res.stderr),
                                tail(Path("/var/log/munge/munged.log")),
                            )
                        )
                    time.sleep(0.05)
                self.started_by_us = True
                # Whoever leaves last stops it, even if that is another process.
                _MUNGE_STARTED_MARK.write_text(str(_read_pid(MUNGE_PID_FILE) or ""))
            self._token = _MUNGE_USERS_DIR / f"{os.getpid()}.{id(self)}"
            self._token.touch()

    def release(self) -> int | None:
        """Drop our token; returns munged's pid if this call stopped it."""
        if self._token is None:
            return None
        with open(_MUNGE_LOCK, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._token.unlink(missing_ok=True)
            self._token = None
            self.started_by_us = False
            started_pid = _read_pid(_MUNGE_STARTED_MARK)
            if started_pid is None:  # munged was there before us: not ours to stop
                return None
            others = []
            for tok in _MUNGE_USERS_DIR.iterdir():
                if tok == _MUNGE_STARTED_MARK:
                    continue
                try:
                    pid = int(tok.name.split(".", 1)[0])
                except ValueError:
                    continue
                if _pid_alive(pid):
                    others.append(tok)
                else:
                    tok.unlink(missing_ok=True)
            if others:  # someone else still needs it; leave it running
                return None
            _MUNGE_STARTED_MARK.unlink(missing_ok=True)
            pid = _read_pid(MUNGE_PID_FILE)
            if pid == started_pid and "munged" in _proc_cmdline(pid):
                _terminate(pid)
                return pid
            return None


# --------------------------------------------------------------------------- cluster


class SlurmCluster:
    """A single-node Slurm cluster (slurmctld + slurmd) living in ``workdir``.

    Parameters
    ----------
    workdir:
        Scratch directory (created if needed); ``None`` -> a fresh
        ``/tmp/lp-slurm-*`` directory that is removed on exit.  Keep the path
        short (< 70 chars): slurmd creates Unix sockets inside it.
    cpus:
        ``CPUs=`` of the node (default ``os.cpu_count()`` restricted to our
        affinity, i.e. ``nproc``).
    partition:
        Name of the single (default) partition.
    start_timeout:
        Seconds to wait for the node to become ``idle``.
    extra_conf:
        Lines appended to slurm.conf (a later key overrides an earlier one).
    keep_workdir:
        Keep an auto-created workdir after exit (for debugging).
    reap_wait:
        Seconds ``stop()`` waits for the stopped daemons' zombies to be reaped
        by PID 1 (so ``pgrep slurmctld`` right afterwards is empty); 0 to skip.

    Attributes (valid after ``start()``): ``workdir``, ``conf_path``,
    ``env``, ``nodename``, ``partition``, ``cpus``, ``ctld_port``,
    ``slurmd_port``, ``log_dir``.
    """

    def __init__(
        self,
        workdir: str | os.PathLike | None = None,
        *,
        cpus: int | None = None,
        partition: str = "debug",
        start_timeout: float = 30.0,
        extra_conf: Sequence[str] = (),
        keep_workdir: bool = False,
        reap_wait: float = 3.0,
    ) -> None:
        reason = slurm_available()
        if reason:
            raise SlurmError(reason)
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="lp-slurm-", dir="/tmp")).resolve()
        if len(str(self.workdir)) > _MAX_WORKDIR_LEN:
            raise SlurmError(
                f"workdir path too long for slurmd's Unix sockets ({len(str(self.workdir))} > "
                f"{_MAX_WORKDIR_LEN} chars): {self.workdir}"
            )
        self.cpus = int(cpus or len(os.sched_getaffinity(0)))
        self.partition = partition
        self.start_timeout = float(start_timeout)
        self.extra_conf = list(extra_conf)
        self.keep_workdir = keep_workdir
        self.reap_wait = float(reap_wait)
        self.nodename = _short_hostname()
        self.conf_path = self.workdir / "slurm.conf"
        self.log_dir = self.workdir / "log"
        self.state_dir = self.workdir / "state"
        self.spool_dir = self.workdir / "spool"
        self.run_dir = self.workdir / "run"
        self.ctld_pid_file = self.run_dir / "slurmctld.pid"
        self.slurmd_pid_file = self.run_dir / "slurmd.pid"
        self.ctld_log = self.log_dir / "slurmctld.log"
        self.slurmd_log = self.log_dir / "slurmd.log"
        self.ctld_port = 0
        self.slurmd_port = 0
        self.env: dict[str, str] = {}
        self._munge = _MungeGuard()
        self._started = False
        self._ready = False
        self.startup_seconds: float | None = None

    # ------------------------------------------------------------ lifecycle

    def __enter__(self) -> SlurmCluster:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _write_conf(self) -> None:
        w = self.workdir
        lines = [
            "# generated by tests/helpers/slurm_cluster.py",
            "ClusterName=layerpartest",
            f"SlurmctldHost={self.nodename}(127.0.0.1)",
            f"SlurmctldPort={self.ctld_port}",
            f"SlurmdPort={self.slurmd_port}",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            "SlurmUser=root",
            "SlurmdUser=root",
            f"StateSaveLocation={self.state_dir}",
            f"SlurmdSpoolDir={self.spool_dir}",
            f"SlurmctldPidFile={self.ctld_pid_file}",
            f"SlurmdPidFile={self.slurmd_pid_file}",
            f"SlurmctldLogFile={self.ctld_log}",
            f"SlurmdLogFile={self.slurmd_log}",
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_CPU",
            "SchedulerType=sched/backfill",
            # default batch_sched_delay=3 lets a submitted job wait up to 3 s
            "SchedulerParameters=batch_sched_delay=0",
            "MpiDefault=none",
            "ReturnToService=2",
            # keep finished jobs visible to `scontrol show job` (no accounting)
            "MinJobAge=300",
            "InactiveLimit=0",
            "KillWait=5",
            "Waittime=0",
            "SlurmctldTimeout=60",
            "SlurmdTimeout=60",
            # don't drain the node if detected hardware differs from CPUs=
            "SlurmdParameters=config_overrides",
            "MailProg=/bin/true",
            f"TmpFS={w}/tmp",
            f"NodeName={self.nodename} NodeAddr=127.0.0.1 NodeHostname={self.nodename} "
            f"CPUs={self.cpus} State=UNKNOWN",
            f"PartitionName={self.partition} Nodes={self.nodename} Default=YES "
            "MaxTime=INFINITE State=UP",
            *self.extra_conf,
        ]
        self.conf_path.write_text("\n".join(lines) + "\n")

    def start(self) -> SlurmCluster:
        if self._started:
            return self
        t0 = time.monotonic()
        for d in (self.workdir, self.log_dir, self.state_dir, self.spool_dir, self.run_dir, self.workdir / "tmp"):
            d.mkdir(parents=True, exist_ok=True)
        self.ctld_port = free_port()
        self.slurmd_port = free_port()
        while self.slurmd_port == self.ctld_port:
            self.slurmd_port = free_port()
        self._write_conf()
        self.env = dict(os.environ)
        self.env["SLURM_CONF"] = str(self.conf_path)
        self.env["PATH"] = _SEARCH_PATH
        # Client settings from the outer environment would confuse our clients.
        for k in list(self.env):
            if k.startswith(("SBATCH_", "SALLOC_", "SRUN_", "SQUEUE_")) or k in (
                "SLURM_JOB_ID",
                "SLURM_JOBID",
                "SLURM_STEP_ID",
            ):
                del self.env[k]

        self._started = True  # from here on stop() has something to clean up
        try:
            self._munge.acquire()
            self._start_daemon("slurmctld", self.ctld_pid_file)
            self._start_daemon("slurmd", self.slurmd_pid_file)
            self._wait_idle()
            self._ready = True
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - t0
        return self

    def _start_daemon(self, name: str, pid_file: Path) -> None:
        binary = _which(name)
        argv = [binary, "-f", str(self.conf_path)]
        if name == "slurmd":
            argv += ["-N", self.nodename]
        log = self.ctld_log if name == "slurmctld" else self.slurmd_log
        pid_file.unlink(missing_ok=True)  # a stale pid could be reused by anything
        # The daemon forks and detaches; the launcher exits at once (non-zero on
        # a config error, with the reason on stderr).
        res = run_checked(argv, env=self.env, timeout=30, check=False)
        deadline = time.monotonic() + 15
        while True:
            pid = _read_pid(pid_file)
            if pid is not None and _pid_alive(pid):
                return
            if res.returncode != 0 or time.monotonic() > deadline or self._fatal_in_log(log):
                raise SlurmError(
                    f"{name} did not start (launcher exit code {res.returncode}, no live pid in {pid_file})\n"
                    f"--- launcher stdout ---\n{tail(res.stdout)}\n--- launcher stderr ---\n{tail(res.stderr)}\n"
                    + self.log_tails()
                )
            time.sleep(0.05)

    @staticmethod
    def _fatal_in_log(log: Path) -> bool:
        try:
            return "fatal:" in log.read_text(errors="replace")
        except OSError:
            return False

    def _wait_idle(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        last = ""
        while True:
            res = self.run(["sinfo", "-h", "-o", "%T"], timeout=10, check=False)
            last = (res.stdout + res.stderr).strip()
            if res.returncode == 0 and res.stdout.split() == ["idle"]:
                return
            for name, pf in (("slurmctld", self.ctld_pid_file), ("slurmd", self.slurmd_pid_file)):
                pid = _read_pid(pf)
                if pid is None or not _pid_alive(pid):
                    raise SlurmError(f"{name} died during start-up\n" + self.log_tails())
            if time.monotonic() > deadline:
                raise SlurmError(
                    f"node not idle after {self.start_timeout:.0f} s; last `sinfo -h -o %T`: {last!r}\n"
                    + self.log_tails()
                )
            time.sleep(0.1)

    def stop(self) -> None:
        """Cancel jobs, stop slurmd and slurmctld, kill stray steps, release munged."""
        if not self._started:
            return
        stopped: list[int] = []
        try:
            ctld = _read_pid(self.ctld_pid_file)
            # Only a controller that answered once is worth asking (a dying one
            # makes clients retry for ~10 s); strays are killed below anyway.
            if self._ready and ctld is not None and _pid_alive(ctld):
                try:
                    ids = self.run(["squeue", "-h", "-o", "%i"], timeout=10, check=False).stdout.split()
                    if ids:
                        self.run(["scancel", *ids], timeout=10, check=False)
                except AssertionError:
                    pass
            for name, pf in (("slurmd", self.slurmd_pid_file), ("slurmctld", self.ctld_pid_file)):
                pid = _read_pid(pf)
                if pid is not None and _pid_alive(pid) and name in _proc_cmdline(pid):
                    _terminate(pid)
                    stopped.append(pid)
            self._kill_strays()
        finally:
            try:
                munged = self._munge.release()
            except OSError:
                munged = None
            if munged is not None:
                stopped.append(munged)
            # The daemons were re-parented to PID 1; until it reaps them they show
            # up as "<defunct>" in `pgrep slurmctld`.  Give it a moment.
            deadline = time.monotonic() + self.reap_wait
            while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in stopped):
                time.sleep(0.05)
            self._started = False
            self._ready = False
            if self._own_workdir and not self.keep_workdir:
                shutil.rmtree(self.workdir, ignore_errors=True)

    def _kill_strays(self) -> None:
        """Kill processes (slurmstepd, job tasks) whose environment names our SLURM_CONF."""
        marker = f"SLURM_CONF={self.conf_path}".encode() + b"\0"
        me = os.getpid()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == me:
                continue
            try:
                environ = (entry / "environ").read_bytes() + b"\0"
            except OSError:
                continue
            if marker in environ:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(int(entry.name), signal.SIGKILL)

    # ------------------------------------------------------------ clients

    def run(
        self,
        cmd: Sequence[str | os.PathLike] | str,
        timeout: float = 60,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike | None = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess:
        """Run a Slurm client (or anything) with :attr:`env` (+ ``env`` overrides)."""
        full_env = {**self.env, **(env or {})}
        return run_checked(cmd, env=full_env, timeout=timeout, cwd=cwd, check=check)

    def submit(
        self,
        script_path: str | os.PathLike,
        *sbatch_args: str,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike | None = None,
    ) -> str:
        """``sbatch --parsable [sbatch_args] script``; returns the job id (a str).

        ``env`` is added to the submission environment; sbatch exports it to
        the job (default ``--export=ALL``).  ``cwd`` (default: the script's
        directory) becomes the job's working directory.
        """
        script = Path(script_path).resolve()
        res = self.run(
            ["sbatch", "--parsable", *sbatch_args, str(script)],
            timeout=30,
            env=env,
            cwd=cwd or script.parent,
        )
        job_id = res.stdout.strip().split(";", 1)[0]
        if not job_id.isdigit():
            raise SlurmError(f"unexpected sbatch output: {res.stdout!r} {res.stderr!r}")
        return job_id

    def job_info(self, job_id: str | int) -> dict[str, str] | None:
        """Fields of ``scontrol show job -o ID`` (``None`` once the job is purged)."""
        res = self.run(["scontrol", "show", "job", "-o", str(job_id)], timeout=15, check=False)
        if res.returncode != 0 or not res.stdout.strip():
            if "Invalid job id" in res.stderr or "Invalid job id" in res.stdout:
                return None
            raise SlurmError(
                f"scontrol show job {job_id} failed ({res.returncode}): {res.stderr.strip()}\n"
                + self.log_tails()
            )
        return _parse_scontrol_oneliner(res.stdout.strip().splitlines()[0])

    def job_state(self, job_id: str | int) -> str:
        """Current ``JobState`` (e.g. PENDING, RUNNING, COMPLETED) or ``VANISHED``."""
        info = self.job_info(job_id)
        return VANISHED if info is None else info.get("JobState", "UNKNOWN")

    def wait(self, job_id: str | int, timeout: float = 120.0, poll: float = 0.2) -> str:
        """Block until the job is in a final state; return it (e.g. ``"COMPLETED"``).

        Returns ``"VANISHED"`` if the job left slurmctld before a final state
        was seen.  On timeout the job is cancelled and ``TimeoutError`` is
        raised with :meth:`diagnostics`.
        """
        deadline = time.monotonic() + timeout
        while True:
            state = self.job_state(job_id)
            if state in TERMINAL_JOB_STATES or state == VANISHED:
                return state
            if time.monotonic() > deadline:
                diag = self.diagnostics(job_id)
                self.run(["scancel", str(job_id)], timeout=10, check=False)
                raise TimeoutError(
                    f"Slurm job {job_id} still {state} after {timeout:.0f} s (cancelled)\n{diag}"
                )
            time.sleep(poll)

    def job_output(self, job_id: str | int) -> str:
        """Contents of the job's StdOut file ('' if unknown/missing)."""
        info = self.job_info(job_id) or {}
        path = info.get("StdOut")
        if not path:
            return ""
        try:
            return Path(path).read_text(errors="replace")
        except OSError:
            return ""

    def log_tails(self, lines: int = 30) -> str:
        return (
            f"--- {self.ctld_log} (tail) ---\n{tail(self.ctld_log, lines)}\n"
            f"--- {self.slurmd_log} (tail) ---\n{tail(self.slurmd_log, lines)}\n"
        )

    def diagnostics(self, job_id: str | int | None = None) -> str:
        """Job fields, job output tail and daemon log tails, for assertion messages."""
        parts = []
        if job_id is not None:
            try:
                info = self.job_info(job_id)
                parts.append(f"--- scontrol show job {job_id} ---\n{info}")
                out_path = (info or {}).get("StdOut")
                err_path = (info or {}).get("StdErr")
                if out_path:
                    parts.append(f"--- job stdout {out_path} (tail) ---\n{tail(Path(out_path))}")
                if err_path and err_path != out_path:
                    parts.append(f"--- job stderr {err_path} (tail) ---\n{tail(Path(err_path))}")
            except Exception as exc:  # diagnostics must never mask the real failure
                parts.append(f"<job info unavailable: {exc}>")
        parts.append(self.log_tails())
        return "\n".join(parts)


# --------------------------------------------------------------------------- pytest


def slurm_cluster_fixture(name: str = "slurm_cluster", scope: str = "session", **cluster_kwargs):
    """Build a pytest fixture yielding a running :class:`SlurmCluster`.

    In a test module or conftest.py::

        from tests.helpers.slurm_cluster import slurm_cluster_fixture
        slurm_cluster = slurm_cluster_fixture()          # fixture named "slurm_cluster"

    Skips (or fails, with ``LAYERPAR_REQUIRE_SLURM=1``) when
    :func:`slurm_available` gives a reason.
    """
    import pytest

    @pytest.fixture(scope=scope, name=name)
    def _slurm_cluster(tmp_path_factory):
        reason = slurm_available()
        if reason:
            if os.environ.get("LAYERPAR_REQUIRE_SLURM") == "1":
                pytest.fail(f"LAYERPAR_REQUIRE_SLURM=1 but: {reason}")
            pytest.skip(reason)
        workdir = tmp_path_factory.mktemp("slurm")
        if len(str(workdir)) > _MAX_WORKDIR_LEN:
            workdir = None  # fall back to a short /tmp/lp-slurm-* dir
        with SlurmCluster(workdir, **cluster_kwargs) as cluster:
            yield cluster

    return _slurm_cluster
