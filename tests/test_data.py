"""The long-tailed data: counts, split, samplers, augmentation, the offline archive, bad input."""

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from hls import data
from hls.data import (CIFAR10_CLASSES, Augmenter, DataError, load_dataset, long_tail_counts,
                      long_tail_indices, make_sampler, stratified_split)

# The published CIFAR-10-LT profiles (LDAM-DRW, BBN); the totals are the known set sizes.
LT_COUNTS = {
    1: [5000] * 10,
    10: [5000, 3871, 2997, 2320, 1796, 1391, 1077, 834, 645, 500],
    50: [5000, 3237, 2096, 1357, 878, 568, 368, 238, 154, 100],
    100: [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50],
    200: [5000, 2775, 1540, 854, 474, 263, 146, 81, 45, 25],
}
TOTALS = {1: 50000, 10: 20431, 50: 13996, 100: 12406, 200: 11203}


@pytest.mark.parametrize("ratio", sorted(LT_COUNTS))
def test_long_tail_counts_are_exact(ratio):
    counts = long_tail_counts(5000, 10, ratio)
    assert counts == LT_COUNTS[ratio]
    assert sum(counts) == TOTALS[ratio]


def test_offline_archive_has_torchvision_class_order_and_counts():
    images = load_dataset("cifar10")
    assert images.classes == CIFAR10_CLASSES
    assert images.train_images.shape == (50000, 32, 32, 3) and images.train_images.dtype == np.uint8
    assert np.bincount(images.train_labels).tolist() == [5000] * 10
    assert np.bincount(images.test_labels).tolist() == [1000] * 10


@pytest.mark.parametrize("ratio", [100, 200])
def test_long_tailed_subset_of_real_labels(ratio):
    labels = load_dataset("cifar10").train_labels
    keep = long_tail_indices(labels, ratio, seed=0)
    assert np.bincount(labels[keep]).tolist() == LT_COUNTS[ratio]
    assert len(np.unique(keep)) == len(keep)
    assert np.array_equal(keep, long_tail_indices(labels, ratio, seed=0))
    assert not np.array_equal(keep, long_tail_indices(labels, ratio, seed=1))


def test_split_is_stratified_and_disjoint():
    labels = np.repeat(np.arange(10), LT_COUNTS[100])
    train, val = stratified_split(labels, 0.2, seed=3)
    assert len(np.intersect1d(train, val)) == 0
    assert len(train) + len(val) == len(labels)
    for c, n in enumerate(LT_COUNTS[100]):
        n_val = int((labels[val] == c).sum())
        assert n_val >= 1 and (labels[train] == c).sum() >= 1
        assert abs(n_val - 0.2 * n) <= 1
    again = stratified_split(labels, 0.2, seed=3)
    assert np.array_equal(train, again[0]) and np.array_equal(val, again[1])


def test_loaded_split_counts(lt_data):
    total = (lt_data.train.class_counts + lt_data.val.class_counts).tolist()
    assert total == LT_COUNTS[100]
    assert lt_data.train.images.dtype == torch.uint8
    assert tuple(lt_data.train.images.shape[1:]) == (3, 32, 32)


