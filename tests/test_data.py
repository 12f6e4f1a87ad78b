import numpy as np
import pytest
import torch

from compresslib import data
from fakedata import make_imagenet_tree


def test_mnist5k_split_sizes_and_stratification():
    L = data.get_loaders("mnist5k", batch_size=32, seed=0)
    assert (len(L.train.dataset), len(L.val.dataset), len(L.test.dataset)) == (3600, 400, 1000)
    y_test = L.test.dataset.tensors[1].numpy()
    assert np.bincount(y_test).tolist() == [100] * 10  # 500 per class x 0.2
    x, y = next(iter(L.train))
    assert x.shape == (32, 1, 28, 28) and x.dtype == torch.float32
    assert abs(float(L.test.dataset.tensors[0].mean())) < 0.2  # normalised


def test_splits_are_disjoint_and_fixed():
    a = data.get_loaders("digits", seed=0)
    b = data.get_loaders("digits", seed=7)
    assert a.train.dataset.indices == b.train.dataset.indices  # split does not depend on the run seed
    assert not set(a.train.dataset.indices) & set(a.val.dataset.indices)
    assert torch.equal(a.test.dataset.tensors[0], b.test.dataset.tensors[0])


def test_shuffle_is_seeded():
    first = lambda s: next(iter(data.get_loaders("digits", seed=s).train))[1]
    assert torch.equal(first(3), first(3))
    assert not torch.equal(first(3), first(4))


def test_resize_and_subset():
    L = data.get_loaders("digits", image_size=16, subset=200, seed=1)
    assert L.image_size == 16 and len(L.train.dataset) == 200
    assert next(iter(L.train))[0].shape[-2:] == (16, 16)
    assert len(np.unique(data.targets_of(L.train.dataset))) == 10


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(ValueError, match="unknown dataset 'mnist6k'.*digits.*mnist5k"):
        data.get_loaders("mnist6k")


@pytest.mark.parametrize("name", ["mnist", "cifar10", "imagenet"])
def test_missing_data_names_the_prep_command(tmp_path, name):
    with pytest.raises(FileNotFoundError, match=r"data_prep/.*\.py"):
        data.get_dataset(name, "train", root=tmp_path)


def test_imagefolder_from_generated_tree(tmp_path):
    make_imagenet_tree(tmp_path, wnids=("n01", "n02"))
    ds = data.get_dataset("imagenet", "test", root=tmp_path, image_size=32)
    x, y = ds[0]
    assert len(ds) == 4 and x.shape == (3, 32, 32) and y == 0


def test_bad_split_and_fraction():
    with pytest.raises(ValueError, match="split must be"):
        data.get_dataset("digits", "validation")
    with pytest.raises(ValueError, match="fraction"):
        data.get_loaders("digits", val_fraction=1.5)
