"""Read the golden Hugging Face ``pytorch_model-*.bin`` shards without torch.

glm-core's tests run in an environment without torch, yet must start from the golden HF weights. A
torch checkpoint is a zip archive: ``*/data.pkl`` pickles the state dict, each tensor pointing at a raw
storage file ``*/data/<key>``. This reader rebuilds float16/float32 tensors as numpy arrays.
"""

import json
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np

_STORAGE_DTYPES = {"HalfStorage": np.float16, "FloatStorage": np.float32, "BFloat16Storage": None,
                   "LongStorage": np.int64, "IntStorage": np.int32}


def _rebuild_tensor(storage, offset, size, stride, *_):
    array = storage[offset:]
    itemsize = array.dtype.itemsize
    return np.lib.stride_tricks.as_strided(array, shape=size, strides=[s * itemsize for s in stride]).copy()


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, archive: zipfile.ZipFile, root: str):
        super().__init__(file)
        self.archive, self.root = archive, root

    def find_class(self, module, name):
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch" and name in _STORAGE_DTYPES:
            return name
        if module == "collections" and name == "OrderedDict":
            return OrderedDict
        raise pickle.UnpicklingError(f"unexpected {module}.{name} in a weights file")

    def persistent_load(self, pid):
        _, storage_type, key, _, _ = pid
        data = self.archive.read(f"{self.root}/data/{key}")
        return np.frombuffer(data, dtype=_STORAGE_DTYPES[storage_type])


def read_torch_bin(path) -> dict:
    with zipfile.ZipFile(path) as archive:
        pickle_name = next(n for n in archive.namelist() if n.endswith("data.pkl"))
        root = pickle_name[: -len("/data.pkl")]
        with archive.open(pickle_name) as f:
            return dict(_Unpickler(f, archive, root).load())


def read_hf_folder(folder) -> dict:
    """All tensors of a sharded HF folder (``pytorch_model.bin.index.json`` + shards)."""
    folder = Path(folder)
    index = json.loads((folder / "pytorch_model.bin.index.json").read_text())
    tensors = {}
    for shard in sorted(set(index["weight_map"].values())):
        tensors.update(read_torch_bin(folder / shard))
    return tensors


def read_mindformers_state(folder) -> dict:
    """The tensors of a sharded HF folder under MindFormers' names (arrays in their stored dtype);
    ``inv_freq`` buffers dropped, as the MindSpore checkpoint drops them."""
    from glm_core.names import mindformers_name

    state = {}
    for name, array in read_hf_folder(folder).items():
        target = mindformers_name(name)
        if target is not None:
            state[target] = array
    return state
