"""PKDN networks (need torch). ``from pkdn_edge.models import create_model``."""

from .pkdn import NUM_PRIOR_CHANNELS, PKDN, PRESETS, PKDNConfig, create_model, model_config
from .reparam import from_plain, reparameterize

__all__ = [
    "NUM_PRIOR_CHANNELS", "PKDN", "PRESETS", "PKDNConfig", "create_model", "from_plain", "model_config",
    "reparameterize",
]
