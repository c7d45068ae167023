"""Resume is continuation (DESIGN §9): a resumed run trains on in its own run directory.

``train.py`` rewrites its command line before Hydra starts, so Hydra's run directory *is* the run being
continued (its log, its CSVs, its W&B run id):

- ``resume=true`` without ``hydra.run.dir``: the most recent run of the same ``run_name`` (the same
  ``attr``/``aug.strength``/``model``) under the configured run-directory pattern that has
  ``checkpoints/last.ckpt``;
- ``resume=<run dir>``: that run directory;
- ``ckpt_path=<run dir>/checkpoints/<file>.ckpt`` without ``hydra.run.dir``: that checkpoint's run directory.

In every case ``hydra.run.dir=<run dir>`` is appended to ``sys.argv`` (and ``resume=true`` for a path), and
:func:`fr_invariance.training.run.run_training` continues from the run directory's ``last.ckpt``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from fr_invariance.errors import ConfigurationError

CONFIG_DIR = Path(__file__).resolve().parents[2] / "conf"
CHECKPOINT = Path("checkpoints") / "last.ckpt"
_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off", "null", "none", ""}


def _value(overrides: list[str], key: str) -> str | None:
    """The last command-line value of ``key`` (``key=``, ``+key=`` or ``++key=``), or None."""
    value = None
    for override in overrides:
        name, sep, text = override.lstrip("+").partition("=")
        if sep and name == key:
            value = text.strip().strip("'\"")
    return value


def run_dir_pattern(overrides: list[str], config_name: str = "train") -> tuple[str, Path]:
    """``(run_name, glob pattern)`` of this config's run directories: ``hydra.run.dir`` with every
    ``${now:...}`` replaced by ``*`` and the other interpolations resolved from the composed config."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    kept = [o for o in overrides if not o.lstrip("+").startswith(("resume=", "hydra.run.dir="))]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name, overrides=kept, return_hydra_config=True)
    raw = str(OmegaConf.to_container(cfg.hydra.run, resolve=False)["dir"])
    pattern = re.sub(r"\$\{now:[^}]*\}", "*", raw)
    pattern = re.sub(r"\$\{([^}:]+)\}", lambda m: str(OmegaConf.select(cfg, m.group(1))), pattern)
    return str(cfg.run_name), Path(pattern)


def latest_run(pattern: Path) -> Path | None:
    """The run directory matching ``pattern`` whose ``last.ckpt`` was written last, or None."""
    root = Path("/") if pattern.is_absolute() else Path(".")
    relative = str(pattern.relative_to(root)) if pattern.is_absolute() else str(pattern)
    candidates = [path for path in root.glob(relative) if (path / CHECKPOINT).is_file()]
    return max(candidates, key=lambda path: (path / CHECKPOINT).stat().st_mtime) if candidates else None


def resolve_resume_argv(argv: list[str] | None = None) -> list[str]:
    """Rewrite ``argv`` (default ``sys.argv``, changed in place) so that a resumed run's Hydra run directory
    is the run being continued; see the module doc. Returns the argument list."""
    argv = sys.argv if argv is None else argv
    overrides = [arg for arg in argv[1:] if not arg.startswith("-")]
    if any(arg in ("-m", "--multirun") for arg in argv[1:]) or _value(overrides, "hydra.run.dir") is not None:
        return argv  # a sweep resumes in its hydra.sweep.dir; an explicit run dir is used as given
    resume = _value(overrides, "resume")
    checkpoint = _value(overrides, "ckpt_path")
    run_dir: Path | None = None
    if resume is not None and resume.lower() not in _TRUE | _FALSE:
        run_dir = Path(resume)
        if not (run_dir / CHECKPOINT).is_file():
            raise ConfigurationError(f"resume={resume}: no {CHECKPOINT} in that folder; resume takes true, false or "
                                     "the run directory of an interrupted run.")
        argv.append("resume=true")
    elif resume is not None and resume.lower() in _TRUE:
        run_name, pattern = run_dir_pattern(overrides)
        run_dir = latest_run(pattern)
        if run_dir is None:
            raise ConfigurationError(f"resume=true: no earlier run of {run_name} with {CHECKPOINT} matches {pattern}; "
                                     "pass resume=<run dir> or hydra.run.dir=<run dir>.")
    elif checkpoint and Path(checkpoint).is_file() and Path(checkpoint).parent.name == "checkpoints":
        run_dir = Path(checkpoint).parent.parent
    if run_dir is not None:
        argv.append(f"hydra.run.dir={run_dir.resolve()}")
    return argv
