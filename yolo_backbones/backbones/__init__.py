"""Backbone implementations; importing this package registers every family in the registry."""
from . import edgevit  # noqa: F401
from . import mobileformer  # noqa: F401
