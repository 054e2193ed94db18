"""OpenVINO conversion and inference, host-free, on today's ``openvino`` package (2023.1 and newer).

* convert: an ONNX file is converted with ``openvino.convert_model`` and saved with
  ``openvino.save_model(..., compress_to_fp16=False)`` as ``<out_dir>/<stem>.xml`` (+ ``.bin``), beside
  ``<stem>.yaml`` holding ``stride`` and ``names``; static or dynamic shapes follow the ONNX file;
* inference: ``openvino.Core().compile_model`` on the CPU with ``INFERENCE_PRECISION_HINT = f32``.
  Why explicit: OpenVINO's CPU plugin defaults to bf16 (or f16) inference on CPUs that have it
  (AVX512-BF16, AMX), which moves outputs by ~3e-4 of their range; f32 keeps them within ~1e-6 of
  PyTorch. :data:`INFERENCE_PRECISION` is the default of :func:`compile_openvino`.

``import openvino`` initialises Intel's telemetry (a client-id file under ``~/intel`` and a background
upload). :func:`import_openvino` hides the telemetry client from the process first, and OpenVINO falls
back to its built-in no-op stub, in line with the plugin's "nothing leaves the machine" rule.
The hosts route their flags here: YOLOv5 through ``hosts/yolov5/compat/openvino.py``.
"""
from __future__ import annotations

import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

__all__ = ["INFERENCE_PRECISION", "MODEL_DIR_SUFFIX", "InputShapeError", "OpenVINOUnavailableError",
           "hide_openvino_telemetry", "import_openvino", "convert_onnx_to_openvino", "compile_openvino",
           "find_openvino_xml", "read_metadata", "write_metadata"]

INFERENCE_PRECISION = "f32"  # OpenVINO's INFERENCE_PRECISION_HINT; see the module docstring
MODEL_DIR_SUFFIX = "_openvino_model"


class OpenVINOUnavailableError(ImportError):
    """The ``openvino`` package is missing or too old (the CLI prints this as one line)."""


class InputShapeError(ValueError):
    """An image batch whose shape a statically exported OpenVINO model does not take (one line from the CLI)."""


def hide_openvino_telemetry() -> None:
    """Make ``import openvino_telemetry`` fail in this process, so OpenVINO uses its no-op telemetry stub.

    A no-op if the telemetry client is already imported (then OpenVINO already initialised it).
    """
    if "openvino_telemetry" not in sys.modules:
        sys.modules["openvino_telemetry"] = None  # type: ignore[assignment]  # `import` raises ImportError


def import_openvino() -> types.ModuleType:
    """Import and return the ``openvino`` package with its telemetry off (:func:`hide_openvino_telemetry`).

    Raises ImportError with an install hint if the package is missing or older than 2023.1.
    """
    hide_openvino_telemetry()
    try:
        import openvino
    except ImportError as exc:
        raise OpenVINOUnavailableError("OpenVINO export and inference need the `openvino` package (2023.1 or "
                                       "newer): pip install openvino") from exc
    if not hasattr(openvino, "convert_model"):
        raise OpenVINOUnavailableError(f"openvino {getattr(openvino, '__version__', '?')} is too old: the plugin "
                                       "needs 2023.1 or newer (convert_model / save_model): pip install -U openvino")
    return openvino


# ------------------------------------------------------------------------------------------------ files
def write_metadata(path: Path, metadata: dict[str, Any]) -> None:
    """Write YOLOv5's model metadata YAML: ``stride`` (int) and ``names`` (``{index: name}`` or a list).

    Values are coerced to plain ints/strings so ``yaml.safe_dump`` accepts them and
    ``DetectMultiBackend`` reads back what ``export.py`` had (``names[0]`` works for both forms).
    """
    data = dict(metadata)
    if "stride" in data:
        data["stride"] = int(data["stride"])
    names = data.get("names")
    if isinstance(names, dict):
        data["names"] = {int(k): str(v) for k, v in names.items()}
    elif names is not None:
        data["names"] = [str(v) for v in names]
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def read_metadata(xml: Path) -> tuple[int | None, dict | list | None]:
    """``(stride, names)`` from ``<stem>.yaml`` beside ``xml`` (else ``metadata.yaml``); ``(None, None)`` if absent."""
    for path in (xml.with_suffix(".yaml"), xml.parent / "metadata.yaml"):
        if path.is_file():
            data = yaml.safe_load(path.read_text(errors="ignore")) or {}
            stride = data.get("stride")
            return (int(stride) if stride is not None else None), data.get("names")
    return None, None


