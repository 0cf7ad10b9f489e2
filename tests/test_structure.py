"""The package's structure: imports among expt's modules run one way, at module and at function level."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

SRC = ROOT / "src"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, modules: set[str]) -> set[str]:
    """The project modules ``path`` imports anywhere in its body (functions included)."""
    found: set[str] = set()
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    found.discard(module_name(path))
    return found


def graph() -> dict[str, set[str]]:
    paths = [p for p in SRC.rglob("*.py") if "egg-info" not in str(p)]
    modules = {module_name(p) for p in paths}
    return {module_name(p): imports(p, modules) for p in paths}


def cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the list of modules around it, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_the_walker_finds_a_planted_cycle():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) is None
    edges = graph()
    assert "expt.config" in edges["expt.build"] and "expt.trainer" in edges["expt.run"]  # it reads real imports


def test_no_module_of_the_package_imports_one_that_imports_it_back():
    edges = graph()
    # the package's __init__ re-exports lazily for `import expt`; its submodules import each other, not it
    edges.pop("expt", None)
    for targets in edges.values():
        targets.discard("expt")
    assert cycle(edges) is None, " -> ".join(cycle(edges) or [])


# The layers the README's design section states, lowest first: a module may import its own layer's
# modules and lower layers', never a higher layer's.
LAYERS = [
    ["expt.errors", "expt.values", "expt.overrides", "expt.schedule", "expt.progress"],
    ["expt.instantiate"],
    ["expt.dry_run"],
    ["expt.config", "expt.presets", "expt.output_dir"],
    ["expt.optim", "expt.data", "expt.standard_datasets", "expt.dataset_formats", "expt.models",
     "expt.init", "expt.preprocess", "expt.augment", "expt.regularization", "expt.averaging", "expt.loss"],
    ["expt.capture"],
    ["expt.build"],
    ["expt.predict"],
    ["expt.checks"],
    ["expt.trainer.record", "expt.trainer.engine"],
    ["expt.trainer.loop", "expt.trainer.vmap", "expt.trainer"],
    ["expt.population", "expt.run", "expt.evaluate"],
    ["expt.sanity"],
    ["expt.__main__"],
]


def test_imports_follow_the_layers_the_readme_states():
    edges = graph()
    layer = {module: i for i, modules in enumerate(LAYERS) for module in modules}
    assert set(layer) <= set(edges), set(layer) - set(edges)  # every named module exists
    upward = [f"{m} (layer {layer[m]}) imports {t} (layer {layer[t]})" for m, targets in edges.items() if m in layer
              for t in targets if t in layer and layer[t] > layer[m]]
    assert not upward, upward
    # the README states this order, lowest last: errors <- config <- ... <- capture <- build <- predict <- checks <- trainer ...
    readme = (ROOT / "README.md").read_text()
    stated = readme.split("Imports run one way", 1)[1].split("\n\n", 1)[0]
    names = ["`errors`", "`config`", "`capture`", "`build`", "`predict`", "`checks`", "`trainer`", "`run`", "`evaluate`",
             "`sanity`", "`__main__`"]
    positions = [stated.find(n) for n in names]
    assert -1 not in positions and positions == sorted(positions), dict(zip(names, positions))


def test_the_library_never_imports_the_hydra_plugins():
    """The plugins are adapters over expt (the sweeper over expt.search, the launcher over expt.population).
    expt.__main__ imported the sweeper's error classes for its jobs' errors; those are expt's own now. The command
    line itself (expt.__main__, the application) may read the sweeper's and the launcher's settings, to check them
    before Hydra runs."""
    edges = graph()
    upward = sorted(f"{m} imports {t}" for m, targets in edges.items() if m.startswith("expt") and m != "expt.__main__"
                    for t in targets if t.startswith("hydra_plugins"))
    assert not upward, upward
    assert {t for t in edges["expt.__main__"] if t.startswith("hydra_plugins")} == {
        "hydra_plugins.expt_sweeper.config", "hydra_plugins.expt_population.population_launcher"}
