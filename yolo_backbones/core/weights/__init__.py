"""Reading weights files: checkpoints as data (``safe_load``: inert records, models rebuilt from config and
tensors), the checks of values from files (``metadata``), the plugin's layers rebuilt without a config
(``plugin_layers``), official / timm state dicts for backbones (``state_dict``) and weights names (``sources``)."""
