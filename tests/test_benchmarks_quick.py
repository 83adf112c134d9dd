"""The benchmark suite's aggregator (`python -m benchmarks run`), on fake benchmark results.

The real `python -m benchmarks run --quick` takes several minutes on the shared 2-core development
machine (every benchmark starts its own Python with jax and torch), too long for a test; here each
benchmark's child process is replaced by a result of the shape its script returns, and the run must
write `<date>-<device>[-quick].{json,md}` with a ratio on every row, and record a failure without
stopping.
"""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import __main__ as suite

CONFIG = dict(num_hidden_layers=2, hidden_size=64, intermediate_size=128, vocab_size=1000)
PEAK = {"n": 1024, "repeats": 3, "backend": "cpu", "jax": {"float32": 100.0, "bfloat16": 50.0},
        "torch": {"float32": 80.0, "bfloat16": 40.0}}


def fake_results() -> dict[str, dict]:
    side = {"cold": {"texts_per_s": 10.0, "fraction_of_peak": 0.2}, "warm": {"texts_per_s": 12.0, "fraction_of_peak": 0.25}}
    return {
        "encoder_forward": {
            "dtype": "float32", "ratio": 1.1, "config": CONFIG,
            "inputs": {"batch": 2, "length": 16, "positions": 32},
            "results": {"ours": {"median_s": 0.001, "tokens_per_s": 30000.0},
                        "transformers": {"median_s": 0.0011, "tokens_per_s": 27000.0}},
            "ratios": {"ours": {"per_round": [1.0, 1.2]}}},
        "compile_time": {
            "quick": True, "batch": 8, "length": 128,
            "summary": {"forward/cold": {"seconds_12": 2.0, "seconds_24": 2.1, "seconds_24_over_12": 1.05,
                                         "ratio": 0.95, "holds": True}}},
        "convert_checkpoint": {
            "size": "base", "quick": True,
            "checkpoint": {"file_bytes": 2e8, "largest_tensor": {"bytes": 1e8}},
            "summary": {k: {"operation_s": {"median": s}} for k, s in
                        (("ours_to_flax", 1.0), ("ours_to_pytorch", 1.2), ("transformers", 1.5))},
            "comparison": {"seconds_transformers_over_ours_to_flax": {"median": 1.5},
                           "seconds_transformers_over_ours_to_pytorch": {"median": 1.25}},
            "memory_claim": {"directions": {k: {"above_baseline_over_largest": 0.1, "holds": True}
                                            for k in ("ours_to_flax", "ours_to_pytorch")}}},
        "tokenizer_speed": {"texts": 500, "rows": [
            {"setting": "ids only", "ours": 0.01, "reference": 0.05, "ratio": 5.0, "identical": "500/500"}]},
        "pipelines": {
            "config": CONFIG, "texts": 64, "batch_size": 32, "peak_fp32_gflops": 90.0,
            "fill_mask": {"ours": side, "transformers": side, "ours / transformers": {"cold": 1.0, "warm": 1.0}},
            "embeddings": {"ours": side, "sentence-transformers": side,
                           "ours / sentence-transformers": {"cold": 1.0, "warm": 1.0}}},
        "eager_and_decoding": {
            "eager": {"batch_shape": [2, 6], "median_s": {"eager": 0.002, "jit_forward": 0.001},
                      "ratio_eager_over_jit": 2.0, "compiles_during_timed_calls": 0},
            "decoding": {"config": {"num_hidden_layers": 4, "hidden_size": 256}, "batch": 4,
                         "rows": [{"cache_length": 64, "per_token_ms": 3.0}, {"cache_length": 256, "per_token_ms": 6.0}]}},
        "finetune": {
            "config": CONFIG, "dropout": 0.1, "peak_fp32_gflops": 90.0,
            "throughput": {"2x32": {"samples_per_s": {"ours": 4.0, "reference": 3.0}, "ratio_of_best": 1.3,
                                    "fraction_of_peak": {"ours": 0.3},
                                    "optimizer_share": {"ours": 0.1, "reference": 0.05}}},
            "buckets": {"buckets": {"real_tokens_per_s": 20.0}, "pad_to_max_length": {"real_tokens_per_s": 10.0},
                        "ratio_real_tokens_per_s": 2.0, "corpus": {"texts": 16, "batch": 2}}},
        "quantized": {"int8": {"ratio_memory": 3.9, "ratio_speed": 1.1}},
    }


