"""Build a search's window and feature caches once, so that they can be shared.

    python cluster/prepare_caches.py <the flags you will give tune_eegpt.search>

Runs exactly the data preparation that ``python -m tune_eegpt.search`` runs in its driver
(same flags, same config, same space), and stops there: it prints the cache paths and
starts no trial. On a cluster: run it on the head, upload ``--cache-dir`` to object storage,
and every node that downloads it before the search starts (cluster.yaml's setup) finds its
caches ready instead of decoding TUAB and running the encoder itself (docs/CLUSTER.md).
"""

from __future__ import annotations

import sys
import time

from tune_eegpt import search
from tune_eegpt.config import ConfigError
from tune_eegpt.pipeline import prepare_data


def main(argv: list[str] | None = None) -> int:
    args = search.build_parser().parse_args(argv)
    try:
        search.check_args(args)
        cfg = search.base_run_config(args)
        from search_spaces import load_space

        space = load_space(args.space)
        cfg = cfg.with_overrides(space.fixed, source=f"space {space.name}: fixed")
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    prepared = prepare_data(cfg, workers=args.workers)
    print(f"window cache:  {prepared.window_cache}")
    print(f"feature cache: {prepared.feature_cache or '(none: the encoder runs live)'}")
    print(f"prepared in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
