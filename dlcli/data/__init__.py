"""Data: one face over the sources dlcli reads, each a module of its own.

    loaded.py   Loaded, what every source returns: whole splits as CPU tensors
    toy.py      2-D point sets generated in-process (spirals, moons, circles, xor)
    builtin.py  torchvision's image sets (MNIST, Fashion-MNIST, CIFAR-10), found, downloaded, decoded
    folders.py  users' images in ImageFolder layout, scanned with scan.py
    tables.py   users' CSV tables and .npz arrays
    cache.py    the uint8 cache of decoded images
    bundle.py   the splits on the training device and the batches drawn from them

A data option names its loader by `_target_` (a source module's load_* function). The library
takes the resident data through this face; dlcli predict's inputs reuse the loaders' public
decode_all, read_rows and is_number, so new images and rows are read as the training data was.
"""

import importlib

# name -> the module that defines it; loaded when first asked for, so that importing one source
# module (builtin's path checks, before torch) does not import torch through this face
_HOMES = {
    "Loaded": "dlcli.data.loaded",
    **{
        name: "dlcli.data.bundle"
        for name in (
            "DataBundle",
            "Split",
            "batches_per_epoch",
            "crop_and_flip",
            "data_shape",
            "eval_batches",
            "load_data",
            "mixing",
            "sequence_shape",
            "share",
            "train_batches",
        )
    },
}
__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'dlcli.data' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
