"""CIFAR-10-LT: loading, the long-tailed subset, the split, samplers and batched augmentation.

Everything after loading works on uint8 tensors that live on the training device: a batch is an
index tensor, augmentation is a handful of tensor ops on the whole batch (airbench style), and no
per-image Python or DataLoader worker sits on the hot path.

Where the images come from is a setting (`source` argument or the HLS_DATA_SOURCE environment
variable): "torchvision" downloads as usual; a path to an image-folder tree
(<root>/{train,test}/<class>/*.jpg) or to its .tar.gz is the offline route. The decoded arrays are
cached once under the data directory, so later loads take a fraction of a second.
"""

from __future__ import annotations

import io
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")
# Per-channel statistics of the CIFAR-10 training set (as in the DARTS code), on the 0-255 scale.
CIFAR_MEAN = (0.4914 * 255, 0.4822 * 255, 0.4465 * 255)
CIFAR_STD = (0.2470 * 255, 0.2435 * 255, 0.2616 * 255)


class DataError(ValueError):
    """Bad data input; the message says what is wrong and how to fix it, in one line."""


def data_dir() -> Path:
    """Where caches and run stores live: HLS_HOME, else data/ in the source checkout."""
    if os.environ.get("HLS_HOME"):
        return Path(os.environ["HLS_HOME"])
    return Path(__file__).resolve().parents[1] / "data"


def source_path(source: str) -> Path:
    """HLS_DATA_SOURCE as a path. A relative one is read from the working directory, else from
    the repository root: Jupyter Book runs each chapter in book/chapters, and the README's
    `export HLS_DATA_SOURCE=../shared/...` is relative to the root."""
    path = Path(source).expanduser()
    if path.is_absolute() or path.exists():
        return path
    from_root = Path(__file__).resolve().parents[1] / path
    return from_root if from_root.exists() else path


# --------------------------------------------------------------------------------------------
# Loading the full data set once into uint8 arrays


@dataclass(frozen=True)
class ImageSet:
    """A whole data set in memory: images (N, 32, 32, 3) uint8 and labels (N,) int64."""
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    classes: tuple[str, ...]


def load_dataset(name: str = "cifar10", source: str | None = None, cache: bool = True) -> ImageSet:
    """Load CIFAR-10 (or CIFAR-100) from the configured source, decoding at most once."""
    if name not in ("cifar10", "cifar100"):
        raise DataError(f"unknown data set {name!r}; use 'cifar10' or 'cifar100'")
    source = source or os.environ.get("HLS_DATA_SOURCE") or "torchvision"
    cache_file = data_dir() / "cache" / f"{name}.npz"
    if cache and cache_file.exists():
        try:
            with np.load(cache_file) as z:
                return ImageSet(z["train_images"], z["train_labels"], z["test_images"],
                                z["test_labels"], tuple(str(c) for c in z["classes"]))
        except (OSError, ValueError, KeyError, EOFError):  # a damaged cache: decode again
            cache_file.unlink(missing_ok=True)
    if source == "torchvision":
        images = _load_torchvision(name)
    else:
        images = _load_image_folder(source_path(source), name)
    if cache:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(f".{os.getpid()}.tmp.npz")  # one per concurrent writer
        np.savez(tmp, train_images=images.train_images, train_labels=images.train_labels,
                 test_images=images.test_images, test_labels=images.test_labels,
                 classes=np.array(images.classes))
        os.replace(tmp, cache_file)  # atomic: a killed decode never leaves a half cache
    return images


def _load_torchvision(name: str) -> ImageSet:
    import torchvision
    root = data_dir() / "torchvision"
    cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
    try:
        train = cls(root, train=True, download=True)
        test = cls(root, train=False, download=True)
    except Exception as exc:  # network errors come in many types
        raise DataError(f"could not download {name} with torchvision ({type(exc).__name__}); "
                        "set HLS_DATA_SOURCE to an offline copy (image folder or .tar.gz)") from exc
    return ImageSet(train.data, np.asarray(train.targets, dtype=np.int64),
                    test.data, np.asarray(test.targets, dtype=np.int64), tuple(train.classes))


