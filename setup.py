"""Where the wheel's packages come from (the rest of the packaging is in pyproject.toml).

The library (``cure``) and the command line (``cure_cli``) live under ``src/``; the checkout keeps the pipelines and
their components at its top (``pipelines/``, ``components/``), and the wheel installs them as ``cure_pipelines`` and
``cure_components``: top-level names of their own, which no other distribution's ``pipelines`` or ``components``
package can shadow or overwrite. pyproject.toml alone cannot map a folder to another package name while also finding
the packages under ``src/``.
"""

from setuptools import find_packages, setup

setup(
    packages=find_packages("src") + ["cure_pipelines", "cure_components"],
    package_dir={"": "src", "cure_pipelines": "pipelines", "cure_components": "components"},
)
