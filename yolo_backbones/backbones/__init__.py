"""Backbone implementations; importing this package registers every family in the registry."""
from . import edgevit  # noqa: F401
from . import mobileformer  # noqa: F401
from . import efficientformer  # noqa: F401
from . import efficientformer_v2  # noqa: F401
