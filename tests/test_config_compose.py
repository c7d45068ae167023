"""Config hygiene (DESIGN §2): every YAML file of every group composes with the primary config that uses the
group (``train.yaml`` or ``evaluate.yaml``), and every value resolves, so no option can rot unnoticed."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from tests.entrypoints import REPO

# our hydra/launcher files share the plugins' schema names: Hydra checks them against it, and says so
pytestmark = pytest.mark.filterwarnings("ignore:.*validated against ConfigStore schema")

CONF = REPO / "conf"
PRIMARY_GROUPS = {
    "train": ("model", "head", "attr", "aug", "data", "optim", "scheduler", "energy", "probe", "invariance",
              "trainer", "logger", "experiment", "hydra/launcher"),
    "evaluate": ("model", "energy", "probe", "analysis", "hydra/launcher"),
}


def group_options(group: str) -> list[str]:
    return sorted(path.stem for path in (CONF / group).glob("*.yaml"))


def all_groups() -> set[str]:
    return {str(path.parent.relative_to(CONF)) for path in CONF.rglob("*.yaml") if path.parent != CONF}


def test_every_group_is_used_by_a_primary_config():
    used = {group for groups in PRIMARY_GROUPS.values() for group in groups}
    assert all_groups() <= used, f"groups no primary config composes: {sorted(all_groups() - used)}"


CASES = [(primary, group, option) for primary, groups in PRIMARY_GROUPS.items() for group in groups
         for option in group_options(group)]


@pytest.mark.parametrize(("primary", "group", "option"), CASES, ids=[f"{p}:{g}={o}" for p, g, o in CASES])
def test_every_option_composes_and_resolves(primary, group, option, tmp_path):
    raw = OmegaConf.load(CONF / group / f"{option}.yaml")
    mandatory = [f"{group}.{key}=/set/on/the/command/line" for key in raw if OmegaConf.is_missing(raw, key)]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(primary, overrides=[f"{group}={option}", *mandatory, f"hydra.run.dir={tmp_path}"],
                      return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)  # e.g. ${hydra.sweep.dir}
        task = OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])
        container = OmegaConf.to_container(task, resolve=True)
    assert isinstance(container, dict) and container
    assert isinstance(launcher, dict) and "_target_" in launcher


def test_compose_covers_every_yaml_file():
    files = {path.relative_to(CONF).with_suffix("").as_posix() for path in CONF.rglob("*.yaml") if path.parent != CONF}
    covered = {f"{group}/{option}" for _, group, option in CASES}
    assert files == covered
    assert Path(CONF / "train.yaml").is_file() and Path(CONF / "evaluate.yaml").is_file()


def _leaves(node: dict, prefix: str = "") -> dict[str, object]:
    """``{"a.b.c": value}`` of every leaf of a nested dict."""
    items: dict[str, object] = {}
    for key, value in node.items():
        items.update(_leaves(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return items


@pytest.mark.parametrize("option", group_options("experiment"))
def test_an_experiment_overrides_every_value_it_sets(option):
    """An experiment's values win over ``train.yaml``'s own (its top-level ``freeze_bn`` or ``hydra.run.dir``
    must not be silently replaced by the primary config's defaults)."""
    raw = OmegaConf.to_container(OmegaConf.load(CONF / "experiment" / f"{option}.yaml"))
    raw.pop("defaults", None)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={option}"], return_hydra_config=True)
    composed = _leaves(OmegaConf.to_container(cfg, resolve=False))
    for key, value in _leaves(raw).items():
        assert composed[key] == value, key
