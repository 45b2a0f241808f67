"""Name -> factory tables for models, datasets and optimizers.

``names`` is torch-free (the suite schema validates against it); ``models``,
``datasets`` and ``optimizers`` build the torch objects.
"""
