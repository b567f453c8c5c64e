"""All separation operators, one module each. Importing this package registers them."""
from . import oracle  # noqa: F401
