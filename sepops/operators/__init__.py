"""All separation operators, one module each. Importing this package registers them."""
from . import (
    demucs,  # noqa: F401
    ensemble,  # noqa: F401
    hpss,  # noqa: F401
    ica,  # noqa: F401
    nmf,  # noqa: F401
    oracle,  # noqa: F401
    repet,  # noqa: F401
    roformer,  # noqa: F401
    unet,  # noqa: F401
)
