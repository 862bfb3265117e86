"""The build's promises at import time: the extension says which CUDA it was built with, and a torch of
another CUDA major version is refused with a clear message."""

import pytest
import torch

from wsmooth_ext.core import ops


def test_the_extension_records_its_cuda_version():
    assert ops._C is not None, "the compiled extension did not load"
    built = ops._C.cuda_version
    assert isinstance(built, str)
    assert built == "" or built == torch.version.cuda  # "" for a CPU-only build


@pytest.mark.parametrize("built,running,ok", [
    ("", "12.4", True), ("12.4", None, True), ("12.4", "12.8", True), ("13.0", "13.0", True),
    ("12.4", "13.0", False), ("11.8", "12.1", False)])
def test_cuda_major_version_mismatch_is_refused(built, running, ok):
    if ok:
        ops.check_cuda_versions(built, running)
    else:
        with pytest.raises(RuntimeError, match=rf"built with CUDA {built}.*rebuild"):
            ops.check_cuda_versions(built, running)
