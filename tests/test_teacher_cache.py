"""Cached distillation teacher (methods/teacher_cache.py): same logits, losses and weights as running it."""

import copy
from types import SimpleNamespace

import pytest
import torch
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from compresslib.energy import bilinear as B
from compresslib.energy.analytic import AnalyticDevice
from compresslib.energy.profile import sample_widths
from compresslib.methods import ecc
from compresslib.methods.teacher_cache import CachedTeacher, cached_teacher, dataset_inputs
from compresslib.models import create_model
from compresslib.train import fit


def _loaders(n=130, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n + 40, 1, 32, 32, generator=g)
    y = torch.randint(0, 10, (n + 40,), generator=g)
    train = Subset(TensorDataset(X, y), list(range(20, n + 20)))  # offsets: indices must be composed right
    dl = DataLoader(train, batch_size=50, shuffle=True, generator=torch.Generator().manual_seed(seed))
    return SimpleNamespace(train=dl, val=None, test=DataLoader(TensorDataset(X[:40], y[:40]), batch_size=40))


def _teacher(seed=0):
    torch.manual_seed(seed)
    return ecc._frozen(create_model("lenet5"))


def test_cached_logits_are_the_teachers_and_other_inputs_run_it():
    loaders, t = _loaders(), _teacher()
    c = cached_teacher(t, loaders.train)
    assert isinstance(c, CachedTeacher) and len(c.inputs) == 130
    with torch.no_grad():
        for x, _ in loaders.train:  # shuffled batches of 50 and a last one of 30 (130 rows)
            assert torch.equal(c(x), t(x))
        assert c.hits == 130 and c.misses == 0
        x = next(iter(loaders.train))[0]
        for other in (x + 1e-6, torch.flip(x, dims=[3]), x[:, :, :16, :16], loaders.test.dataset.tensors[0][:20]):
            if other.shape[-1] == 32:
                assert torch.equal(c(other), t(other))
            else:
                with pytest.raises(RuntimeError):  # the teacher itself is run (and fails on this shape)
                    c(other)
        assert c.hits == 130 and c.misses == 50 + 50 + 50 + 20


def test_only_plain_tensor_datasets_are_cached():
    class Augmented(Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return torch.rand(1, 32, 32), 0

    t = _teacher()
    assert dataset_inputs(Augmented()) is None
    assert cached_teacher(t, DataLoader(Augmented(), batch_size=2)) is t
    assert dataset_inputs(TensorDataset(torch.zeros(3, 2, dtype=torch.long))) is None
    with pytest.raises(ValueError, match="float32"):
        CachedTeacher(t, torch.zeros(3, 1, 32, 32, dtype=torch.float64))


def test_distillation_with_the_cache_gives_identical_losses_and_weights():
    loaders, t = _loaders(), _teacher()
    torch.manual_seed(1)
    student = create_model("lenet5")
    runs = []
    for teacher in (t, cached_teacher(t, loaders.train)):
        m = copy.deepcopy(student)
        out = fit(
            m,
            loaders,
            2,
            torch.optim.Adam(m.parameters(), lr=1e-3),
            teacher=teacher,
            kd_weight=0.5,
            kd_kind="mse",
            seed=3,
            progress=False,
        )
        runs.append((out, m))
    (o1, m1), (o2, m2) = runs
    assert [h["train_loss"] for h in o1["history"]] == [h["train_loss"] for h in o2["history"]]
    for (k, a), (_, b) in zip(m1.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(a, b), k


def test_run_ecc_with_and_without_the_cache_is_identical(monkeypatch):
    dev = AnalyticDevice("lenet5")
    W = sample_widths(dev.S, 200, seed=1)
    est = B.fit(W, [dev.cost(w) for w in W], dev.S, net="lenet5", scale=dev.cost(dev.S))
    loaders = _loaders()
    torch.manual_seed(0)
    dense = create_model("lenet5")
    kw = dict(max_epochs=30, training=ecc.Training(finetune_epochs=1, seed=0))
    cached = ecc.run_ecc(dense, loaders, est, 0.6, **kw)
    monkeypatch.setattr(ecc, "cached_teacher", lambda teacher, loader: teacher)
    plain = ecc.run_ecc(dense, loaders, est, 0.6, **kw)
    assert cached["reached"] and cached["widths"] == plain["widths"]
    assert cached["iterations"] == plain["iterations"] and cached["accuracy"] == plain["accuracy"]
    for a, b in zip(cached["model"].state_dict().values(), plain["model"].state_dict().values()):
        assert torch.equal(a, b)
