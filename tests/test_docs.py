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
