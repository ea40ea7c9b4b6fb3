"""Triton kernels and their thin launchers (grid, strides, dtype checks); installed as ``fastdiode.kernels``.

Nothing here knows autograd or configs: ``fastdiode.ops`` wraps these launchers. Importing a submodule
imports triton, so set ``TRITON_INTERPRET=1`` first when the kernels must run on CPU tensors.
"""
