"""featlab's command line interface (``featlab``)."""
