"""`kerasdet zoo list` and `kerasdet zoo info NAME`."""

from __future__ import annotations

import json


def register(subparsers):
    parser = subparsers.add_parser(
        "zoo",
        help="list the model zoo, or show one configuration",
        description="The model zoo: one YAML configuration per model, with its weights and their metrics.",
    )
    actions = parser.add_subparsers(dest="zoo_command", metavar="ACTION", required=True)
    actions.add_parser("list", help="one line per configuration", description="One line per zoo configuration.")
    info = actions.add_parser("info", help="everything about one configuration",
                              description="Description, parameters, training recipe and weights of a configuration.")
    info.add_argument("name", help="zoo name (kerasdet zoo list) or YAML path")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.add_argument("--count-params", action="store_true", help="build the model and count its parameters")
    return parser


def _format_value(value) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_format_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_format_value(v) for v in value) + "]"
    if isinstance(value, float):
        return f"{value:g}"
    return "null" if value is None else str(value)


def _list() -> int:
    from kerasdet import zoo

    rows = [("NAME", "FAMILY", "INPUT", "CLASSES", "WEIGHTS", "DESCRIPTION")]
    for name in zoo.list():
        config = zoo.get_config(name)
        h, w = config.model["image_size"]
        rows.append((name, config.family, f"{h}x{w}", str(config.model["num_classes"]),
                     ",".join(config.weights) or "-", config.description))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1])
    return 0


def _info(name, as_json, count_params) -> int:
    from kerasdet import zoo
    from kerasdet.zoo.config import MODEL_SCHEMAS, TRAIN_SCHEMAS

    record = zoo.info(name, count_params=count_params)
    if as_json:
        print(json.dumps(record, indent=1))
        return 0
    print(f"{record['name']} ({record['family']}): {record['description']}")
    if record["reference"]:
        print(f"reference: {record['reference']}")
    print(f"config: {record['config']}")
    if "num_params" in record:
        print(f"parameters: {record['num_params']:,}")
    for section, schemas in (("model", MODEL_SCHEMAS), ("train", TRAIN_SCHEMAS)):
        print(f"{section}:")
        schema = schemas[record["family"]]
        for key, value in record[section].items():
            doc = schema[key].doc
            print(f"  {key}: {_format_value(value)}" + (f"  # {doc}" if doc else ""))
    if not record["weights"]:
        print("weights: none (random init; backbone_weights='imagenet' for keras.applications backbones)")
    for entry_name, entry in record["weights"].items():
        state = {True: "available", False: "MISSING", None: "downloaded on first use"}[entry["available"]]
        print(f"weights {entry_name!r} ({state}): {entry['source']}")
        print(f"  classes ({entry['num_classes']}): {', '.join(entry['classes'])}")
        if entry.get("metrics"):
            print(f"  metrics: {_format_value(entry['metrics'])}"
                  + (f" on {entry['dataset']}" if entry.get("dataset") else ""))
        if entry.get("command"):
            print(f"  command: {entry['command']}")
        print(f"  sha256: {entry['sha256']}")
    return 0


def run(args) -> int:
    if args.zoo_command == "list":
        return _list()
    return _info(args.name, args.json, args.count_params)
