"""What ``train.py`` and ``evaluate.py`` share: user errors as one line, sweep jobs that fail alone, threads,
and output without noise (DESIGN §2, §9).

- :func:`main_entry` wraps a ``@hydra.main`` function: a :class:`~fr_invariance.errors.FrInvarianceError`
  (or a Hydra composition error: unknown option, unknown key, bad override syntax) ends in one
  ``error: <message>`` line on stderr and exit status 2; every other exception is a bug and keeps its
  traceback. ``HYDRA_FULL_ERROR=1`` shows the traceback of user errors too.
- :func:`run_task` is the body of a Hydra task: it sets the torch thread count, quiets known noise, and in a
  multirun records each job's outcome (``job_status.json``, ``error.txt``) instead of stopping the sweep;
  :class:`SweepSummary` (a Hydra callback) writes ``sweep_summary.json`` and sets the exit status.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import sys
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from hydra.core.hydra_config import HydraConfig
from hydra.errors import (
    ConfigCompositionException,
    InstantiationException,
    MissingConfigException,
    OverrideParseException,
    SearchPathException,
)
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from fr_invariance.atomic import atomic_write_text
from fr_invariance.errors import ConfigurationError, FrInvarianceError

USER_ERRORS: tuple[type[BaseException], ...] = (FrInvarianceError,)
"""The exceptions the entry points print as one line (exit status 2); everything else is a bug."""

USER_ERROR_STATUS = 2
BUG_STATUS = 1
JOB_STATUS_FILE = "job_status.json"
JOB_ERROR_FILE = "error.txt"
SWEEP_SUMMARY_FILE = "sweep_summary.json"
_USER_FULL_ERROR = "FR_INVARIANCE_USER_FULL_ERROR"  # the user's own HYDRA_FULL_ERROR, kept for child processes
_sweep_exit_status = 0

log = logging.getLogger(__name__)


# --- errors ------------------------------------------------------------------------------------------


def exit_with_user_error(error: BaseException) -> NoReturn:
    """Print ``error: <message>`` (one line) to stderr and exit with status 2 (no traceback).

    With ``HYDRA_FULL_ERROR=1`` set by the user the exception is re-raised so its traceback is shown.
    """
    if _user_wants_tracebacks():
        raise error
    print(f"error: {one_line(str(error))}", file=sys.stderr, flush=True)
    sys.exit(USER_ERROR_STATUS)


def one_line(message: str) -> str:
    """``message`` with its lines joined by ``"; "`` (blank lines and Hydra's doc links dropped)."""
    lines = [line.strip() for line in message.splitlines()]
    return "; ".join(line.rstrip(".") if index < len(lines) - 1 else line
                     for index, line in enumerate(lines) if line and not line.startswith("See https://"))


def config_error_from_hydra(error: BaseException) -> ConfigurationError | None:
    """A Hydra composition error (unknown option or key, bad override syntax) as a short
    :class:`ConfigurationError`, or None for any other exception."""
    if isinstance(error, MissingConfigException) and error.options is not None and error.missing_cfg_file:
        group, _, name = str(error.missing_cfg_file).rpartition("/")
        if group:
            return ConfigurationError(
                f"{group}={name} is not an option of config group '{group}' (conf/{group}/); "
                f"choose one of: {', '.join(sorted(error.options))}"
            )
    if isinstance(error, ConfigCompositionException):
        match = re.match(r"Could not override '([^']+)'", str(error))
        cause = error.__cause__
        if match and cause is not None and "not in struct" in str(cause):
            key = match.group(1)
            return ConfigurationError(
                f"{key}: unknown config key (no '{getattr(cause, 'full_key', key)}' in the config); check the "
                f"spelling, or add a new key with +{key}=..."
            )
        return ConfigurationError(one_line(str(error)))
    if isinstance(error, (OverrideParseException, SearchPathException)):
        return ConfigurationError(f"bad command-line override: {one_line(str(error))}")
    return None


def user_error_of(error: BaseException) -> FrInvarianceError | None:
    """``error`` itself, or the user error that Hydra's ``instantiate`` wrapped in an ``InstantiationException``
    (a constructor that rejected its config), or None for a bug."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, FrInvarianceError):
            return error
        if not isinstance(error, InstantiationException):
            return None
        seen.add(id(error))
        error = error.__cause__
    return None


def _user_wants_tracebacks() -> bool:
    return os.environ.get(_USER_FULL_ERROR, os.environ.get("HYDRA_FULL_ERROR", "0")) == "1"


def main_entry(hydra_main: Callable[[], Any], before: Callable[[], Any] | None = None) -> NoReturn:
    """Run a ``@hydra.main``-decorated function as a command and exit with its status.

    Hydra prints composition errors itself (several lines, exit 1); here Hydra re-raises them
    (``HYDRA_FULL_ERROR`` set for this process) so they become one ``error:`` line with exit status 2, like
    every :class:`FrInvarianceError`. Other exceptions propagate with their full traceback (status 1). A
    multirun whose jobs failed exits with 2 (only user errors) or 1 (a bug in some job). ``before`` runs
    first, under the same error handling (``train.py`` resolves ``resume=`` there).
    """
    os.environ.setdefault(_USER_FULL_ERROR, "1" if os.environ.get("HYDRA_FULL_ERROR") == "1" else "0")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    # Our hydra/launcher/{joblib,submitit_slurm}.yaml share their names with the plugins' schemas, which
    # Hydra then checks them against (what we want), with a deprecation warning on every run.
    warnings.filterwarnings("ignore", message=r".*'hydra/launcher/\w+' is validated against ConfigStore schema.*")
    try:
        if before is not None:
            before()
        hydra_main()
    except Exception as error:  # noqa: BLE001 - only user errors and Hydra's composition errors are converted
        converted = user_error_of(error) or config_error_from_hydra(error)
        if converted is None:
            raise
        exit_with_user_error(converted)
    sys.exit(_sweep_exit_status)


# --- tasks and sweeps --------------------------------------------------------------------------------


def run_task(cfg: DictConfig, work: Callable[[DictConfig, Path], dict[str, Any]]) -> dict[str, Any] | None:
    """Body of a Hydra task: threads and output set up, then ``work(cfg, output_dir)``.

    In a single run a user error ends the process with one line (exit 2). In a multirun every failure is
    recorded in the job's folder (``job_status.json``; ``error.txt`` with the message, or the traceback of
    a bug) and the sweep goes on; :class:`SweepSummary` lists the jobs at the end.
    """
    hydra_cfg = HydraConfig.get()
    output_dir = Path(hydra_cfg.runtime.output_dir)
    quiet_known_noise()
    configure_torch_threads(cfg.get("threads", "auto"), parallel_jobs(hydra_cfg))
    if hydra_cfg.mode != RunMode.MULTIRUN:
        try:
            return work(cfg, output_dir)
        except Exception as error:  # noqa: BLE001 - a bug is re-raised with its traceback
            user = user_error_of(error)
            if user is None:
                raise
            exit_with_user_error(user)
    status: dict[str, Any] = {"num": int(hydra_cfg.job.num), "overrides": list(hydra_cfg.overrides.task),
                              "output_dir": str(output_dir)}
    try:
        summary = work(cfg, output_dir)
    except Exception as error:  # noqa: BLE001 - one failed job must not stop the sweep
        cause = user_error_of(error)
        user = cause is not None
        message = one_line(str(cause)) if user else f"{type(error).__name__}: {one_line(str(error))}"
        atomic_write_text(output_dir / JOB_ERROR_FILE, message + "\n" if user else traceback.format_exc())
        atomic_write_text(output_dir / JOB_STATUS_FILE, json.dumps(
            {**status, "status": "failed", "user_error": user, "error": message}, indent=1) + "\n")
        print(f"error: job {status['num']} ({' '.join(status['overrides'])}) failed: {message}",
              file=sys.stderr, flush=True)
        return None
    atomic_write_text(output_dir / JOB_STATUS_FILE, json.dumps({**status, "status": "finished"}, indent=1) + "\n")
    return summary


class SweepSummary(Callback):
    """Hydra callback (``hydra.callbacks``): at the end of a multirun, write ``sweep_summary.json`` in the
    sweep folder listing finished and failed jobs, print it in short, and set the exit status."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        global _sweep_exit_status
        sweep_dir = Path(str(config.hydra.sweep.dir))
        jobs = []
        for path in sorted(sweep_dir.glob(f"*/{JOB_STATUS_FILE}")):
            try:
                jobs.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                jobs.append({"output_dir": str(path.parent), "status": "unknown"})
        jobs.sort(key=lambda job: job.get("num", -1))
        finished = [job for job in jobs if job.get("status") == "finished"]
        failed = [job for job in jobs if job.get("status") != "finished"]
        summary = {"sweep_dir": str(sweep_dir), "finished": finished, "failed": failed}
        atomic_write_text(sweep_dir / SWEEP_SUMMARY_FILE, json.dumps(summary, indent=1) + "\n")
        print(f"sweep: {len(finished)} finished, {len(failed)} failed; summary: {sweep_dir / SWEEP_SUMMARY_FILE}",
              flush=True)
        for job in failed:
            print(f"  failed: job {job.get('num', '?')} ({' '.join(job.get('overrides', []))}): "
                  f"{job.get('error', 'no status')}", flush=True)
        if failed:
            _sweep_exit_status = USER_ERROR_STATUS if all(job.get("user_error") for job in failed) else BUG_STATUS


