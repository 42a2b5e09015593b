from medtl.models.network import Network, build_network  # noqa: F401
from medtl.models import archs  # noqa: F401  (registers the architectures)
