"""Training (PyTorch, optional extra ``train``). Never imported by compress/decompress."""
