"""Shared test fixtures."""

import pytest


@pytest.fixture(scope="module")
def nncf_reference_quantizers():
    """Run NNCF's PyTorch fake-quantizers with its pure-torch reference functions.

    NNCF otherwise compiles a C++ extension on first use (1-2 minutes on a 2-core CI machine); the
    reference functions compute the same quantization, only slower on large models. Used by the
    test modules that quantize PyTorch models (``pytestmark`` there).
    """
    pytest.importorskip("nncf")
    from nncf.torch.quantization.extensions import QuantizedFunctionsCPU
    from nncf.torch.quantization.reference import ReferenceQuantizedFunctions

    saved = QuantizedFunctionsCPU._loaded_namespace
    QuantizedFunctionsCPU._loaded_namespace = ReferenceQuantizedFunctions
    yield
    QuantizedFunctionsCPU._loaded_namespace = saved
