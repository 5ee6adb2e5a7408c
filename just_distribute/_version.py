"""The version of just_distribute: the one place it is written.

``pyproject.toml`` reads it at build time (``[tool.setuptools.dynamic]``), so the wheel's
metadata, ``just_distribute.__version__`` and ``just-distribute --version`` always agree.
0.2.0 and later are this line; the 0.1.x releases under the same name are an earlier,
unrelated, Ray-based library.
"""

__version__ = "0.2.0"
