"""``python -m edgesep.fleet.raynode start ...``: Ray's own ``ray start``, keeping a loopback address as given.

When a node joins a cluster, Ray replaces the address ``127.0.0.1`` (and ``localhost``) by this machine's
network address, for the head's address as well as its own. That is right for a cluster of hosts and wrong
for nodes that live on loopback addresses of one machine (a head on 127.0.0.1, workers on 127.0.0.2 and
127.0.0.3): the worker would then talk to the head over the network interface. This entry point keeps every
127/8 and ::1 address as written and runs Ray's command line unchanged otherwise.
"""
from __future__ import annotations

import ipaddress
import sys


def _keep_loopback(resolve):
    def resolve_ip_for_localhost(host: str) -> str:
        try:
            if ipaddress.ip_address(host.strip("[]")).is_loopback:
                return host
        except ValueError:
            pass
        return resolve(host)
    return resolve_ip_for_localhost


def main(argv: list[str]) -> int:
    """Run ``ray ARGV`` with loopback addresses kept; returns its exit code."""
    from ray._private import services
    from ray.scripts.scripts import main as ray_main

    services.resolve_ip_for_localhost = _keep_loopback(services.resolve_ip_for_localhost)
    sys.argv = ["ray", *argv]
    try:
        ray_main()
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
