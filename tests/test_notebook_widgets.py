"""Every chapter with widgets runs top to bottom, and then every widget still redraws its plot.

A learner runs a whole chapter and only then plays with its sliders. Chapter 04 once broke there:
a late cell's loop rebound the global ``out`` that the slider's callback drew into, so the slider
stopped redrawing (the error showed only in JupyterLab's log console). nbval cannot see that: it
runs the cells and never touches a widget.

This test runs each chapter that uses ipywidgets in a real kernel (nbclient, ``MINIKV_IMPL=solutions``,
the same way nbval runs the others; ``make test`` gives each chapter to one of the two, so no notebook
runs twice). Then, in that same kernel, it moves every live value widget (slider, dropdown, checkbox,
play button...) to another valid value, as a learner would, and checks that

* the redraw raised nothing (the kernel-side probe catches what the widget's callbacks raise), and
* the Output widget shown with it (same box) changed and holds no error.

nbclient plays the front end's part for Output widgets (it collects what they display), and the
test plays the browser's part for ``jslink`` (moving a linked widget moves its partner).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import nbclient
import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "chapters").glob("*.ipynb"))
# The chapters this test runs; the Makefile's nbval run takes the others (same rule there: grep -L ipywidgets).
WIDGET_CHAPTERS = [p for p in CHAPTERS if "ipywidgets" in p.read_text()]
CELL_TIMEOUT_S = 300

# Kernel-side helpers, defined once the chapter has run. Names start with _minikv_probe so that
# they cannot clash with a chapter's own.
PROBE = r'''
import json as _minikv_probe_json
import ipywidgets as _minikv_probe_w
from ipywidgets.widgets.widget import _instances as _minikv_probe_instances


def _minikv_probe_live():
    return [w for w in list(_minikv_probe_instances.values()) if getattr(w, "comm", None) is not None]


def _minikv_probe_outputs_near(widget):
    """The Output widgets in the outermost box that shows `widget` (where its plot is drawn)."""
    parent = {}
    for box in _minikv_probe_live():
        if isinstance(box, _minikv_probe_w.Box):
            for child in box.children:
                parent[child.model_id] = box
    top = widget
    while top.model_id in parent:
        top = parent[top.model_id]
    found, todo = [], [top]
    while todo:
        w = todo.pop(0)
        if isinstance(w, _minikv_probe_w.Output):
            found.append(w.model_id)
        if isinstance(w, _minikv_probe_w.Box):
            todo.extend(w.children)
    return found


def _minikv_probe_list():
    rows = []
    for w in _minikv_probe_live():
        if isinstance(w, _minikv_probe_w.ValueWidget):
            rows.append({"id": w.model_id, "kind": type(w).__name__, "description": getattr(w, "description", ""),
                         "value": repr(w.value), "outputs": _minikv_probe_outputs_near(w)})
    print(_minikv_probe_json.dumps(rows))


def _minikv_probe_other_value(w):
    """(trait, another valid value) for widget w, as a learner's click or key press would give."""
    index = getattr(w, "index", None)
    if hasattr(w, "options") and isinstance(index, int):          # Dropdown, SelectionSlider, ToggleButtons...
        if len(w.options) < 2:
            raise AssertionError(f"{type(w).__name__} {w.description!r} has fewer than 2 options: nothing to move to")
        return "index", (index + 1) % len(w.options)
    if isinstance(w.value, bool):                                  # Checkbox, ToggleButton
        return "value", not w.value
    if isinstance(w.value, (int, float)) and hasattr(w, "max"):  # IntSlider, FloatSlider, Play, BoundedIntText...
        step = getattr(w, "step", None) or 1
        return "value", w.value + step if w.value + step <= w.max else w.value - step
    if isinstance(w.value, tuple) and hasattr(w, "max"):         # IntRangeSlider, FloatRangeSlider
        low, high = w.value
        step = getattr(w, "step", None) or 1
        return "value", (low, high + step) if high + step <= w.max else (low - step, high)
    if isinstance(w.value, str):                                   # Text, Textarea
        return "value", w.value + " again"
    raise AssertionError(f"the widget test does not know how to move a {type(w).__name__}; "
                         "teach _minikv_probe_other_value in tests/test_notebook_widgets.py")


