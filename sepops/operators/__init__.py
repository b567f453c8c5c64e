"""All separation operators, one module each. Importing this package registers them."""
from . import hpss  # noqa: F401
from . import ica  # noqa: F401
from . import nmf  # noqa: F401
from . import oracle  # noqa: F401
from . import repet  # noqa: F401
from . import unet  # noqa: F401
