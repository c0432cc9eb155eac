"""Build hook for the optional C accelerator of vis_eval's RLE work (everything else is in pyproject.toml).

``Extension(optional=True)``: when no C compiler (or no Python headers) is present, the build of the
extension fails with a warning and the install goes on; vis_eval then takes its pure NumPy path.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "vis_eval._rle_accel",
            sources=["vis_eval/_rle_accel.c"],
            extra_compile_args=["-O3"],
            optional=True,
        )
    ]
)
