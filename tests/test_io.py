"""The ground floor: the one writer (atomic files, strict JSON, staged folders, locks) and the one error base."""
import json
import math
import os
import threading

import numpy as np
import pytest

from edgesep.errors import EXIT_FAILURE, EXIT_USAGE, EdgesepError, OutputError, UsageError, one_line
from edgesep.io import StagedDir, check_writable_dir, dumps, locked_dir, require_regular_file, write_json


def test_json_is_strict_nan_and_infinity_become_null():
    doc = {"a": math.nan, "b": [1.0, math.inf, -math.inf], "c": np.float32(np.nan), "d": np.arange(3),
           "e": {"f": (np.float64(2.5),)}}
    text = dumps(doc)
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"a": None, "b": [1.0, None, None], "c": None, "d": [0, 1, 2], "e": {"f": [2.5]}}


def test_write_json_is_atomic_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "sub" / "doc.json"
    write_json(target, {"x": 1})
    write_json(target, {"x": 2})
    assert json.loads(target.read_text()) == {"x": 2}
    assert sorted(p.name for p in target.parent.iterdir()) == ["doc.json"]
    with pytest.raises(TypeError):
        write_json(target, {"x": object()})  # not JSON: the old file stays whole, no temp left
    assert json.loads(target.read_text()) == {"x": 2}
    assert sorted(p.name for p in target.parent.iterdir()) == ["doc.json"]


def test_staged_dir_moves_in_only_on_commit_and_replaces_the_old_set(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    for name in ("old_model.tflite", "keep.txt", "export.json"):
        (out / name).write_text("old")
    with pytest.raises(RuntimeError):
        with StagedDir(out) as stage:
            (stage.path / "model.tflite").write_text("half")
            raise RuntimeError("a step failed")
    assert sorted(p.name for p in out.iterdir()) == ["export.json", "keep.txt", "old_model.tflite"]
    with StagedDir(out) as stage:
        (stage.path / "model.tflite").write_text("new")
        (stage.path / "export.json").write_text("new")
        assert stage.commit(replaces=["old_model.tflite", "export.json"]) == ["export.json", "model.tflite"]
    assert sorted(p.name for p in out.iterdir()) == ["export.json", "keep.txt", "model.tflite"]
    assert (out / "export.json").read_text() == "new"


def test_a_second_writer_is_refused_at_once(tmp_path):
    out = tmp_path / "out"
    inside, release = threading.Event(), threading.Event()

    def first():
        with locked_dir(out):
            inside.set()
            release.wait(10)

    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert inside.wait(10)
        with pytest.raises(OutputError, match="another edgesep is writing to"):
            with locked_dir(out):
                pass
    finally:
        release.set()
        thread.join()
    with locked_dir(out):  # free again
        (out / "made.txt").write_text("x")
    assert sorted(p.name for p in out.iterdir()) == ["made.txt"]


def test_a_folder_the_lock_created_is_removed_when_left_empty(tmp_path):
    out = tmp_path / "new-out"
    with pytest.raises(RuntimeError):
        with locked_dir(out):
            raise RuntimeError("the export failed")
    assert not out.exists()
    existing = tmp_path / "existing"
    existing.mkdir()
    with locked_dir(existing):
        pass
    assert existing.is_dir()  # the user's folder stays, even empty


def test_writability_is_checked_without_creating_anything(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="exists and is not a folder"):
        check_writable_dir(tmp_path / "file")
    with pytest.raises(OutputError, match="is not a folder"):
        check_writable_dir(tmp_path / "file" / "out")
    assert check_writable_dir(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert not (tmp_path / "a").exists()


def test_only_regular_files_are_read(tmp_path):
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "dir").mkdir()
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputError, match="not a regular file"):
        require_regular_file(tmp_path / "pipe", "model file")
    with pytest.raises(OutputError, match="is a folder"):
        require_regular_file(tmp_path / "dir", "model file")
    with pytest.raises(EdgesepError, match="model file not found"):
        require_regular_file(tmp_path / "missing", "model file")
    assert require_regular_file(tmp_path / "f") == tmp_path / "f"


def test_errors_are_one_line_with_their_exit_code():
    e = EdgesepError("first\n  second\n\nthird")
    assert str(e) == "first second third" and e.exit_code == EXIT_FAILURE
    assert UsageError("bad").exit_code == EXIT_USAGE
    assert EdgesepError("x", exit_code=EXIT_USAGE).exit_code == EXIT_USAGE
    assert len(one_line("y" * 1000)) == 500 and one_line("") == "failed"
