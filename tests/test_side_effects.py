"""Importing or installing the plugin changes nothing else in the process: exception hook, allocator, threads.

The ``.pth`` import hook installs the plugin into every process that imports a host, including a user's own
scripts; those keep Python's normal error reporting. Only the project's entry points (and the hosts' own
``yolov5`` / ``yolo`` commands) print the plugin's errors as one ``error:`` line
(tests/test_entry_points_safety.py checks those).
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

import yolo_backbones
from yolo_backbones.core.weights.safe_load import CheckpointFileError
from yolo_backbones.hosts.common import errors
from yolo_backbones.hosts.common.coco import annotation_file


def _python(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop(errors.TRACEBACK_ENV, None)
    env.pop("YOLO_BACKBONES_NO_AUTOLOAD", None)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize("host", ["ultralytics", "yolov5"])
def test_user_script_keeps_its_traceback_and_excepthook(host) -> None:
    code = (f"import sys, {host}\n"
            "assert 'yolo_backbones' in sys.modules, 'the .pth hook did not install the plugin'\n"
            "assert sys.excepthook is sys.__excepthook__, sys.excepthook\n"
            "open('/nonexistent-dir/user-file.txt')\n")
    proc = _python(code)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback (most recent call last)" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("FileNotFoundError: [Errno 2]")
    assert not any(line.startswith("error: ") for line in proc.stderr.splitlines())


def test_fusing_leaves_the_allocator_alone() -> None:
    from yolo_backbones.core.inference import runtime

    before = runtime._tuned
    yolo_backbones.create("edgevit_xxs", features_only=True).eval().fuse()
    assert runtime._tuned is before  # mallopt only when asked for (tune_cpu_allocator / YOLO_BACKBONES_MALLOC_TUNING=1)


def test_only_the_plugins_errors_are_one_line() -> None:
    def users_code():
        open("/nonexistent-dir/user-file.txt")

    with pytest.raises(FileNotFoundError) as user:
        users_code()
    assert errors.user_error(user.value) is None  # a host command still shows the user's traceback
    with pytest.raises(FileNotFoundError) as plugin:  # raised by the plugin's own code: one line
        annotation_file({}, Path("/nonexistent-dir/instances.json"), logging.getLogger(__name__))
    assert errors.user_error(plugin.value) is plugin.value
    wrapped = RuntimeError("while loading")
    wrapped.__cause__ = CheckpointFileError("model.pt: damaged")
    assert isinstance(errors.user_error(wrapped), CheckpointFileError)
    assert errors.one_line(yolo_backbones.ModelConfigError("a\n  b")) == "error: a; b"


def test_hook_is_installed_only_for_host_commands(monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", ["-c"])
    assert not errors.host_command_running()
    main = sys.modules["__main__"]
    for argv0, script, expected in (("/venv/bin/yolov5", "/venv/bin/yolov5", True),
                                    ("/venv/bin/yolo", "/venv/bin/yolo", True), ("yolo.py", "yolo.py", False),
                                    ("/venv/bin/yolo", "/home/me/run.py", False)):
        monkeypatch.setattr(sys, "argv", [argv0])
        monkeypatch.setattr(main, "__file__", script, raising=False)
        assert errors.host_command_running() is expected, argv0
    monkeypatch.setattr(sys, "argv", ["-c"])
    hook = sys.excepthook
    yolo_backbones.install()
    assert sys.excepthook is hook


@pytest.mark.parametrize("name", ["mobileformer_52m", "efficientformerv2_s0"])
def test_inference_never_changes_thread_counts(name, monkeypatch) -> None:
    """Two threads run fused inference at once, and new threads start meanwhile: every thread keeps its count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        model = yolo_backbones.create(name, features_only=True).eval().fuse()
        x = torch.rand(1, 3, 96, 128)
        calls = []
        real = torch.set_num_threads
        monkeypatch.setattr(torch, "set_num_threads", lambda n: calls.append(n) or real(n))
        seen, failures = [], []

        def infer() -> None:
            try:
                with torch.no_grad():
                    for _ in range(10):
                        seen.append(torch.get_num_threads())
                        model(x)
                        seen.append(torch.get_num_threads())
            except Exception as e:  # noqa: BLE001  (reported below: a thread's exception would otherwise vanish)
                failures.append(e)

        def fresh() -> None:  # a thread started during the others' forwards
            with torch.no_grad():
                torch.nn.functional.relu(torch.rand(64, 64))
            seen.append(torch.get_num_threads())

        workers = [threading.Thread(target=infer) for _ in range(2)]
        for w in workers:
            w.start()
        while any(w.is_alive() for w in workers):
            t = threading.Thread(target=fresh)
            t.start()
            t.join()
        for w in workers:
            w.join()
        assert not failures, failures
        assert not calls  # forward never touches the process's thread settings
        assert len(seen) > 40 and set(seen) == {2}
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
