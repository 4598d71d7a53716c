"""The README must stay true: its quickstart, Python examples, zoo table and commands."""

import importlib.util
import pathlib
import re
import shlex
import tempfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)

# What each README Python block must print: name → (a snippet that identifies the block,
# regexes its output must match). Every block needs an entry, so a new example states
# what it promises.
PROMISES = {
    "layers": (
        "AnchorGenerator(sizes=(128, 256, 512)",
        [r"\(21546, 4\)", r"\(1, 21546\) \(1, 21546, 4\)", r"\(1, 2, 7, 7, 512\)", r"\(1, 3, 6, 256\)"],
    ),
    "overfeat": ('overfeat_classifier("accurate"', [r"144656488", r"\(7, 10\) \(36, 36\)"]),
    "detect": (
        "letterbox(example",
        [r"detected (circle|square|triangle|ellipse|rectangle) +[01]\.\d\d  y1=\d+ x1=\d+",
         r"truth: \['circle', 'square', 'triangle'\]"],
    ),
    "fine-tune": (
        "load_detection_data(root",
        [r"fine-tuned on \['ball', 'crate'\] losses: \['loss', 'rcnn_box', 'rcnn_class', 'rpn_box', 'rpn_objectness'\]"],
    ),
    "export": (
        "TFLiteDetector(path",
        [r"'input_size': \[256, 256\]", r"'quantization': 'float32'", r"tflite (circle|square|triangle|ellipse|rectangle) "],
    ),
    "autoanchor": ("autoanchor(wh", [r"best possible recall 0\.\d\d -> (0\.9\d|1\.00)"]),
}


def _quickstart_commands():
    section = README.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def test_quickstart_has_exactly_two_commands():
    assert _quickstart_commands() == ["pip install -e . && kerasdet demo", 'pip install -e ".[test]" && pytest']


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert _quickstart_commands()[1] in [line.strip() for line in ci]


def test_quickstart_sample_output_quotes_the_bundled_metrics():
    from kerasdet import zoo

    metrics = zoo.info("faster_rcnn_tiny")["weights"]["shapes"]["metrics"]
    quoted = re.search(r"recorded for these weights: AP (\S+)  AP50 (\S+)  AP75 (\S+)", README)
    assert quoted, "the Quickstart's sample `kerasdet demo` output is missing"
    assert [float(v) for v in quoted.groups()] == [metrics[k] for k in ("AP", "AP50", "AP75")]


# --- Python examples --------------------------------------------------------------------


def _promise_of(block):
    names = [name for name, (marker, _) in PROMISES.items() if marker in block]
    assert len(names) == 1, f"README block needs exactly one PROMISES entry, matched {names}:\n{block}"
    return names[0]


def test_every_block_has_one_promise_and_every_promise_a_block():
    assert sorted(_promise_of(block) for block in PYTHON_BLOCKS) == sorted(PROMISES)


@pytest.mark.parametrize("name", sorted(PROMISES))
def test_readme_python_example_runs(name, capsys, tmp_path, monkeypatch):
    block = next(b for b in PYTHON_BLOCKS if PROMISES[name][0] in b)
    # Examples that write files (tempfile.mkdtemp, relative paths) write them under tmp_path.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    exec(compile(block, f"README.md ({name} example)", "exec"), {})
    printed = capsys.readouterr().out
    for pattern in PROMISES[name][1]:
        assert re.search(pattern, printed), (pattern, printed)


# --- the zoo table ----------------------------------------------------------------------


def _zoo_table_tool():
    spec = importlib.util.spec_from_file_location("zoo_table", ROOT / "tools" / "zoo_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _readme_zoo_table():
    section = README.split("<!-- zoo table", 1)[1].split("<!-- end of zoo table -->", 1)[0]
    lines = [line.strip() for line in section.splitlines() if line.startswith("|")]
    return lines[0], [tuple(cell.strip() for cell in line.strip("|").split("|")) for line in lines[2:]]


def test_zoo_table_matches_the_zoo_configs():
    tool = _zoo_table_tool()
    header, rows = _readme_zoo_table()
    assert header == tool.markdown([]).splitlines()[0]
    expected = tool.zoo_rows(count_params=False)
    assert [row[0] for row in rows] == [row[0] for row in expected]
    for got, want in zip(rows, expected):
        # Everything but the parameter count: name, input size, weights, AP, AP50, AP75, data.
        assert got[:1] + got[2:] == want[:1] + want[2:], (got, want)


def test_zoo_table_params_of_the_small_models():
    # Counting parameters builds each model; the big ones (VGG, ResNet, OverFeat: up to
    # 300M parameters) take too long and too much memory for the default test run.
    tool = _zoo_table_tool()
    _, rows = _readme_zoo_table()
    small = ["faster_rcnn_tiny", "overfeat_tiny"]
    readme = {row[0]: row[1] for row in rows}
    for row in tool.zoo_rows(count_params=True, names=small):
        assert readme[row[0]] == row[1], (row[0], readme[row[0]], row[1])


# --- the command line -------------------------------------------------------------------


def _readme_commands():
    spans = (" ".join(span.split()) for span in re.findall(r"`(kerasdet [^`]+)`", README))
    return sorted({span for span in spans if span.split()[1].isidentifier() and span.split()[1].islower()})


def test_every_command_is_in_the_cli_table():
    from kerasdet.cli import _COMMANDS

    section = README.split("## Command line", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"^\| `(\w+)` \|", section, re.M)
    assert listed == list(_COMMANDS)


@pytest.mark.parametrize("command", _readme_commands())
def test_readme_command_lines_parse(command):
    # Each `kerasdet ...` the README shows is accepted by the real argument parser (parsing
    # only: nothing runs), so a renamed or removed option cannot linger in the docs.
    from kerasdet.cli import _parser

    args = _parser().parse_args(shlex.split(command)[1:])
    assert args.command == command.split()[1]
