import os

os.environ.setdefault("COMPRESSLIB_PROGRESS", "0")
os.environ.setdefault("MPLBACKEND", "Agg")

import torch  # noqa: E402

torch.set_num_threads(int(os.environ.get("COMPRESSLIB_THREADS", "2")))