def _minikv_probe_move(model_id):
    """Move one widget; print what happened, including an error raised by its callbacks."""
    from ipywidgets.widgets.widget_link import DirectionalLink, Link

    w = _minikv_probe_instances[model_id]
    before = repr(w.value)
    trait, new = _minikv_probe_other_value(w)
    try:
        setattr(w, trait, new)                    # the widget's observers (its redraw) run here
        # What the browser does for jslink/jsdlink: the partner follows (and its own observers run).
        for link in _minikv_probe_live():
            if isinstance(link, Link):
                (src, src_name), (dst, dst_name) = link.source, link.target
                if src is w and src_name == "value":
                    setattr(dst, dst_name, w.value)
                elif dst is w and dst_name == "value" and not isinstance(link, DirectionalLink):
                    setattr(src, src_name, w.value)
    except Exception as exc:
        print(_minikv_probe_json.dumps({"before": before, "after": repr(w.value),
                                        "error": f"{type(exc).__name__}: {exc}"}))
        return
    print(_minikv_probe_json.dumps({"before": before, "after": repr(w.value)}))
'''


@contextmanager
def chapter_kernel(nb: nbformat.NotebookNode) -> Iterator[nbclient.NotebookClient]:
    """An nbclient client whose kernel runs this interpreter with the solutions; shut down on exit."""
    import ipykernel.kernelspec
    from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
    from jupyter_client.manager import KernelManager

    class ThisPython(KernelSpecManager):
        # Like nbval --nbval-current-env: the kernel is this venv's Python, whatever kernelspecs the user has.
        def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
            return KernelSpec(resource_dir=ipykernel.kernelspec.RESOURCES, **ipykernel.kernelspec.get_kernel_dict())

    env = dict(os.environ, MINIKV_IMPL="solutions",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    km = KernelManager(kernel_name="python3", kernel_spec_manager=ThisPython())
    client = nbclient.NotebookClient(nb, km=km, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                                     resources={"metadata": {"path": str(ROOT / "chapters")}})
    try:
        with client.setup_kernel(env=env):
            yield client
    finally:
        if client.kc is not None:
            client.kc.stop_channels()
        if km.has_kernel:
            km.shutdown_kernel(now=True)
        km.cleanup_resources()


def run_code(client: nbclient.NotebookClient, source: str) -> nbformat.NotebookNode:
    """Run `source` as one more cell of the notebook (so nbclient routes its widget traffic) and return it."""
    cell = nbformat.v4.new_code_cell(source)
    client.nb.cells.append(cell)
    client.execute_cell(cell, len(client.nb.cells) - 1)
    return cell


def printed_json(cell: nbformat.NotebookNode) -> object:
    text = "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream" and o.name == "stdout")
    return json.loads(text.strip().splitlines()[-1])


def errors_in(outputs: list) -> list[str]:
    return [f"{o.get('ename')}: {o.get('evalue')}" for o in outputs if o.get("output_type") == "error"]


def test_there_are_chapters_with_widgets() -> None:
    # An empty list would silently run nothing below (chapters 01, 02 and 04 have sliders).
    assert WIDGET_CHAPTERS, "no chapter imports ipywidgets"


@pytest.mark.slow
@pytest.mark.parametrize("path", WIDGET_CHAPTERS, ids=lambda p: p.stem)
def test_every_widget_redraws_after_the_whole_chapter_ran(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    with chapter_kernel(nb) as client:
        for index, cell in enumerate(list(nb.cells)):
            if cell.cell_type == "code":
                client.execute_cell(cell, index)          # a cell that raises fails here, as under nbval
        run_code(client, PROBE)
        found = printed_json(run_code(client, "_minikv_probe_list()"))
        assert found, f"{path.name} imports ipywidgets but shows no value widget"
        problems = []
        for w in found:
            name = f"{path.name}: {w['kind']} {w['description']!r}"
            if not w["outputs"]:
                problems.append(f"{name} is not shown in a box with an Output to draw into")
                continue
            state = client.widget_state
            before = {o: json.dumps(state.get(o, {}).get("outputs") or []) for o in w["outputs"]}
            moved = printed_json(run_code(client, f"_minikv_probe_move({w['id']!r})"))
            what = f"{name} moved from {moved['before']} to {moved['after']}"
            if "error" in moved:
                problems.append(f"{what}: its callback raised {moved['error']}")
                continue
            after = {o: state.get(o, {}).get("outputs") or [] for o in w["outputs"]}
            for o, outs in after.items():
                if errors_in(outs):
                    problems.append(f"{what}: its Output shows an error: {errors_in(outs)}")
            if all(json.dumps(after[o]) == before[o] for o in w["outputs"]):
                problems.append(f"{what}, but the Output below it did not change (nothing was redrawn)")
    assert not problems, "\n".join(problems)

