"""Every chapter as a learner meets it: JupyterLab in headless Chromium, Run All, then every widget moved.

``make test-browser`` runs this file by name (Chromium from Debian's packages, Playwright from PyPI,
never a browser that Playwright downloads). It is not called ``test_*.py`` so that ``make test`` and a
plain ``pytest`` do not collect it: it needs a browser and takes minutes (nothing is skipped: the file
is simply not part of those runs). The test starts its own JupyterLab on 127.0.0.1, on a free port, with a
random token and throw-away settings, and stops it (and its kernels) at the end. For each chapter it

1. opens the notebook and clicks Run > Run All Cells, then waits for every cell to run and the kernel
   to go idle;
2. fails on any cell output that is an error, and on any error that reached JupyterLab's log
   console (errors from widget callbacks show only there);
3. moves every widget the way a learner would (arrow keys on a slider's handle, a click on a
   checkbox, a choice in a dropdown, play then pause on a play button) and fails unless the plot
   below it (the images in that cell's output) changes;
4. saves screenshots under build/browser/ (after Run All, each widget before and after it moved,
   the log console).

Chapter 04 once passed nbval and still broke here: a late cell rebound the global ``out`` that its
slider drew into, so the slider stopped redrawing once the notebook had run to the end.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = Path(os.environ.get("MINIKV_BROWSER_NOTEBOOKS", ROOT / "chapters"))   # another folder: to try the test itself
CHAPTERS = sorted(NOTEBOOKS.glob("*.ipynb"))
SHOTS = ROOT / "build" / "browser"
CHROMIUM = os.environ.get("MINIKV_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
RUN_ALL_TIMEOUT_S = float(os.environ.get("MINIKV_BROWSER_RUN_TIMEOUT", "600"))
REDRAW_TIMEOUT_S = 60.0

# Widget controls as ipywidgets 8 draws them, and how a learner moves each one.
CONTROLS = {
    "slider": ".widget-slider .noUi-handle",
    "checkbox": ".widget-checkbox input[type=checkbox]",
    "dropdown": ".widget-dropdown select",
    "play": ".widget-play button:first-child",
}
# The drawings in a cell's widget outputs (Output widgets), whose change proves a redraw.
WIDGET_IMAGES = ".jupyter-widgets-output-area img, .widget-output img"


@dataclass
class Lab:
    url: str
    token: str


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _api(lab: Lab, path: str, method: str = "GET", timeout: float = 10.0) -> object:
    req = urllib.request.Request(f"{lab.url}{path}", method=method, data=b"" if method == "POST" else None,
                                 headers={"Authorization": f"token {lab.token}"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        body = resp.read()
    return json.loads(body) if body else None


def _write_settings(settings: Path) -> None:
    # Render every cell (no windowing: off-screen cells stay in the page), never save (the committed
    # notebooks have no outputs and must keep none), and ask no one for news.
    files = {"notebook-extension/tracker": {"windowingMode": "none"},
             "docmanager-extension/plugin": {"autosave": False},
             "apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False}}
    for name, values in files.items():
        path = settings / "@jupyterlab" / f"{name}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """JupyterLab on a loopback port, serving chapters/ with the solutions; shut down with its kernels."""
    home = tmp_path_factory.mktemp("jupyterlab")
    _write_settings(home / "settings")
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ, MINIKV_IMPL="solutions",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
               JUPYTERLAB_SETTINGS_DIR=str(home / "settings"), JUPYTERLAB_WORKSPACES_DIR=str(home / "workspaces"),
               JUPYTER_RUNTIME_DIR=str(home / "runtime"), JUPYTER_CONFIG_DIR=str(home / "config"),
               JUPYTER_DATA_DIR=str(home / "data"))   # no user kernelspec in the way: python3 is this venv's
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
           f"--ServerApp.root_dir={NOTEBOOKS}", "--LabApp.expose_app_in_browser=True"]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    log_path = home / "server.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen(cmd, env=env, cwd=NOTEBOOKS, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    here = Lab(f"http://127.0.0.1:{port}", token)
    try:
        deadline = time.monotonic() + 90
        while True:
            if server.poll() is not None:
                pytest.fail(f"JupyterLab exited with {server.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                _api(here, "/api/status", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not answer on {here.url} in 90 s:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.5)
        yield here
    finally:
        _stop(server, here)


def _stop(server: subprocess.Popen, here: Lab) -> None:
    """Shut the server down through its API (it stops its kernels), then make sure nothing it started is left."""
    import psutil

    try:
        children = psutil.Process(server.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    try:
        _api(here, "/api/shutdown", method="POST")
    except OSError:
        pass
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGTERM)   # the group this fixture created (start_new_session)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
    for child in children:                       # kernels run in sessions of their own
        try:
            child.terminate()
            child.wait(timeout=10)
        except psutil.NoSuchProcess:
            pass
        except psutil.TimeoutExpired:
            child.kill()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    try:
        from playwright import sync_api
    except ImportError:
        pytest.fail("playwright is not installed: make test-browser installs it (pip install -c constraints.txt playwright)")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"no Chromium at {CHROMIUM}: apt-get install chromium (make test-browser does), "
                    "or set MINIKV_CHROMIUM to its path")
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


# --- in the page, through JupyterLab's own objects (exposed by --LabApp.expose_app_in_browser) ---

JS_WATCH = """() => {
  const panel = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  if (!panel || !panel.sessionContext || !panel.content || !panel.sessionContext.session) return false;
  window.__minikv = {panel, errors: []};
  // Errors that no cell shows: those raised by widget callbacks (their parent is a comm_msg, not a
  // cell's execute_request). JupyterLab sends them to its log console. (Not stderr: the kernel's
  // "No such comm" notes while ipywidgets loads are normal and stay at the console's info level.)
  panel.sessionContext.iopubMessage.connect((_, msg) => {
    const parent = (msg.parent_header || {}).msg_type;
    if (msg.header.msg_type === 'error' && parent !== 'execute_request')   // a cell's own: checked in the cell
      window.__minikv.errors.push(`error in reply to a ${parent}: ${msg.content.ename}: ${msg.content.evalue}`);
  });
  return true;
}"""

JS_STATE = """() => {
  const {panel, errors} = window.__minikv;
  const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
  const cells = panel.content.widgets.map((cell, index) => {
    const m = cell.model;
    if (m.type !== 'code') return null;
    const outputs = m.outputs.toJSON();
    return {index, count: m.executionCount, running: m.executionState === 'running',
            errors: outputs.filter(o => o.output_type === 'error').map(o => `${o.ename}: ${o.evalue}`)};
  }).filter(c => c !== null);
  return {status: kernel ? kernel.status : 'no kernel', cells, errors};
}"""


def _state(page) -> dict:
    return page.evaluate(JS_STATE)


def _wait_for_run_all(page, name: str) -> dict:
    deadline = time.monotonic() + RUN_ALL_TIMEOUT_S
    while True:
        state = _state(page)
        done = all(c["count"] is not None and not c["running"] for c in state["cells"])
        if done and state["status"] == "idle":
            return state
        if time.monotonic() > deadline:
            waiting = [c["index"] for c in state["cells"] if c["count"] is None or c["running"]]
            pytest.fail(f"{name}: Run All did not finish in {RUN_ALL_TIMEOUT_S:.0f} s "
                        f"(kernel {state['status']}, cells not run yet: {waiting})")
        page.wait_for_timeout(500)


def _images(cell) -> list[str]:
    return cell.locator(WIDGET_IMAGES).evaluate_all("imgs => imgs.map(i => i.src)")


def _snap(area, path: str) -> None:
    area.scroll_into_view_if_needed()
    area.screenshot(path=path)


def _move(page, kind: str, control) -> str:
    """Move one control as a learner would; returns what was done."""
    control.scroll_into_view_if_needed()
    if kind == "slider":
        readout = control.locator("xpath=ancestor::*[contains(@class,'widget-slider')][1]//*[contains(@class,'widget-readout')]")
        before = readout.inner_text() if readout.count() else None
        control.focus()
        page.keyboard.press("ArrowRight")
        if readout.count() and readout.inner_text() == before:   # already at the end: go the other way
            page.keyboard.press("ArrowLeft")
        return f"slider key press ({before} -> {readout.inner_text() if readout.count() else '?'})"
    if kind == "checkbox":
        control.click()
        return "checkbox click"
    if kind == "dropdown":
        options = control.locator("option").evaluate_all("os => os.map(o => o.value)")
        current = control.input_value()
        control.select_option(next(o for o in options if o != current))
        return "dropdown choice"
    if kind == "play":
        control.click()                                    # play ...
        page.wait_for_timeout(2500)
        if control.locator(".fa-pause").count():           # ... and pause, if it still plays
            control.click()
        return "play, then pause"
    raise AssertionError(kind)


@pytest.mark.slow
@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_runs_and_its_widgets_redraw_in_jupyterlab(lab: Lab, browser, path: Path) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    stem = path.stem
    context = browser.new_context(viewport={"width": 1400, "height": 1200})
    page = context.new_page()
    page_errors: list[str] = []
    page.on("pageerror", lambda exc: page_errors.append(str(exc)))
    problems: list[str] = []
    committed = path.read_bytes()
    try:
        # A workspace of its own, reset: only this notebook open, nothing restored from an earlier chapter.
        page.goto(f"{lab.url}/lab/workspaces/{stem}/tree/{path.name}?reset&token={lab.token}")
        page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=120_000)
        page.wait_for_function(JS_WATCH, timeout=120_000)
        page.wait_for_function("() => window.__minikv.panel.sessionContext.session.kernel.status === 'idle'",
                               timeout=120_000)

        # Run > Run All Cells, through the menu.
        page.locator("li.lm-MenuBar-item", has_text=re.compile(r"^\s*Run\s*$")).click()
        page.locator("li.lm-Menu-item", has=page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$"))).click()
        state = _wait_for_run_all(page, path.name)
        page.screenshot(path=SHOTS / f"{stem}-00-after-run-all.png")
        for cell in state["cells"]:
            for err in cell["errors"]:
                problems.append(f"{path.name} cell {cell['index']}: output shows an error: {err}")

        cells = page.locator(".jp-NotebookPanel .jp-Notebook .jp-Cell")
        moved = 0
        for index in range(cells.count()):
            cell = cells.nth(index)
            for kind, selector in CONTROLS.items():
                controls = cell.locator(selector)
                for j in range(controls.count()):
                    shot = SHOTS / f"{stem}-cell{index:02d}-{kind}{j}"
                    before = _images(cell)
                    if not before:
                        problems.append(f"{path.name} cell {index}: {kind} {j} has no plot below it")
                        continue
                    widget_area = cell.locator(".jp-OutputArea").first       # the widgets and their plot
                    _snap(widget_area, f"{shot}-before.png")
                    what = _move(page, kind, controls.nth(j))
                    moved += 1
                    deadline = time.monotonic() + REDRAW_TIMEOUT_S
                    while _images(cell) == before and time.monotonic() < deadline:
                        page.wait_for_timeout(250)
                    page.wait_for_timeout(300)
                    _snap(widget_area, f"{shot}-after.png")
                    if _images(cell) == before:
                        problems.append(f"{path.name} cell {index}: {kind} {j} moved ({what}), but its plot "
                                        f"did not redraw in {REDRAW_TIMEOUT_S:.0f} s (see {shot.name}-after.png)")
        broken = page.locator(".jupyter-widgets-error-widget").count()
        if broken:
            problems.append(f"{path.name}: {broken} widget(s) failed to render (shown as error widgets)")
        if "ipywidgets" in path.read_text() and moved == 0:
            problems.append(f"{path.name} uses ipywidgets, but the test found no widget control to move")

        page.wait_for_timeout(1000)                                # late replies to the last move
        problems += [f"{path.name}: {err}" for err in _state(page)["errors"]]
        # What the learner sees: the log console (View > Show Log Console), errors and all.
        if not page.locator(".jp-LogConsolePanel").count():        # the command toggles: open it only once
            page.evaluate("() => window.jupyterapp.commands.execute('logconsole:open', {insertMode: 'split-bottom'})")
        page.wait_for_selector(".jp-LogConsolePanel", timeout=30_000)
        page.wait_for_timeout(500)
        page.screenshot(path=SHOTS / f"{stem}-99-log-console.png")
        shown = page.locator(".jp-LogConsolePanel .jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
        for text in shown.all_inner_texts():
            problems.append(f"{path.name}: the log console shows: {text.strip().splitlines()[-1] if text.strip() else text!r}")
        if page_errors:
            (SHOTS / f"{stem}-page-errors.txt").write_text("\n".join(page_errors))
    finally:
        try:
            page.evaluate("() => window.__minikv && window.__minikv.panel.sessionContext.shutdown()")
        except Exception:  # noqa: BLE001 - the page may be gone; the server's shutdown stops the kernel anyway
            pass
        context.close()
        if path.read_bytes() != committed:       # JupyterLab saved it: put the committed notebook back
            path.write_bytes(committed)
            problems.append(f"{path.name} was saved by JupyterLab during the test (restored; autosave should be off)")
    assert not problems, "\n".join(problems)
