"""Prints the README's model-zoo table from `kerasdet.zoo.info` (tests/test_readme.py checks
that the README's copy still matches).

    python tools/zoo_table.py            # builds every model to count its parameters (~1 min,
                                         # ~1.5 GB for the OverFeat networks)
    python tools/zoo_table.py --no-params

One row per configuration: name, parameters, input size, the bundled (or registry)
weights and the AP / AP50 / AP75 recorded for them in the configuration's YAML, with the
data they were measured on.
"""

from __future__ import annotations

import argparse

HEADER = ("name", "params", "input (H×W)", "weights", "AP", "AP50", "AP75", "measured on")
_NONE = "—"


def _metric(metrics, key) -> str:
    value = metrics.get(key)
    return _NONE if value is None else f"{value:.3f}"


def zoo_rows(count_params: bool = True, names=None) -> list:
    """One tuple of cells per zoo configuration (`HEADER` order); `names` restricts the
    rows, `count_params=False` leaves the params cell empty (building big models is slow)."""
    from kerasdet import zoo

    rows = []
    for name in names if names is not None else zoo.list():
        info = zoo.info(name, count_params=count_params)
        h, w = info["model"]["image_size"]
        params = f"{info['num_params']:,}" if count_params else ""
        # The first weights entry is the one `kerasdet evaluate` / `detect` default to.
        entry_name, entry = next(iter(info["weights"].items()), (None, None))
        if entry is None:
            weights, metrics, dataset = _NONE, {}, _NONE
        else:
            weights = f"`{entry_name}` ({entry['num_classes']} classes)"
            metrics = entry.get("metrics") or {}
            dataset = (entry.get("dataset") or _NONE) if metrics else _NONE
        rows.append((f"`{name}`", params, f"{h}×{w}", weights, _metric(metrics, "AP"),
                     _metric(metrics, "AP50"), _metric(metrics, "AP75"), dataset))
    return rows


def markdown(rows) -> str:
    """A markdown table of `rows` under `HEADER`."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-params", action="store_true", help="skip building the models")
    args = parser.parse_args(argv)
    print(markdown(zoo_rows(count_params=not args.no_params)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
