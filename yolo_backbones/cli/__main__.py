"""``python -m yolo_backbones.cli ...`` is the ``yolo-backbones`` command."""
import sys

from .commands import main

sys.exit(main())
