"""Every docs/ page a docstring or the README cites is in the repository, and no docstring
cites a design file the repository does not ship."""
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _sources():
    for top in ("micronbert", "kernels", "tests", "bench"):
        for d, dirs, files in os.walk(os.path.join(ROOT, top)):
            dirs[:] = [x for x in dirs if x not in ("kernels", "__pycache__", "results")]
            yield from (os.path.join(d, f) for f in files if f.endswith(".py"))
    yield os.path.join(ROOT, "README.md")


def test_cited_docs_exist_and_no_design_citations():
    cited = set()
    for path in _sources():
        text = open(path, encoding="utf-8").read()
        assert not re.search(r"DESIGN §", text) or path.endswith("test_docs.py"), path
        cited |= set(re.findall(r"docs/(\w+\.md)", text))
    assert {"method.md", "kernels.md", "checkpoints.md", "data.md"} <= cited
    for name in cited:
        assert os.path.isfile(os.path.join(ROOT, "docs", name)), name


# ------------------------------------------------------------------ the commands in the docs
_CALL = re.compile(r"(?:^|\s)(?:\S*/)?micronbert(?:\.cli)?\s")  # micronbert, .venv/bin/micronbert, -m micronbert.cli


def _doc_pages():
    docs = os.path.join(ROOT, "docs")
    return [os.path.join(ROOT, "README.md")] + sorted(
        os.path.join(docs, f) for f in os.listdir(docs) if f.endswith(".md"))


def _code_lines():
    """(page, line) of every line of every fenced code block of README.md and docs/*.md,
    its comment (`  # ...`) cut off; a line continued with a backslash joined to the next."""
    for page in _doc_pages():
        for block in re.findall(r"```[a-z]*\n(.*?)```", open(page, encoding="utf-8").read(), re.S):
            for line in block.replace("\\\n", " ").splitlines():
                line = re.split(r"\s#\s", " " + line, maxsplit=1)[0].strip()
                if line:
                    yield os.path.relpath(page, ROOT), line


def _micronbert_argv(line):
    """The arguments after the micronbert command of a shell line (None: not a call of it)."""
    import shlex
    words = shlex.split(line.split("&&")[-1])
    for i, w in enumerate(words):
        if w == "micronbert.cli" and words[i - 1] == "-m" or os.path.basename(w) == "micronbert":
            return words[i + 1:]
    return None


def test_every_documented_command_parses():
    """Each micronbert line of the README and docs/ goes through the CLI's own parser (a stale
    flag, choice or command fails here); each python script or module they run exists."""
    import importlib.util

    import pytest
    from micronbert.cli.parser import build_parser
    parser = build_parser()[0]
    n = 0
    for page, line in _code_lines():
        argv = _micronbert_argv(line) if _CALL.search(" " + line) else None
        if argv is not None:
            try:
                args = parser.parse_args(argv)
            except SystemExit:
                pytest.fail(f"{page}: `{line}` does not parse")
            assert args.cmd, (page, line)
            n += 1
        elif re.match(r"(\.venv/bin/)?python3? ", line):
            target = line.split()[1:3]
            if target[0] == "-m":
                assert importlib.util.find_spec(target[1]) is not None, (page, line)
            else:
                assert os.path.exists(os.path.join(ROOT, target[0])), (page, line)
    assert n >= 20, n  # the README's guide and docs/cli.md alone hold more


# the guide at tiny sizes: each flag's value replaced, and flags added per command
SHRINK = {"--steps": lambda v: str(int(v) // 100), "--batch": lambda v: "2"}
ADD = {"synth": ["--subjects", "2", "--clips-per-class", "1"], "evaluate": ["--head-epochs", "2"]}


def _tiny(argv):
    out = [SHRINK[argv[i - 1]](w) if i and argv[i - 1] in SHRINK else w for i, w in enumerate(argv)]
    return out + ADD.get(out[0], [])


def test_readme_guide_is_timed_and_runs_at_tiny_sizes(tmp_path, monkeypatch, capsys):
    """The README's step-by-step guide holds tools/time_guide.py's commands word for word (so
    docs/guide_times.md times what the README says), and they run, in order, at tiny sizes
    (SHRINK, ADD)."""
    import importlib.util
    import json
    spec = importlib.util.spec_from_file_location("time_guide", os.path.join(ROOT, "tools", "time_guide.py"))
    guide = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(guide)
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    times = open(os.path.join(ROOT, "docs", "guide_times.md"), encoding="utf-8").read()
    from micronbert.cli import main
    monkeypatch.chdir(tmp_path)
    for _, line in guide.GUIDE:
        assert f".venv/bin/{line}\n" in readme and f"`{line}`" in times, line
        assert main(_tiny(_micronbert_argv(line))) == 0, line
    out = capsys.readouterr()
    for sec, load in re.findall(r"\| (\d+) \| ([\d.]+) \| 0 \|", times):  # README quotes each time
        assert f"({sec} s, load {load})" in readme, (sec, load)
    assert "so the learning rate goes from" in out.err  # the resume explains its schedule
    assert "next: evaluate it" in out.out
    assert json.loads((tmp_path / "runs" / "ev" / "loso.json").read_text())["n_subjects"] == 2
    assert (tmp_path / "runs" / "viz" / "motion_maps.png").stat().st_size > 0
