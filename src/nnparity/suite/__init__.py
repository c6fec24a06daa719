"""The packaged equivalence suite: ``pytest --pyargs nnparity.suite --nnparity-backend MODULE:CLASS``.

It checks a backend against the reference (torch by default) on one small network per
activation, loss, reduction, dtype and SGD option, and then on networks a hypothesis search
draws (``--nnparity-examples N``, when hypothesis is installed). A backend that does not
support a network raises ``NotImplementedError`` from its constructor: that case is skipped,
with the backend's reason. A class attribute ``nnparity_supports``, a dict of
:func:`nnparity.strategies.network_specs` options (``activations=[...]``, ``losses=[...]``,
``allow_nesterov=False``, ...), narrows the search to what the backend supports.
"""