def _class_frequencies(name, counts, draws=200_000, batch=1000):
    labels = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    sampler = make_sampler(name, labels, batch, seed=0)
    seen = torch.cat([labels[next(sampler)] for _ in range(draws // batch)])
    return torch.bincount(seen, minlength=len(counts)).double() / len(seen)


@pytest.mark.parametrize("name", ["instance", "class_balanced", "reversed"])
def test_sampler_class_frequencies(name):
    counts = LT_COUNTS[100]
    n = torch.tensor(counts, dtype=torch.float64)
    target = {"instance": n / n.sum(),
              "class_balanced": torch.full((10,), 0.1, dtype=torch.float64),
              "reversed": (1 / n) / (1 / n).sum()}[name]
    freq = _class_frequencies(name, counts)
    # within 5 binomial standard deviations of the target for every class (200,000 draws)
    sd = torch.sqrt(target * (1 - target) / 200_000)
    assert torch.all((freq - target).abs() <= 5 * sd + 1e-4), (freq, target)


def test_class_balanced_is_uniform_within_a_class():
    labels = torch.tensor([0] * 50 + [1] * 5)
    sampler = make_sampler("class_balanced", labels, 50, seed=0)
    seen = torch.cat([next(sampler) for _ in range(2000)])
    within = torch.bincount(seen[labels[seen] == 0], minlength=55)[:50].double()
    assert within.min() > 0.7 * within.mean() and within.max() < 1.3 * within.mean()


def test_instance_sampler_covers_every_image_once_per_pass():
    labels = torch.arange(100) % 10
    sampler = make_sampler("instance", labels, 10, seed=0)
    seen = torch.cat([next(sampler) for _ in range(10)])
    assert sorted(seen.tolist()) == list(range(100))


def test_sampler_state_round_trip():
    labels = torch.arange(100) % 10
    a = make_sampler("instance", labels, 16, seed=0)
    next(a)
    state = a.state_dict()
    expected = [next(a) for _ in range(10)]
    b = make_sampler("instance", labels, 16, seed=99)
    b.load_state_dict(state)
    assert all(torch.equal(x, next(b)) for x in expected)


def test_augmentation_shape_alignment_and_determinism():
    # image i is filled with the value i, so every output pixel of image i is either i or padding
    n = 64
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 3, 32, 32).contiguous()
    aug = Augmenter("cpu", seed=0)
    out = aug(images)
    assert out.shape == (n, 3, 32, 32) and out.dtype == torch.float32
    own, pad = aug.normalize(images)[:, :, :1, :1], aug.normalize(torch.zeros_like(images))[:, :, :1, :1]
    assert torch.all((out == own) | (out == pad))
    assert torch.equal(out, Augmenter("cpu", seed=0)(images))
    assert not torch.equal(out, Augmenter("cpu", seed=1)(images))


def test_augmentation_really_flips_and_crops():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(1, 256, (256, 3, 32, 32), dtype=torch.uint8, generator=g)
    aug = Augmenter("cpu", seed=0)
    out = aug(images)
    plain = aug.normalize(images)
    flipped = aug.normalize(images.flip(3))
    same = [(torch.equal(out[i], plain[i]), torch.equal(out[i], flipped[i])) for i in range(256)]
    # a crop at offset (4, 4) without flip is the identity: 1/81 * 1/2 of the images
    assert sum(s for s, _ in same) < 20
    zero = aug.normalize(torch.zeros(1, 3, 1, 1, dtype=torch.uint8))[0, :, 0, 0]
    has_padding = [(out[i].permute(1, 2, 0) == zero).all(-1).any().item() for i in range(256)]
    assert sum(has_padding) > 200     # shifted crops show the zero padding
    # the flip: an image cropped at the centre and flipped equals its mirror image
    assert any(f for _, f in same)


def test_augmentation_without_padding_only_flips():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(1, 256, (256, 3, 32, 32), dtype=torch.uint8, generator=g)
    aug = Augmenter("cpu", seed=0, pad=0)
    out = aug(images)
    plain, flipped = aug.normalize(images), aug.normalize(images.flip(3))
    is_plain = (out == plain).flatten(1).all(1)
    is_flipped = (out == flipped).flatten(1).all(1)
    assert torch.all(is_plain | is_flipped)
    assert 80 < int(is_flipped.sum()) < 176          # about half, 256 fair coins


def test_damaged_cache_is_decoded_again(tmp_path, monkeypatch):
    monkeypatch.setenv("HLS_HOME", str(tmp_path))
    folder = tmp_path / "cifar10"
    for split in ("train", "test"):
        for i, cls in enumerate(CIFAR10_CLASSES):
            (folder / split / cls).mkdir(parents=True)
            from PIL import Image
            Image.new("RGB", (32, 32), (i, 0, 0)).save(folder / split / cls / "0001.png")
    first = load_dataset("cifar10", source=str(folder))
    (tmp_path / "cache" / "cifar10.npz").write_bytes(b"truncated")
    again = load_dataset("cifar10", source=str(folder))
    assert np.array_equal(first.train_images, again.train_images)
    assert again.classes == CIFAR10_CLASSES


def test_bad_inputs_raise_one_line_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("HLS_HOME", str(tmp_path))  # no cache: force reading the source
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("cifar10", source=str(tmp_path / "missing.tar.gz"))
    corrupt = tmp_path / "corrupt.tar.gz"
    corrupt.write_bytes(b"this is not a tar archive")
    with pytest.raises(DataError, match="not a readable"):
        load_dataset("cifar10", source=str(corrupt))
    bad_jpeg = tmp_path / "badjpeg.tar"
    with tarfile.open(bad_jpeg, "w") as tar:
        for split in ("train", "test"):
            for cls in CIFAR10_CLASSES:
                info = tarfile.TarInfo(f"cifar10/{split}/{cls}/0001.jpg")
                info.size = 4
                tar.addfile(info, io.BytesIO(b"junk"))
    with pytest.raises(DataError, match="corrupt image"):
        load_dataset("cifar10", source=str(bad_jpeg))
    with pytest.raises(DataError, match="ratio must be >= 1"):
        long_tail_counts(5000, 10, 0.5)
    labels = torch.arange(10)
    with pytest.raises(DataError, match="larger than the split"):
        make_sampler("instance", labels, 11, seed=0)
    with pytest.raises(DataError, match="unknown sampler"):
        make_sampler("oversample", labels, 2, seed=0)


def test_relative_data_source_is_read_from_the_repository_root(tmp_path, monkeypatch):
    # the book executes chapters in book/chapters; the README's relative path must still work
    root = Path(data.__file__).resolve().parents[1]
    monkeypatch.chdir(tmp_path)
    assert data.source_path("README.md") == root / "README.md"
    assert data.source_path("no/such/archive.tar.gz") == Path("no/such/archive.tar.gz")
    (tmp_path / "local.tar.gz").write_bytes(b"")
    assert data.source_path("local.tar.gz") == Path("local.tar.gz")  # the working dir wins


def test_run_seeds_share_one_data_set():
    """Two run seeds with one data seed train on the same images (the spread over seeds is
    initialisation and sampling, not a different data set); another data seed draws others."""
    from hls import experiments, runs
    first, second = (experiments.config("darts", "smoke", seed) for seed in (0, 1))
    assert first.data_seed == second.data_seed == 0

    def data(c):
        return runs._data(c.dataset, c.ratio, c.val_fraction, c.data_seed, "cpu", c.test_per_class)
    a, b, other = data(first), data(second), data(first.replace(data_seed=1))
    for split in ("train", "val"):
        assert torch.equal(getattr(a, split).images, getattr(b, split).images)
        assert torch.equal(getattr(a, split).labels, getattr(b, split).labels)
    assert not torch.equal(a.train.images, other.train.images)
    assert torch.equal(a.train.class_counts, other.train.class_counts)