@pytest.fixture
def fake_children(monkeypatch):
    """`run_child` answers from fake_results() (by the benchmark's module) instead of a process."""
    results, calls = fake_results(), []

    def run_child(args, log, timeout):
        calls.append(args)
        if args[0] == suite.PEAK:
            return dict(PEAK), None, 0.1
        module = args[1]
        if module == "pipelines":
            return None, "exit 1: Traceback ... RuntimeError: boom", 0.2
        return results[module], None, 0.5

    monkeypatch.setattr(suite, "run_child", run_child)
    return calls


def test_quick_run_writes_the_report_with_a_ratio_on_every_row(fake_children, tmp_path):
    code = suite.main(["run", "--quick", "--out", str(tmp_path)])

    assert code == 1  # the failing benchmark makes the run fail, after writing everything else
    written = sorted(p.name for p in tmp_path.iterdir())
    assert len(written) == 2 and written[0].endswith("-quick.json") and written[1].endswith("-quick.md")
    report = json.loads((tmp_path / written[0]).read_text())
    assert report["quick"] and report["machine"]["processor"] and report["versions"]["jax"]
    assert report["peak"]["float32"] == 100.0 and report["peak"]["bfloat16"] == 50.0
    assert report["benchmarks"]["pipelines"]["status"] == "error"
    assert "boom" in report["benchmarks"]["pipelines"]["error"]
    ok = {name for name, entry in report["benchmarks"].items() if entry["status"] == "ok"}
    assert {row["benchmark"] for row in report["rows"]} == ok | {"peak"}
    for row in report["rows"]:
        assert isinstance(row["ratio"], float), row
        assert row["workload"] and row["ratio_means"] is not None
    by_workload = {row["workload"]: row for row in report["rows"]}
    encoder = by_workload["encoder forward 2x16"]
    # 2 layers x (2 (4 h^2 + 2 h f) + 4 S h) FLOPs per position, 32 positions, in 1 ms, over 100 GFLOP/s
    flops = 2 * (2 * (4 * 64**2 + 2 * 64 * 128) + 4 * 16 * 64) * 32
    assert encoder["fraction_of_peak"] == pytest.approx(flops / 1e-3 / 1e9 / 100.0)
    assert by_workload["convert HF -> Flax"]["ratio"] == 1.5
    assert by_workload["compile forward, 24 vs 12 layers, cold"]["ratio"] == 0.95
    assert by_workload["train step, sequence classification 2x32"]["fraction_of_peak"] == pytest.approx(0.3 * 0.9)
    assert by_workload["int8/ratio_memory"]["ratio"] == 3.9  # a benchmark the suite has no reader for
    # quick mode runs every benchmark once, each with its own --quick
    children = [args for args in fake_children if args[0] == suite.CHILD]
    assert [args[1] for args in children].count("encoder_forward") == 1
    assert all(args[3:] == ["--quick"] for args in children)
    markdown = (tmp_path / written[1]).read_text()
    assert "| encoder_forward_8x128 | encoder forward 2x16 |" in markdown
    assert "## Failed or skipped" in markdown and "`pipelines`" in markdown


def test_full_cpu_suite_runs_each_encoder_shape_and_no_gpu_script():
    names = [b.name for b in suite.suite_benchmarks("cpu", Path("/tmp"))]
    assert [n for n in names if n.startswith("encoder_forward")] == [
        "encoder_forward_32x128", "encoder_forward_8x512", "encoder_forward_8x128"]
    assert "gpu" not in names and "compile_time" in names and "convert_checkpoint" in names
    assert "gpu" in [b.name for b in suite.suite_benchmarks("gpu", Path("/tmp"))]


def test_a_reader_that_no_longer_fits_its_script_is_a_failure_not_a_crash():
    benchmarks = [b for b in suite.suite_benchmarks("cpu", Path("/tmp")) if b.name == "tokenizer_speed"]
    results = {"tokenizer_speed": {"status": "ok", "result": {"texts": 5}, "seconds": 1.0, "command": "x"}}
    report = suite.build_report(command="c", suite="cpu", quick=True, started="s", machine={}, peak_runs=[PEAK],
                                results=results, benchmarks=benchmarks)
    assert report["benchmarks"]["tokenizer_speed"]["status"] == "error"
    assert "KeyError" in report["benchmarks"]["tokenizer_speed"]["error"]
