"""The population launcher's composition: a job's config read from the files once a shape of overrides
(hydra_plugins.expt_population._compose) is the config Hydra composes for it, key for key; its task config,
HydraConfig's view of it and the text of both are what Hydra's ``run_job`` makes and writes."""

import copy
from pathlib import Path

import pytest
import yaml
from hydra import initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict, read_write

import expt.config  # registers the schema with Hydra's ConfigStore
from expt.config import to_yaml
from hydra_plugins.expt_population._compose import Composer
from hydra_plugins.expt_population._impl import _hydra_view, _without_hydra

PRIMARY = ["hydra/sweeper=coarse_to_fine", "hydra/launcher=population", "hydra.sweep.dir=/tmp/expt-compose-test",
           "hydra.job.config.override_dirname.exclude_keys=[trainer.seed]", "trainer.epochs=3"]


@pytest.fixture(scope="module")
def hydra_loader():
    with initialize_config_module(config_module="expt.conf", version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        yield loader, loader.load_configuration("config", PRIMARY, RunMode.MULTIRUN)


def trial(lr, l2="1e-4", epochs=2, label=None, seed=0, more=()):
    """The overrides a coarse-to-fine round hands a job: values, and what the sweep tells the trial."""
    return [f"trainer.epochs={epochs}", f"optimizer.lr={lr}", f"regularization.l2={l2}", f"trainer.seed={seed}", *more,
            "hydra.job.env_set.EXPT_SWEEP_JOB=1",
            f"hydra.job.env_set.EXPT_SWEEP_LABEL='{label or f'r1 lr={lr} l2={l2}'}'"]


def composed(loader, master, overrides):
    return OmegaConf.to_yaml(loader.load_sweep_config(master, overrides))


def nodes(config):
    """Each node of ``config`` by its path, with what OmegaConf keeps beside the text: its class, its value (a leaf's),
    its metadata (reference and object types, optional, key, flags) and whether its parent is the node above it."""
    found = {}

    def walk(node, path, parent):
        meta = node._metadata
        value = None if isinstance(node, (DictConfig, ListConfig)) else node._value()
        found[path] = (type(node).__name__, repr(value), meta.ref_type, meta.object_type, meta.optional, meta.key,
                       dict(meta.flags or {}), node._get_parent() is parent)
        if isinstance(node, (DictConfig, ListConfig)) and not (node._is_none() or node._is_missing()
                                                               or node._is_interpolation()):
            keys = node.keys() if isinstance(node, DictConfig) else range(len(node))
            for key in keys:
                walk(node._get_node(key), f"{path}.{key}", node)

    walk(config, "", None)
    return found


JOBS = [
    trial(0.1),
    trial(0.001, l2="3.5e-6", epochs=5, label="r2-j013 lr=1e-3, l2: 3.5e-6", seed=7),  # values of every type
    trial(1e-5, more=["sanity.before_train=false", "data.subset=null"]),  # another shape: composed, then a base
    trial(0.02, l2="0.5", more=["sanity.before_train=true", "data.subset=100"]),
    trial(0.3, more=["optimizer=sgd"]),  # a group choice: another shape
    trial(0.03, more=["optimizer=sgd"]),
    trial(0.3, more=["optimizer={lr:0.2}"]),  # a dict merges: matched exactly, never derived
    trial(0.3, more=["activation=gelu"]),
    trial(0.4, more=["activation=gelu"]),
]


def test_every_job_is_the_config_hydra_composes(hydra_loader):
    loader, master = hydra_loader
    composer = Composer(loader, master)
    for overrides in JOBS:
        mine = composer(overrides)
        assert OmegaConf.to_yaml(mine) == composed(loader, master, overrides), overrides
        assert nodes(mine) == nodes(loader.load_sweep_config(master, overrides)), overrides
        assert OmegaConf.is_struct(mine) and not OmegaConf.is_readonly(mine.hydra)
    # read from the files: the first of each shape and the dict merges; set from a base: the rest
    assert composer.derived == 4
    assert list(mine.hydra.overrides.task)[-1] == "activation=gelu"
    assert mine.hydra.job.override_dirname == "activation=gelu,optimizer.lr=0.4,regularization.l2=1e-4,trainer.epochs=2"
    assert mine.hydra.job.env_set.EXPT_SWEEP_LABEL == "r1 lr=0.4 l2=1e-4"
    assert mine.optimizer.lr == 0.4 and mine.trainer.epochs == 2 and mine.hydra.runtime.choices.activation == "gelu"


def test_a_base_is_not_changed_by_the_jobs_set_from_it(hydra_loader):
    loader, master = hydra_loader
    composer = Composer(loader, master)
    first = composer(trial(0.1))
    composer(trial(0.2))
    assert first.optimizer.lr == 0.1 and composer(trial(0.1)).optimizer.lr == 0.1


def test_one_key_set_twice_is_composed_in_full(hydra_loader):
    loader, master = hydra_loader
    composer = Composer(loader, master)
    for lr in (0.1, 0.2):
        overrides = trial(lr, more=[f"optimizer.lr={lr / 2}"])  # the later value wins, as Hydra applies them
        assert OmegaConf.to_yaml(composer(overrides)) == composed(loader, master, overrides)
    assert composer.derived == 0


def test_a_config_pickle_cannot_take_is_kept_as_none_so_its_shape_is_composed_in_full():
    """A shape's first config is kept pickled; one holding what pickle cannot take (a schema class defined inside a
    function) is kept as None, and the composer then reads that shape's every job from the files."""
    import dataclasses
    import pickle

    from hydra_plugins.expt_population._compose import _pickled

    @dataclasses.dataclass
    class Local:
        lr: float = 0.1

    assert _pickled(OmegaConf.structured(Local)) is None
    plain = OmegaConf.create({"optimizer": {"lr": 0.1}})
    assert nodes(pickle.loads(_pickled(plain))) == nodes(plain)


def test_a_value_hydra_refuses_gets_hydras_error(hydra_loader):
    loader, master = hydra_loader
    composer = Composer(loader, master)
    composer(trial(0.1))
    bad = trial(0.1, epochs="many")
    with pytest.raises(Exception) as hydra_error:
        loader.load_sweep_config(master, bad)
    with pytest.raises(type(hydra_error.value)) as mine:
        composer(bad)
    assert str(mine.value) == str(hydra_error.value) and composer.derived == 0


# ----------------------------------------------------------------------------- the config as text, and the task's copy
PRESETS = sorted(p.stem for p in (Path(__file__).parents[1] / "conf" / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("overrides", [[]] + [[f"experiment={p}"] for p in PRESETS]
                         + [["hydra/launcher=joblib", "optimizer=sgd", "augmentation=[translate,hflip]"]])
def test_the_config_is_written_as_omegaconf_writes_it(hydra_loader, overrides):
    """expt.config.to_yaml (libyaml's emitter) gives OmegaConf.to_yaml's text for every preset's config, resolved or
    not, and for its Hydra config, whose sweeper holds an enum."""
    loader, master = hydra_loader
    config = loader.load_sweep_config(master, overrides)
    task = _without_hydra(config)
    for node, resolve in ((task, False), (task, True), (config.hydra, False), (config, False)):
        assert to_yaml(node, resolve=resolve) == OmegaConf.to_yaml(node, resolve=resolve)


def test_strings_yaml_would_read_as_something_else_keep_their_quotes():
    tricky = {"bool": "true", "yes": "yes", "float": "1e-3", "int": "0x10", "null": "null", "tilde": "~", "empty": "",
              "unicode": "héllo ✓", "lines": "two\nlines", "colon": "a: b", "dash": "- item", "hash": "#note",
              "space": " leading", "tab": "a\tb", "long": "word " * 60, "nothing": None, "small": 1.5e-7,
              "inf": float("inf"), "list": [], "dict": {}, "nested": {"lr": [1e-3, "2e-3", True, "True"]},
              "emoji": "run 😀", "astral": "\U00010000", "backslash": "C:\\runs", "😀": 1}
    node = OmegaConf.create(tricky)
    text = to_yaml(node)
    assert text == OmegaConf.to_yaml(node) and OmegaConf.create(text) == node
    # libyaml escapes these where PyYAML's emitter does not (which reads NEL back as a space): PyYAML's text
    nel = OmegaConf.create({"nel": "a\x85b", "emoji": "😀"})
    assert to_yaml(nel) == OmegaConf.to_yaml(nel)
    assert expt.config._DUMPER is not None or not yaml.__with_libyaml__  # the fast emitter where PyYAML has it


def test_the_task_config_is_the_copy_run_job_makes_less_hydra(hydra_loader):
    loader, master = hydra_loader
    config = loader.load_sweep_config(master, trial(0.1))
    expected = copy.deepcopy(config)
    with read_write(expected), open_dict(expected):
        del expected["hydra"]
    task = _without_hydra(config)
    assert OmegaConf.to_yaml(task) == OmegaConf.to_yaml(expected) and "hydra" not in task and "hydra" in config
    assert task._metadata == expected._metadata and OmegaConf.is_struct(task) == OmegaConf.is_struct(expected)
    assert all(task._get_node(key)._get_parent() is task for key in task)
    assert nodes(task) == nodes(expected)
    task.optimizer.lr = 0.5  # a copy: the job's config keeps its value
    assert config.optimizer.lr == 0.1 and config.hydra.job.env_set.EXPT_SWEEP_JOB == "1"


def test_a_task_config_pickle_cannot_take_is_copied_less_hydra_all_the_same():
    """A config holding a schema class defined inside a function, which pickle cannot take, is deep-copied instead."""
    import dataclasses

    @dataclasses.dataclass
    class Local:
        lr: float = 0.1

    config = OmegaConf.create({"optimizer": OmegaConf.structured(Local), "hydra": {"job": {"num": 3}}})
    task = _without_hydra(config)
    assert "hydra" not in task and "hydra" in config and OmegaConf.get_type(task, "optimizer") is Local
    assert nodes(task) == {path: node for path, node in nodes(config).items() if not path.startswith(".hydra")}


def test_the_hydra_view_is_the_one_hydra_makes_holding_the_jobs_own_node(hydra_loader):
    loader, master = hydra_loader
    config = loader.load_sweep_config(master, trial(0.1))
    with open_dict(config):
        config.hydra.job.num, config.hydra.job.id = 4, "4"
        config.hydra.runtime.output_dir = "/tmp/expt-compose-test/4"
    saved = HydraConfig.instance().cfg
    try:
        HydraConfig.instance().set_config(copy.deepcopy(config))
        hydras = HydraConfig.instance().cfg
    finally:
        HydraConfig.instance().cfg = saved
    ours = _hydra_view(config)
    for resolve in (False, True):  # interpolations resolve through the job's config, as in Hydra's
        assert OmegaConf.to_yaml(ours, resolve=resolve) == OmegaConf.to_yaml(hydras, resolve=resolve)
    assert list(ours) == list(hydras) == ["hydra"] and OmegaConf.get_type(ours, "hydra") is OmegaConf.get_type(
        hydras, "hydra")
    assert OmegaConf.is_readonly(ours.hydra) and OmegaConf.is_readonly(config.hydra)  # as set_config leaves both
    assert ours._get_node("hydra") is config._get_node("hydra") and ours.hydra._get_parent() is config
    assert ours.hydra.job_logging.handlers.file.filename == "/tmp/expt-compose-test/4/expt.log"
    with read_write(config.hydra.runtime):
        config.hydra.runtime.output_dir = "/elsewhere"  # one node: the view sees what the launcher sets
    assert ours.hydra.runtime.output_dir == "/elsewhere"
