"""End every search's GPU feature holders on a running Ray cluster.

    python cluster/release_feature_holders.py [--address auto]

A search's trials on a GPU train from one copy of the train features per GPU, kept by a
holder actor (trainables/feature_holder.py); the search's driver ends its holders when its
trials are over. A driver killed hard leaves them, with their GPU memory, on a cluster that
stays up: this ends them. Run it while no search runs (a running trial reads its holder's
memory).
"""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--address", default="auto", help="the Ray cluster (default: auto)")
    args = parser.parse_args(argv)
    import ray

    from trainables.feature_holder import release_feature_holders

    ray.init(address=args.address, configure_logging=False)
    print(f"released {release_feature_holders(every_search=True)} feature holder(s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
