"""HiFiC: Mentzer, Toderici, Tschannen, Agustsson, "High-Fidelity Generative Image
Compression", NeurIPS 2020 (arXiv 2006.09965).

layers (ChannelNorm, residual and spectral-norm blocks) -> networks (E, G, D) and hyperprior
(mean-scale, on tensorflow-compression) -> model (the Keras model: codec contract and training
objective).
"""