def _load_image_folder(path: Path, name: str) -> ImageSet:
    """Decode <root>/{train,test}/<class>/<file>.jpg from a folder or a .tar(.gz) archive."""
    from PIL import Image

    if not path.exists():
        raise DataError(f"data source {str(path)!r} does not exist; set HLS_DATA_SOURCE to the "
                        "CIFAR image-folder tree or its .tar.gz, or to 'torchvision' to download")
    files: dict[str, dict[str, list[bytes]]] = {"train": {}, "test": {}}

    def add(member: str, read) -> None:
        parts = member.strip("/").split("/")
        if len(parts) >= 3 and parts[-3] in files and parts[-1].lower().endswith((".jpg", ".png")):
            files[parts[-3]].setdefault(parts[-2], []).append((parts[-1], read()))

    try:
        if path.is_dir():
            for f in sorted(path.rglob("*")):
                if f.is_file():
                    add(f.relative_to(path).as_posix(), f.read_bytes)
        else:
            with tarfile.open(path) as tar:
                for m in tar:
                    if m.isfile():
                        add(m.name, lambda m=m: tar.extractfile(m).read())
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"data source {str(path)!r} is not a readable folder or tar archive "
                        f"({exc}); re-copy it or point HLS_DATA_SOURCE elsewhere") from exc

    classes = tuple(sorted(files["train"]))
    expected = 10 if name == "cifar10" else 100
    if len(classes) != expected or sorted(files["test"]) != list(classes):
        raise DataError(f"data source {str(path)!r} holds {len(classes)} train classes, "
                        f"not the {expected} of {name}; expected <root>/train/<class>/*.jpg "
                        "and <root>/test/<class>/*.jpg")
    out = []
    for split in ("train", "test"):
        images, labels = [], []
        for label, cls in enumerate(classes):
            for _, blob in sorted(files[split][cls]):  # file order fixes which image is which
                try:
                    img = Image.open(io.BytesIO(blob)).convert("RGB")
                except Exception as exc:
                    raise DataError(f"corrupt image in {split}/{cls} of {str(path)!r} ({exc}); "
                                    "re-copy the data source") from exc
                images.append(np.asarray(img, dtype=np.uint8))
                labels.append(label)
        out += [np.stack(images), np.asarray(labels, dtype=np.int64)]
    return ImageSet(out[0], out[1], out[2], out[3], classes)


# --------------------------------------------------------------------------------------------
# The long-tailed subset and the stratified split


def long_tail_counts(n_max: int, num_classes: int, ratio: float) -> list[int]:
    """Per-class counts of the exponential profile used by LDAM-DRW and BBN."""
    if not ratio >= 1:
        raise DataError(f"imbalance ratio must be >= 1 (got {ratio}); use 1 for the balanced set")
    return [int(n_max * (1 / ratio) ** (c / (num_classes - 1))) for c in range(num_classes)]


def long_tail_indices(labels: np.ndarray, ratio: float, seed: int) -> np.ndarray:
    """Indices of a long-tailed subset: class c keeps a seeded random n_c of its images."""
    num_classes = int(labels.max()) + 1
    n_max = int(np.bincount(labels).max())
    rng = np.random.default_rng(seed)
    keep = []
    for c, n in enumerate(long_tail_counts(n_max, num_classes, ratio)):
        members = np.flatnonzero(labels == c)
        keep.append(np.sort(rng.choice(members, size=n, replace=False)))
    return np.concatenate(keep)


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int):
    """Split positions 0..N-1 into train/val, each class keeping >= 1 image on both sides."""
    if not 0 < val_fraction < 1:
        raise DataError(f"val_fraction must be in (0, 1) (got {val_fraction})")
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        if len(members) < 2:
            raise DataError(f"class {c} has {len(members)} image(s), too few to split; "
                            "lower the imbalance ratio")
        n_val = min(max(1, round(len(members) * val_fraction)), len(members) - 1)
        val.append(members[:n_val])
        train.append(members[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


@dataclass
class Split:
    """One part of the data on the device: uint8 images (N, 3, 32, 32) and int64 labels."""
    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def class_counts(self) -> torch.Tensor:
        return torch.bincount(self.labels, minlength=self.num_classes)


@dataclass
class LongTailData:
    train: Split
    val: Split
    test: Split
    classes: tuple[str, ...]


def load_long_tailed(name: str = "cifar10", ratio: float = 100, val_fraction: float = 0.2,
                     seed: int = 0, device: str | torch.device = "cpu",
                     source: str | None = None, subset: int | None = None) -> LongTailData:
    """The paper's data: long-tailed train set, 80/20 stratified train/val, balanced test set.

    `subset` keeps only the first `subset` test images per class (for fast smoke runs).
    """
    full = load_dataset(name, source)
    lt = long_tail_indices(full.train_labels, ratio, seed)
    tr, va = stratified_split(full.train_labels[lt], val_fraction, seed)
    test_keep = np.arange(len(full.test_labels))
    if subset is not None:
        test_keep = np.concatenate([np.flatnonzero(full.test_labels == c)[:subset]
                                    for c in range(len(full.classes))])

    def to_split(images: np.ndarray, labels: np.ndarray) -> Split:
        x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).to(device)
        return Split(x, torch.from_numpy(labels).to(device), len(full.classes))

    return LongTailData(
        train=to_split(full.train_images[lt[tr]], full.train_labels[lt[tr]]),
        val=to_split(full.train_images[lt[va]], full.train_labels[lt[va]]),
        test=to_split(full.test_images[test_keep], full.test_labels[test_keep]),
        classes=full.classes,
    )


# --------------------------------------------------------------------------------------------
# Samplers: infinite streams of index batches, with state that a checkpoint can hold


class Sampler:
    """Base: a seeded stream of index batches into one split."""

    def __init__(self, labels: torch.Tensor, batch_size: int, seed: int):
        n = len(labels)
        if not 0 < batch_size <= n:
            raise DataError(f"batch size {batch_size} is larger than the split ({n} images); "
                            "lower the batch size or the imbalance ratio")
        self.labels = labels.cpu()
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed)

    def __iter__(self):
        return self

    def __next__(self) -> torch.Tensor:
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


