"""Real bytes on disk and a real runtime for compressed models (issue 16).

* :func:`pack` / :func:`unpack`: a versioned, checksummed file holding every state_dict tensor in its smallest
  lossless packed form (sparse index + codebook + bit-packed codes, ternary, raw fp32/fp16), rebuilt bit-exactly;
* :func:`packed_size_report`: per-tensor bytes of that file (and of a zstd pass);
* :func:`export_onnx`, :func:`ort_logits`, :func:`ort_latency_ms`: the model run by onnxruntime on the CPU;
  :func:`export_int8`: its static int8 QDQ form (onnxruntime's integer kernels);
  :func:`sparse_linear_latency`: a ``torch.sparse_csr`` Linear against the dense one;
* :func:`deploy_row`, :func:`ort_argmax_agreement`: claimed vs real for one model (the leaderboard's columns);
* :mod:`.stage`: the same for one manifest row, as stage 10 (``notebooks/10_deploy.py``) runs it.
"""

from .container import MAGIC, VERSION, load, pack, save, unpack
from .measure import deploy_row, ort_argmax_agreement
from .sizes import packed_size_report, zstd_bytes
from .runtime import export_int8, export_onnx, ort_latency_ms, ort_logits, ort_session, sparse_linear_latency

__all__ = [
    "MAGIC",
    "VERSION",
    "pack",
    "unpack",
    "save",
    "load",
    "packed_size_report",
    "zstd_bytes",
    "export_onnx",
    "export_int8",
    "ort_session",
    "ort_logits",
    "ort_latency_ms",
    "sparse_linear_latency",
    "deploy_row",
    "ort_argmax_agreement",
]
