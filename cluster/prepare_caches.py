"""Build a search's window and feature caches on the Ray cluster, and stop there.

    python cluster/prepare_caches.py --address auto <the flags you will give tune_eegpt.search>

Runs exactly the data preparation that ``python -m tune_eegpt.search`` runs before its first
trial (same flags, same config, same space, tune_eegpt/prepare_on_ray.py): every recording
decoded once, as a Ray task on some node's CPU; the frozen encoder run once, on a GPU node.
It prints the cache locations and starts no trial. Use it to see the manifest of rejected
files before paying for a search; the search itself then finds its caches complete. Without
``--address`` it starts Ray on this machine.
"""

from __future__ import annotations

import sys
import time

from tune_eegpt import search
from tune_eegpt.config import ConfigError


def main(argv: list[str] | None = None) -> int:
    args = search.build_parser().parse_args(argv)
    try:
        cfg, _ = search.resolve(args)
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    import ray

    from tune_eegpt.prepare_on_ray import connect, prepare_on_ray

    started = time.perf_counter()
    joined = connect(args.address)
    try:
        prepared = prepare_on_ray(cfg)
    finally:
        if joined:
            ray.shutdown()
    print(f"window cache:  {prepared.window_cache}")
    print(f"feature cache: {prepared.feature_cache or '(none: the encoder runs live)'}")
    print(f"prepared in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
