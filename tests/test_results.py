import json

import numpy as np
import torch

from compresslib import results


def test_write_metrics_is_json_safe(tmp_path):
    p = results.write_metrics(tmp_path, {"a": np.float32(0.5), "b": torch.tensor([1, 2]), "c": float("nan")})
    assert json.loads(p.read_text()) == {"a": 0.5, "b": [1, 2], "c": None}
    assert not list(tmp_path.glob("*.tmp*"))


def test_param_hash_ignores_key_order():
    assert results.param_hash({"a": 1, "b": 2}) == results.param_hash({"b": 2, "a": 1})
    assert results.param_hash({"a": 1}) != results.param_hash({"a": 2})


def test_with_cache_skips_unchanged_points(tmp_path):
    calls = []
    f = lambda: calls.append(1) or {"acc": 0.9}
    assert results.with_cache(tmp_path / "c.json", {"budget": 0.2}, f) == {"acc": 0.9}
    assert results.with_cache(tmp_path / "c.json", {"budget": 0.2}, f) == {"acc": 0.9}
    results.with_cache(tmp_path / "c.json", {"budget": 0.3}, f)
    results.with_cache(tmp_path / "c.json", {"budget": 0.2}, f, force=True)
    assert len(calls) == 3


def test_require_artifact_names_the_stage(tmp_path):
    import pytest

    with pytest.raises(FileNotFoundError, match="run stage 01_profiling first.*--only 01"):
        results.require_artifact(tmp_path / "x.csv", "01_profiling")


def test_mean_std():
    assert results.mean_std([1.0, 3.0]) == (2.0, np.std([1.0, 3.0], ddof=1))
    assert results.mean_std([5.0]) == (5.0, 0.0)