def find_openvino_xml(weights: str | Path) -> Path | None:
    """The ``.xml`` of an OpenVINO model given as its ``*_openvino_model`` folder or as the ``.xml`` itself.

    Returns None when ``weights`` names no OpenVINO model (another format); raises FileNotFoundError
    when it names one that is not there.
    """
    path = Path(str(weights).strip())
    if path.suffix.lower() == ".xml":
        if not path.is_file():
            raise FileNotFoundError(f"OpenVINO model {path} not found")
        return path
    if MODEL_DIR_SUFFIX not in path.name:
        return None
    if not path.is_dir():
        raise FileNotFoundError(f"OpenVINO model folder {path} not found (export one with "
                                "`export.py --weights best.pt --include openvino`)")
    xmls = sorted(path.glob("*.xml"))
    own = path / f"{path.name.removesuffix(MODEL_DIR_SUFFIX)}.xml"  # what export_openvino writes
    if own in xmls:
        return own
    if len(xmls) == 1:
        return xmls[0]
    raise FileNotFoundError(f"{path} holds {'no' if not xmls else len(xmls)} .xml files; expected one "
                            f"({own.name}); pass the .xml to use")


def convert_onnx_to_openvino(onnx_file: Path, out_dir: Path, metadata: dict[str, Any] | None = None,
                             transform: Callable[[Any], Any] | None = None) -> Path:
    """Convert an ONNX model to OpenVINO IR: ``out_dir/<onnx stem>.xml`` + ``.bin`` (+ ``.yaml`` metadata).

    Weights stay in the ONNX file's precision (``compress_to_fp16=False``); the input keeps the ONNX
    file's shape, static or with dynamic batch/height/width, and is marked NCHW. ``transform`` (e.g. INT8
    quantization, :func:`yolo_backbones.deploy.int8.openvino.int8_transform`) maps the converted
    ``openvino.Model`` before it is saved. Returns the .xml path.
    """
    ov = import_openvino()
    onnx_file, out_dir = Path(onnx_file), Path(out_dir)
    if not onnx_file.is_file():
        raise FileNotFoundError(f"{onnx_file} not found: the OpenVINO model is converted from the ONNX export, "
                                "which failed or was not run")
    model = ov.convert_model(str(onnx_file))
    image = model.get_parameters()[0]
    if image.get_layout().empty:
        image.set_layout(ov.Layout("NCHW"))  # lets OpenVINO tools (get_batch, preprocessing) find the batch axis
    if transform is not None:
        model = transform(model)
    out_dir.mkdir(parents=True, exist_ok=True)
    xml = out_dir / f"{onnx_file.stem}.xml"
    ov.save_model(model, str(xml), compress_to_fp16=False)
    if metadata is not None:
        write_metadata(xml.with_suffix(".yaml"), metadata)
    return xml


def compile_openvino(model: str | Path | Any, device: str = "CPU", precision: str = INFERENCE_PRECISION,
                     threads: int | None = None) -> Any:
    """Compile an OpenVINO model (.xml path or ``openvino.Model``) with an explicit inference precision.

    Args:
        model: the IR ``.xml`` (the ``.bin`` beside it) or an in-memory ``openvino.Model``.
        device: OpenVINO device name.
        precision: ``INFERENCE_PRECISION_HINT`` (``"f32"`` default; ``"bf16"``/``"f16"`` are faster where the
            CPU supports them and move outputs by ~1e-4..1e-3 of their range).
        threads: ``INFERENCE_NUM_THREADS`` (None: OpenVINO's default, all cores).
    Returns:
        ``openvino.CompiledModel``; call it with a float32 NCHW array, index the result by its outputs.
    """
    ov = import_openvino()
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": precision}
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    return ov.Core().compile_model(model if not isinstance(model, (str, Path)) else str(model), device, config)
