"""Reading checkpoints: the safe unpickler for whole-model checkpoints and state_dict loading for backbones."""
