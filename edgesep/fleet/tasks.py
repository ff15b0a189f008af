"""The Ray side of a sweep: one actor per device, and export work as tasks. Imports Ray (import it only then).

A ``DeviceActor`` is created with ``resources={"edgesep/<scheme>:<id>": 1}``, which only the node owning the
device offers, so it runs on that node; an actor runs one call at a time, so a device never runs two
measurements at once. Model bytes travel through Ray's object store and are cached on the node by content
hash, so no folder needs to be shared between hosts.
"""
from __future__ import annotations

import contextlib
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, Optional

import ray

from edgesep.errors import EdgesepError, describe


def _node() -> dict[str, Any]:
    from edgesep import __version__

    return {"node_id": ray.get_runtime_context().get_node_id(), "hostname": socket.gethostname(),
            "ip": ray.util.get_node_ip_address(), "edgesep_version": __version__, "pid": os.getpid()}


@ray.remote(num_cpus=0, max_restarts=0)
class DeviceActor:
    """One device of the plan, living on the node that owns it."""

    def __init__(self, target: str, options: dict[str, Any]) -> None:
        self.target = target
        self.options = dict(options)
        self.cache = Path(tempfile.gettempdir()) / "edgesep-fleet" / "models"

    def node(self) -> dict[str, Any]:
        """Where this actor runs: node id, hostname, IP, edgesep version."""
        return _node()

    def measure(self, name: str, sha256: str, data: bytes, bench: dict[str, Any]) -> dict[str, Any]:
        """prepare, run, cleanup for one model; never raises (errors come back as one line in ``error``)."""
        from edgesep.devices.base import BenchConfig

        outcome = {**_node(), "started": time.time(), "result": None, "error": None}
        with self._device(outcome) as device:
            device.prepare([self._cached(name, sha256, data)])
            result = device.run(BenchConfig.from_dict(bench))[0]
            outcome["result"] = result.to_dict()
            outcome["error"] = result.error
        return outcome

    @contextlib.contextmanager
    def _device(self, outcome: dict[str, Any]) -> Iterator[Any]:
        """This actor's device for one call: an error in the block becomes ``outcome["error"]`` (one line; a
        device implementation's bug must not kill the actor), the device is cleaned up, ``ended`` is stamped."""
        from edgesep.devices import parse_target

        device = None
        try:
            device = parse_target(self.target, **self.options)
            yield device
        except EdgesepError as e:
            outcome["error"] = str(e)
        except Exception as e:
            outcome["error"] = describe(e)
        finally:
            if device is not None:
                try:
                    device.cleanup()
                except EdgesepError:
                    pass
            outcome["ended"] = time.time()

    def measure_group(self, items: list, bench: dict[str, Any], sessions: int, a_bytes: bytes,
                      b_bytes: bytes, indices: Optional[list[int]] = None) -> dict[str, Any]:
        """``items`` = [(role "a"/"b", name, sha256)] with their bytes (top-level arguments, so Ray hands them
        over resolved): sessions ``indices`` (default: all ``sessions``) of ``sessions``, each a runner process
        over a, b and the A/A control (b loaded a second time), shuffled by its index, rounds interleaved, as
        ``compare`` measures. Never raises; each session comes back as ``{index, order, samples: {role: [ms]}}``."""
        from edgesep.compare.sessions import session_config, session_order
        from edgesep.devices.base import BenchConfig

        outcome = {**_node(), "started": time.time(), "sessions": [], "runtime": None, "error": None}
        with self._device(outcome) as device:
            data = {"a": a_bytes, "b": b_bytes}
            paths = {role: self._cached(f"{role}-{name}", sha, data[role]) for role, name, sha in items}
            paths["control"] = self._cached(f"control-{items[1][1]}", items[1][2], b_bytes)
            config = session_config(BenchConfig.from_dict(bench), sessions)
            for index in range(sessions) if indices is None else indices:
                order = session_order(["a", "b", "control"], index, config.seed)
                device.prepare([paths[role] for role in order])
                results = device.run(config)
                error = next((r.error for r in results if r.error), None)
                if error:
                    raise EdgesepError(error)
                outcome["runtime"] = results[0].runtime
                outcome["sessions"].append({"index": index, "order": order,
                                            "samples": {role: list(r.samples_ms) for role, r in zip(order, results)}})
        return outcome

    def _cached(self, name: str, sha256: str, data: bytes) -> Path:
        from edgesep.io import write_bytes

        path = self.cache / sha256[:16] / name
        if not path.is_file():
            write_bytes(path, data)
        return path


@ray.remote(num_cpus=1, max_retries=0)
def export_task(job: dict[str, Any], keras_bytes: Optional[bytes] = None) -> dict[str, Any]:
    """Run one export job on whichever node has a free CPU; errors come back as one line."""
    from edgesep.fleet.jobs import run_export

    outcome = {**_node(), "started": time.time(), "doc": None, "files": None, "error": None}
    try:
        outcome.update(run_export(job, keras_bytes))
    except EdgesepError as e:
        outcome["error"] = str(e)
    except Exception as e:  # TensorFlow's own errors
        outcome["error"] = describe(e)
    outcome["ended"] = time.time()
    return outcome


def new_actor(resource: str, target: str, options: dict[str, Any], node_id: Optional[str] = None):
    """A DeviceActor placed on the node offering ``resource``; on node ``node_id`` only, when given.

    Pinning matters after a lost node: Ray lists a killed node as alive (still offering the resource) for
    a while, and an actor it places there dies before running anything.
    """
    options_ = {"resources": {resource: 1}}
    if node_id:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        options_["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node_id, soft=False)
    return DeviceActor.options(**options_).remote(target, options)
