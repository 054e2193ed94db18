"""Install yolo-backbones: the package, the import hook (.pth) and the `yolo-backbones` command."""
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py
from setuptools.command.editable_wheel import editable_wheel

HERE = Path(__file__).parent
PTH = "yolo_backbones.pth"
RESOURCE_FOLDERS = ("models", "data")  # shipped inside the package by a regular (non-editable) build


class BuildPyWithPth(build_py):
    """Also place ``yolo_backbones.pth`` at the root of the wheel, i.e. in site-packages.

    The .pth line imports ``yolo_backbones_autoload`` at interpreter start, which installs the plugin
    as soon as YOLOv5 is imported (so `yolov5 val --weights best.pt` and DDP ranks find it). It works
    for regular and editable (`pip install -e .`) installs alike.
    """

    def run(self) -> None:
        super().run()
        self.copy_file(str(HERE / PTH), str(Path(self.build_lib) / PTH), preserve_mode=False)
        for src, dst in _resource_files(Path(self.build_lib)):
            self.mkpath(str(dst.parent))
            self.copy_file(str(src), str(dst), preserve_mode=False)

    def get_outputs(self, include_bytecode: bool = True) -> list:
        resources = [str(dst) for _, dst in _resource_files(Path(self.build_lib))]
        return super().get_outputs(include_bytecode) + [str(Path(self.build_lib) / PTH)] + resources


def _resource_files(build_lib: Path) -> list[tuple[Path, Path]]:
    """``models/`` and ``data/`` of the checkout -> ``yolo_backbones/_resources/`` in the wheel (see resources.py)."""
    return [(f, build_lib / "yolo_backbones" / "_resources" / f.relative_to(HERE))
            for folder in RESOURCE_FOLDERS for f in sorted((HERE / folder).rglob("*"))
            if f.is_file() and "__pycache__" not in f.parts]


class EditableWheelWithPth(editable_wheel):
    """``pip install -e .``: add ``yolo_backbones.pth`` to the editable wheel as well."""

    def _select_strategy(self, name, tag, build_lib):  # setuptools' hook that writes the editable wheel
        strategy = super()._select_strategy(name, tag, build_lib)
        pth = (HERE / PTH).read_bytes()

        class WithPth:
            def __call__(self, wheel, files, mapping):
                strategy(wheel, files, mapping)
                wheel.writestr(PTH, pth)

            def __enter__(self):
                strategy.__enter__()
                return self

            def __exit__(self, *exc):
                return strategy.__exit__(*exc)

        return WithPth()


# `pip install yolo-backbones[edge]`: converters and Linux runtimes for LiteRT, Core ML, NCNN, ExecuTorch and MNN
# (docs/deployment.md). Versions are the ones tested together with torch 2.14.1 and both hosts.
EDGE = [
    "litert-torch==0.10.*",  # LiteRT (TFLite) conversion (torch.export based)
    "ai-edge-litert==2.3.*",  # LiteRT interpreter with XNNPACK
    "coremltools==9.0",  # Core ML conversion (no runtime on Linux)
    "pnnx==20261020",  # PyTorch -> NCNN; ultralytics asks for 20260526, which cannot convert EfficientFormerV2
    "ncnn==1.0.20261020",  # NCNN runtime, the release matching pnnx
    "executorch==1.5.*",  # ExecuTorch export (XNNPACK) and runtime; needs torch >= 2.13 at run time
    "MNN==3.6.*",  # ultralytics' format=mnn (from its ONNX export)
    "numpy<2.4",  # coremltools 9.0 fails on numpy 2.4 ("only 0-dimensional arrays can be converted ...")
    # litert-torch depends on transformers (only its generative-model examples import it; conversion does not).
    # transformers 5 needs huggingface-hub 2.x, against yolov5==7.0.14's huggingface-hub<0.25, which stays: the 4.48
    # line is the newest that accepts it, and YOLOv5's own hub calls work on 0.24 (tests/test_edge_requirements.py).
    "transformers>=4.44,<4.49",
    "huggingface-hub>=0.20,<0.25",
]

setup(
    name="yolo-backbones",
    version="0.2.0",
    description="EdgeViT, Mobile-Former and EfficientFormer (v1/v2) backbones for Ultralytics YOLOv5, YOLOv8 and YOLO11",
    long_description=(HERE / "README.md").read_text(encoding="utf-8") if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=find_packages(include=["yolo_backbones", "yolo_backbones.*"]),
    py_modules=["yolo_backbones_autoload"],
    cmdclass={"build_py": BuildPyWithPth, "editable_wheel": EditableWheelWithPth},
    install_requires=[
        "torch>=2.6",  # the checkpoint loader relies on torch.load(weights_only=...) semantics and safe globals of 2.6
        "torchvision",
        "yolov5==7.0.14",
        "ultralytics>=8.4",  # the YOLO11 / YOLO26 host (YOLO26 heads appeared in 8.4)
        "setuptools<81",  # yolov5 7.0.14 imports pkg_resources
        "pycocotools>=2.0.6",
        "onnx>=1.14",
        "onnxruntime>=1.16",
        "safetensors>=0.4",  # pretrained weights as served by the Hugging Face Hub
        "huggingface_hub>=0.20",
        "cloudpickle",  # ultralytics hands its trainer to DDP rank processes with it
        "openvino>=2023.1",  # export.py --include openvino, DetectMultiBackend on *_openvino_model/ (convert_model API)
        "PyYAML",
    ],
    extras_require={"test": ["pytest>=7", "timm>=1.0"],  # timm: reference for EfficientFormer parity tests
                    "edge": EDGE,
                    "openvino": ["nncf>=2.14"]},  # OpenVINO INT8 export (export.py --int8, yolo export quantize=8)
    entry_points={"console_scripts": ["yolo-backbones = yolo_backbones.cli:main"]},
)
