"""Plotting without font downloads: YOLOv5's ``check_pil_font`` (ultralytics' ``check_font``, which a clone's
Annotator uses, is made offline by the ultralytics host: :mod:`yolo_backbones.hosts.ultralytics.offline`)."""
from __future__ import annotations

import types
from pathlib import Path
from typing import Any

from ...common.patching import LOG, replace, say_once


def _patch_plots(plots: types.ModuleType, g: types.ModuleType) -> None:
    from PIL import ImageFont

    log = getattr(g, "LOGGER", LOG)

    def check_pil_font(font: str | Path = getattr(g, "FONT", "Arial.ttf"), size: int = 10) -> Any:  # noqa: B008
        """A local TrueType font, else PIL's built-in font; never download.

        Why: the original downloads Arial.ttf when missing and, offline, fails the plotting threads
        (train_batch*.jpg, val_batch*.jpg). The returned font also has ``getsize`` again: the host's
        Annotator calls it and Pillow >= 10 removed it.
        """
        font = Path(font)
        local = font if font.exists() else g.CONFIG_DIR / font.name
        try:
            result = ImageFont.truetype(str(local) if local.exists() else font.name, size)
        except OSError:
            say_once(f"font:{font.name}", f"{font.name} not found locally; not downloading it, plots use "
                                          "PIL's built-in font", log)
            try:
                result = ImageFont.load_default(size=size)
            except TypeError:  # Pillow < 10.1: fixed-size bitmap font
                result = ImageFont.load_default()
        if not hasattr(result, "getsize"):
            result.getsize = lambda text: tuple(result.getbbox(text)[2:4])  # (width, height) from the origin
        return result

    replace(plots, "check_pil_font", lambda orig: check_pil_font)
