"""The house rules of the package, read from its imports (tools/layers.py): no import loop, no
module importing another module's private name, the library apart from the course tooling,
and docs/design.md's layer table current."""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import layers  # noqa: E402  (tools/layers.py)


def test_the_import_graph_has_no_loop():
    graph = layers.import_graph()
    assert "tinylab.distill.loop" in graph and "tinylab.course.runner" in graph
    assert layers.find_cycle(graph) is None, " -> ".join(layers.find_cycle(graph))


def test_a_loop_is_found_when_there_is_one():
    assert layers.find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert layers.find_cycle({"p": {"p.x"}, "p.x": {"p"}}) is None   # a package and its part


def test_no_module_imports_another_modules_private_name():
    assert layers.private_imports() == []


def test_the_library_never_imports_the_course_tooling():
    graph = layers.import_graph()
    library = [m for m in graph if not m.startswith(("tinylab.course", "tinylab.exercises"))
               and m not in ("tinylab", "tinylab.cli", "tinylab.__main__")]
    leaks = {m: sorted(t for t in graph[m] if t.startswith("tinylab.course")) for m in library}
    assert not {m: t for m, t in leaks.items() if t}


def test_every_module_sits_above_what_it_imports():
    graph = layers.import_graph()
    level = layers.layers(graph)
    for module, targets in graph.items():
        for target in targets:
            if not (target.startswith(module + ".") or module.startswith(target + ".")):
                assert level[module] > level[target], (module, target)


def test_design_md_layer_table_is_current():
    assert not layers.sync_design(check=True), "run `make sync`"