# --- threads -----------------------------------------------------------------------------------------


def available_cores() -> int:
    """CPU cores this process may use: its affinity mask, capped by a cgroup CPU quota (containers, SLURM)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def parallel_jobs(hydra_cfg: DictConfig | None = None) -> int:
    """How many jobs of this sweep run at once on this machine: ``n_jobs`` of the joblib launcher (``-1`` =
    one per core, joblib's convention), else 1 (a single run, the sequential launcher, a SLURM job)."""
    if hydra_cfg is None or hydra_cfg.mode != RunMode.MULTIRUN:
        return 1
    launcher = hydra_cfg.get("launcher") or {}
    if "JoblibLauncher" not in str(launcher.get("_target_", "")):
        return 1
    n_jobs = int(launcher.get("n_jobs") or 1)
    cores = available_cores()
    if n_jobs < 0:
        n_jobs = max(1, cores + 1 + n_jobs)
    return max(1, n_jobs)


def default_threads(parallel: int = 1) -> int:
    """Torch threads for one of ``parallel`` jobs sharing this machine's cores (at least 1, together never
    more than the cores); ``OMP_NUM_THREADS`` set in the environment caps it."""
    threads = max(1, available_cores() // max(1, parallel))
    omp = os.environ.get("OMP_NUM_THREADS", "")
    if omp.isdigit() and int(omp) > 0:
        threads = min(threads, int(omp))
    return threads


def configure_torch_threads(requested: int | str | None = "auto", parallel: int = 1) -> int:
    """Set torch's intra-op thread count (``threads`` config key: ``auto`` or a number) and return it."""
    import torch

    threads = default_threads(parallel) if requested in (None, "auto") else int(requested)
    torch.set_num_threads(threads)
    return threads


# --- output ------------------------------------------------------------------------------------------

_NOISE = (
    # Lightning suggests TensorBoard / litlogger when only the CSV logger is configured: we chose the loggers.
    (r".*(tensorboardX|litlogger|LitLogger).*", UserWarning),
    # A short epoch (tests, quickstart) has fewer batches than log_every_n_steps; metrics are still logged.
    (r".*smaller than the logging interval.*", UserWarning),
    # Samples/s is what we report; FLOP counting would need a model-specific flops_per_batch.
    (r".*ThroughputMonitor.*flops_per_batch.*", UserWarning),
    # torch's pytree LeafSpec deprecation, raised inside Lightning's own code.
    (r".*LeafSpec.*", Warning),
    # The synthetic data module renders on the device: its loaders need no workers.
    (r".*does not have many workers which may be a bottleneck.*", UserWarning),
    # DDP: validation metrics come from embeddings gathered from every process, logged by rank 0 on purpose.
    (r".*use `self\.log\(.*sync_dist=True.*", UserWarning),
    # DDP: torch deprecates the all_gather that Lightning's own all_gather calls.
    (r".*torch\.distributed\.nn\.functional\.all_gather is deprecated.*", Warning),
)


def quiet_known_noise() -> None:
    """Print each log line once and drop the warnings that are known noise for this product.

    Lightning attaches its own console handler to the ``lightning`` logger and also propagates to the root
    logger that Hydra configured, so every Lightning INFO line was printed twice: its handlers are removed
    (the lines still reach the console and the job's log file through Hydra). Warnings are filtered by
    message and category, each one named in ``_NOISE`` with the reason it is noise.
    """
    import lightning  # noqa: F401 - make sure Lightning's handlers exist before removing them

    root_has_handlers = logging.getLogger().hasHandlers()
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        if root_has_handlers:
            for handler in list(logger.handlers):
                if type(handler) is logging.StreamHandler:
                    logger.removeHandler(handler)
            logger.propagate = True
    for message, category in _NOISE:
        warnings.filterwarnings("ignore", message=message, category=category)
    tips = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropTips) for f in tips.filters):
        tips.addFilter(_DropTips())


class _DropTips(logging.Filter):
    """Drops Lightning's advertising tips ("💡 Tip: ... install litlogger"), which every run printed."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip:" not in str(record.msg)
