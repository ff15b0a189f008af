"""Silence TensorFlow's and tf2onnx's chatter (Python prints and C++ logs) around a conversion."""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from typing import Iterator

from edgesep.errors import ConversionError, EdgesepError, last_line


@contextlib.contextmanager
def quiet(what: str) -> Iterator[None]:
    """Run the block with stdout/stderr (file descriptors too) captured; on failure raise a one-line error.

    The captured log tail goes into the ``ConversionError`` only as its ``log`` attribute, so the user
    sees one line while a caller can still show the details.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    with tempfile.TemporaryFile(mode="w+b") as log:
        saved = os.dup(1), os.dup(2)
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            with contextlib.redirect_stdout(sys.__stdout__), contextlib.redirect_stderr(sys.__stderr__):
                yield
        except EdgesepError:  # already one line
            raise
        except Exception as e:  # converter internals raise anything; the user gets one line
            sys.stdout.flush()
            sys.stderr.flush()
            log.seek(0)
            raise ConversionError(f"{what} failed: {type(e).__name__}: {last_line(e)}",
                                  log=log.read()[-4000:].decode(errors="replace")) from None
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def import_tensorflow():
    """Import TensorFlow with its start-up log lines (CUDA probes, absl warnings) kept off the terminal."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with quiet("importing TensorFlow"):
        import tensorflow
    tensorflow.get_logger().setLevel("ERROR")  # e.g. Keras' grouped convolutions' "tf.function retracing"
    return tensorflow


def import_onnxruntime():
    """Import onnxruntime with ``$TMPDIR`` pointed at a throwaway folder for the import: its telemetry writes a
    session file (``.ses``) into the temp folder when it loads, which would otherwise stay in the user's."""
    if "onnxruntime" in sys.modules:
        return sys.modules["onnxruntime"]
    import shutil

    private = tempfile.mkdtemp(prefix="edgesep-ort-")
    saved = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = private
    try:
        import onnxruntime
    finally:
        if saved is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved
        shutil.rmtree(private, ignore_errors=True)
    return onnxruntime
