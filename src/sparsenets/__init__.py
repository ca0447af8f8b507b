"""sparsenets: a reproducible replication of PHEW and 'Deconstructing the Structure of Sparse Neural Networks'."""

__version__ = "0.1.0"
