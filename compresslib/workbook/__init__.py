"""The workbook's orchestration: it runs the stage notebooks and reports on them, it computes no number.

    python -m compresslib.workbook.reproduce --profile smoke --only 00   # run stages (papermill), with a cache
    python -m compresslib.workbook.report                                # artifacts/index.html
    python -m compresslib.workbook.results_doc --artifacts artifacts     # docs/results.md

``reproduce`` (the runner), ``dryrun`` (its ``--dry-run``), ``stage_params`` (a notebook's ``parameters``
cell and the profile checks), ``provenance`` (manifests, cache keys, the lock, summary.json), ``report``
and ``results_doc`` sit on top of the library: they import ``compresslib``, no module outside this
subpackage imports them (tests/test_imports.py checks that), and their source is not part of
``results.library_digest()``, so editing them invalidates no trained model or cached sweep.
"""

import argparse


def command_line(module: str, doc: str | None) -> argparse.ArgumentParser:
    """The argument parser of ``python -m compresslib.workbook.<module>``, its help the module's docstring."""
    return argparse.ArgumentParser(
        prog=f"python -m {__name__}.{module}", description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
