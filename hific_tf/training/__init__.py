"""Training HiFiC: photo sets built offline, the input pipeline and the `hific train` driver."""