class InstanceSampler(Sampler):
    """Uniform over images: walks seeded random permutations, reshuffled at each pass."""

    def __init__(self, labels, batch_size, seed):
        super().__init__(labels, batch_size, seed)
        self.order = torch.randperm(len(self.labels), generator=self.generator)
        self.position = 0

    def __next__(self) -> torch.Tensor:
        if self.position + self.batch_size > len(self.order):  # drop the ragged end of a pass
            self.order = torch.randperm(len(self.labels), generator=self.generator)
            self.position = 0
        batch = self.order[self.position:self.position + self.batch_size]
        self.position += self.batch_size
        return batch

    def state_dict(self):
        return {**super().state_dict(), "order": self.order.clone(), "position": self.position}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.order, self.position = state["order"].clone(), state["position"]


class ClassWeightedSampler(Sampler):
    """Draw a class from `class_probs`, then an image uniformly within it (with replacement)."""

    def __init__(self, labels, batch_size, seed, class_probs: torch.Tensor):
        super().__init__(labels, batch_size, seed)
        self.by_class = torch.argsort(self.labels, stable=True)  # image indices grouped by class
        counts = torch.bincount(self.labels)
        self.counts = counts
        self.starts = torch.cumsum(counts, 0) - counts
        self.class_probs = class_probs.double() / class_probs.sum()

    def __next__(self) -> torch.Tensor:
        cls = torch.multinomial(self.class_probs, self.batch_size, replacement=True,
                                generator=self.generator)
        within = (torch.rand(self.batch_size, generator=self.generator, dtype=torch.float64)
                  * self.counts[cls]).long()
        return self.by_class[self.starts[cls] + within]


def class_balanced_sampler(labels, batch_size, seed):
    """Eq. (12): every class equally likely, then uniform within the class."""
    counts = torch.bincount(labels.cpu())
    return ClassWeightedSampler(labels, batch_size, seed, (counts > 0).double())


def reversed_sampler(labels, batch_size, seed):
    """BBN's reversed sampler: class probability proportional to 1 / n_c."""
    counts = torch.bincount(labels.cpu()).double()
    return ClassWeightedSampler(labels, batch_size, seed, torch.where(counts > 0, 1 / counts, 0))


SAMPLERS = {
    "instance": InstanceSampler,
    "class_balanced": class_balanced_sampler,
    "reversed": reversed_sampler,
}


def make_sampler(name: str, labels: torch.Tensor, batch_size: int, seed: int) -> Sampler:
    if name not in SAMPLERS:
        raise DataError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
    return SAMPLERS[name](labels, batch_size, seed)


# --------------------------------------------------------------------------------------------
# Batched augmentation on the device


class Augmenter:
    """Zero padding (`pad` pixels) + random 32x32 crop, random horizontal flip, normalisation.

    Works on a whole uint8 batch at once with a seeded generator on the batch's device.
    """

    def __init__(self, device: torch.device | str, seed: int, pad: int = 4):
        self.device = torch.device(device)
        self.pad = pad
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.mean = torch.tensor(CIFAR_MEAN, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(CIFAR_STD, device=self.device).view(1, 3, 1, 1)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        return (images.float() - self.mean) / self.std

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        n, _, h, w = images.shape
        p = self.pad
        padded = torch.nn.functional.pad(images, (p, p, p, p))
        dy, dx = torch.randint(0, 2 * p + 1, (2, n, 1), device=self.device,
                               generator=self.generator)
        flip = torch.rand(n, 1, device=self.device, generator=self.generator) < 0.5
        cols = torch.arange(w, device=self.device)
        cols = torch.where(flip, w - 1 - cols, cols) + dx          # flip = read columns reversed
        rows = torch.arange(h, device=self.device) + dy
        batch = torch.arange(n, device=self.device).view(n, 1, 1, 1)
        chans = torch.arange(3, device=self.device).view(1, 3, 1, 1)
        crops = padded[batch, chans, rows.view(n, 1, h, 1), cols.view(n, 1, 1, w)]
        return self.normalize(crops)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
