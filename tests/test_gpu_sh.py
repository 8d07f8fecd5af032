"""bench/gpu.sh cannot rot: ``--cpu-check`` runs every step of the GPU script at tiny sizes on
the CPU, with the test modules collected from the checkout (the package with kernels/), and
every bench table written with the machine's measured limits beside its speeds."""
import csv
import os
import re
import subprocess
import sys
import tarfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = ("tests", "bench_dma", "roofline", "bench_swap", "bench_train", "bench_compile_sm90",
         "bench_loader", "bench_spot", "finetune")


def rows(out, name):
    with open(os.path.join(out, f"{name}.csv")) as f:
        return list(csv.DictReader(f))


def test_gpu_sh_cpu_check_runs_every_step(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MICRONBERT_BENCH_OUT")}
    env["PYTHON"] = sys.executable
    out = tmp_path / "out"
    r = subprocess.run(["bash", os.path.join(ROOT, "bench", "gpu.sh"), "--cpu-check", str(out)],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    for step in STEPS:
        assert f"== {step}: exit 0" in r.stdout, step
        assert (out / f"{step}.log").is_file(), step
    log = (out / "tests.log").read_text()
    # every test module imports (a collection error reads "N tests collected, 1 error in")
    assert re.search(r"^\d+ tests collected in ", log.strip().splitlines()[-1]), log[-2000:]
    # the speeds stand beside the machine's own GEMM rate, measured in the same run
    for name in ("bench_dma", "bench_train", "bench_spot"):
        table = rows(out, name)
        assert table, name
        assert any(float(t["frac_gemm"]) > 0 for t in table if t["frac_gemm"] not in ("", "None")), name
        assert "machine limits measured in this run: GEMM" in (out / f"{name}.md").read_text(), name
    assert {t["route"] for t in rows(out, "bench_train")} == {"authors", "reference", "fused"}
    assert rows(out, "bench_swap") and rows(out, "bench_compile_sm90") and rows(out, "roofline")
    assert "--dali loader is not measured" in (out / "bench_loader.md").read_text()
    assert (out / "finetune" / "loso.json").is_file()
    with tarfile.open(out / "gpu_tables.tgz") as t:
        assert "./bench_train.csv" in t.getnames()
