"""Pretrained weights by name (yolo_backbones.core.weights.sources): resolution order, formats, errors, table.

No test touches the network: downloads go to a fake or to a loopback HTTP server, the Hugging Face cache
is laid out under tmp_path, and every location comes from environment variables pointing into tmp_path.
"""
from __future__ import annotations

import argparse
import ast
import http.server
import threading
import time
import urllib.error
from pathlib import Path

import pytest
import torch

import yolo_backbones

from helpers import key_shapes, random_state_dict
from yolo_backbones.core.weights import sources as S

safetensors_torch = pytest.importorskip("safetensors.torch")

V2 = "efficientformerv2_s0"
V2_REPO = "timm/efficientformerv2_s0.snap_dist_in1k"


@pytest.fixture(autouse=True)
def env(tmp_path, monkeypatch):
    """Every location in tmp_path, downloads off, and any real download attempt fails the test."""
    for var in (S.WEIGHTS_DIR_ENV, "HF_HUB_OFFLINE", "HF_ENDPOINT", "HUGGINGFACE_HUB_CACHE", "HF_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv(S.OFFLINE_ENV, "1")
    monkeypatch.setenv("NO_PROXY", "*")
    monkeypatch.setenv("no_proxy", "*")

    def no_hub(*args, **kwargs):
        pytest.fail(f"unexpected Hugging Face download {args}")
    original_http = S._http_download

    def loopback_only(url, *args, **kwargs):
        if not url.startswith("http://127.0.0.1:"):
            pytest.fail(f"unexpected download of {url}")
        return original_http(url, *args, **kwargs)
    monkeypatch.setattr(S, "_hf_hub_download", no_hub)
    monkeypatch.setattr(S, "_http_download", loopback_only)
    return tmp_path


def small_sd(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"stem.conv.weight": torch.randn(4, 3, 3, 3, generator=g), "head.bias": torch.randn(5, generator=g)}


def write(path: Path, obj=None) -> Path:
    """torch.save ``obj`` (default a small state dict) to ``path``, or safetensors for a .safetensors path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    obj = small_sd() if obj is None else obj
    if path.suffix == ".safetensors":
        safetensors_torch.save_file(obj, str(path))
    else:
        torch.save(obj, path)
    return path


def hf_cache_file(root: Path, repo: str = V2_REPO, filename: str = "model.safetensors", obj=None,
                  commit: str = "0123abcd") -> Path:
    """Lay out the hub cache as huggingface_hub does: refs/main -> snapshots/<commit>/<file>."""
    repo_dir = root / ("models--" + repo.replace("/", "--"))
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / "main").write_text(commit)
    return write(repo_dir / "snapshots" / commit / filename, obj)


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert sorted(a) == sorted(b)  # safetensors stores keys in its own order
    assert all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------- resolution order
def test_resolution_order_weights_dir_cache_hub_cache_download(env, monkeypatch):
    monkeypatch.setenv(S.WEIGHTS_DIR_ENV, str(env / "mine"))
    monkeypatch.delenv(S.OFFLINE_ENV)
    downloaded = write(env / "downloaded" / "model.safetensors")
    calls = []
    monkeypatch.setattr(S, "_hf_hub_download", lambda repo, name, cache: calls.append((repo, name, cache)) or downloaded)
    name = "efficientformerv2_s0.snap_dist_in1k.safetensors"
    in_dir = write(env / "mine" / name)
    in_cache = write(env / "xdg" / "yolo_backbones" / name)
    in_hub = hf_cache_file(env / "hf")

    assert S.resolve_weights(V2, "timm") == in_dir                       # 1. $YOLO_BACKBONES_WEIGHTS
    in_dir.unlink()
    assert S.resolve_weights(V2, "timm") == in_cache                     # 2. user cache
    in_cache.unlink()
    assert Path(S.resolve_weights(V2, "timm")).resolve() == in_hub.resolve()  # 3. Hugging Face cache
    assert not calls
    in_hub.unlink()
    assert S.resolve_weights(V2, "timm") == downloaded                   # 4. download
    assert calls == [(V2_REPO, "model.safetensors", env / "hf")]


def test_imagenet_tries_its_entries_in_preference_order_within_each_step(env, monkeypatch):
    cache = env / "xdg" / "yolo_backbones"
    timm_file = write(cache / "efficientformer_l1.snap_dist_in1k.safetensors")
    older = write(cache / "efficientformer_l1_300d.pth")
    found = S.locate_weights("efficientformer_l1", "imagenet")
    assert (found.path, found.entry.name, found.entry.key_format) == (timm_file, "timm", "timm")
    best = write(cache / "efficientformer_l1_1000d.pth")
    found = S.locate_weights("efficientformer_l1", "imagenet")
    assert (found.path, found.entry.name, found.entry.key_format) == (best, "official", "official")
    # an earlier step wins over a better file in a later step
    monkeypatch.setenv(S.WEIGHTS_DIR_ENV, str(env / "mine"))
    mine = write(env / "mine" / "efficientformer_l1_300d.pth")
    assert S.resolve_weights("efficientformer_l1", "imagenet") == mine
    assert S.resolve_weights("efficientformer_l1", "official_300d") == mine
    assert S.resolve_weights("efficientformer_l1", "official") == best
    assert older.is_file()


def test_names_are_case_insensitive_and_backbone_spelling_is_tolerant(env):
    f = write(env / "xdg" / "yolo_backbones" / "mobile-former-52m.pth.tar")
    assert S.resolve_weights("Mobile-Former_52M", "ImageNet") == f
    assert S.resolve_weights("mobileformer_52m", "official") == f
    with pytest.raises(ValueError, match="unknown backbone 'resnet50'"):
        S.resolve_weights("resnet50", "imagenet")


@pytest.mark.parametrize("hide_hub", [False, True], ids=["huggingface_hub", "manual-scan"])
def test_hugging_face_cache_offline_with_exact_timm_keys(env, monkeypatch, hide_hub):
    if hide_hub:
        monkeypatch.setitem(__import__("sys").modules, "huggingface_hub", None)
    else:
        pytest.importorskip("huggingface_hub")
    monkeypatch.delenv(S.OFFLINE_ENV)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    sd = random_state_dict(key_shapes("timm_efficientformerv2_s0"))
    snap = hf_cache_file(env / "hf", obj=sd)
    hf_cache_file(env / "hf", filename="pytorch_model.bin")  # safetensors is preferred
    found = S.locate_weights(V2, "imagenet")
    assert found.path.resolve() == snap.resolve() and found.entry.name == "timm"
    loaded = S.read_weights_file(found.path)
    assert_same(loaded, sd)
    assert S.guess_key_format(loaded) == "timm"


def test_hugging_face_cache_pytorch_model_bin(env):
    snap = hf_cache_file(env / "hf", filename="pytorch_model.bin")
    assert Path(S.resolve_weights(V2, "timm")).resolve() == snap.resolve()


def test_hugging_face_cache_of_another_revision_is_not_used(env):
    snap = hf_cache_file(env / "hf")
    (snap.parents[2] / "refs" / "main").write_text("fedcba98")  # main now points at a snapshot not downloaded
    with pytest.raises(S.WeightsDownloadError):
        S.resolve_weights(V2, "timm")


def test_existing_path_and_pathlike_are_used_as_given(env, monkeypatch):
    f = write(env / "ckpt.pth")
    assert S.resolve_weights("edgevit_xxs", f) == f
    assert S.resolve_weights("edgevit_xxs", str(f)) == f
    monkeypatch.chdir(env)
    write(env / "timm")  # a file named like a weights name: an existing file wins
    assert S.resolve_weights(V2, "timm") == Path("timm")


# ---------------------------------------------------------------- downloads
def test_download_falls_back_to_pytorch_model_bin(env, monkeypatch):
    hub_utils = pytest.importorskip("huggingface_hub.utils")
    monkeypatch.delenv(S.OFFLINE_ENV)
    got = write(env / "dl" / "pytorch_model.bin")
    calls = []

    def fake(repo, filename, cache):
        calls.append(filename)
        if filename == "model.safetensors":
            raise hub_utils.EntryNotFoundError("404 Client Error: Entry Not Found")
        return got
    monkeypatch.setattr(S, "_hf_hub_download", fake)
    found = S.locate_weights("efficientformer_l3", "imagenet")  # official missing -> timm is downloaded
    assert (found.path, found.entry.name, calls) == (got, "timm", ["model.safetensors", "pytorch_model.bin"])


def test_failed_download_is_one_line_naming_file_and_target(env, monkeypatch):
    monkeypatch.delenv(S.OFFLINE_ENV)

    def fake(repo, filename, cache):
        raise ConnectionError("Max retries exceeded\nwith url: ...")
    monkeypatch.setattr(S, "_hf_hub_download", fake)
    with pytest.raises(S.WeightsDownloadError) as err:
        S.resolve_weights(V2, "timm")
    msg = str(err.value)
    assert "\n" not in msg and err.value.__cause__ is None and err.value.__suppress_context__
    assert "Max retries exceeded" in msg and V2_REPO in msg
    assert str(env / "xdg" / "yolo_backbones" / "efficientformerv2_s0.snap_dist_in1k.safetensors") in msg


@pytest.mark.parametrize("flag", [S.OFFLINE_ENV, "HF_HUB_OFFLINE"])
def test_offline_missing_names_file_directories_and_next_step(env, monkeypatch, flag):
    monkeypatch.delenv(S.OFFLINE_ENV)
    monkeypatch.setenv(flag, "1")
    monkeypatch.setenv(S.WEIGHTS_DIR_ENV, str(env / "mine"))
    with pytest.raises(S.WeightsDownloadError) as err:
        S.resolve_weights(V2, "imagenet")
    msg = str(err.value)
    assert isinstance(err.value, FileNotFoundError) and "\n" not in msg
    assert f"{flag}=1" in msg and V2_REPO in msg
    for place in (env / "mine", env / "xdg" / "yolo_backbones", env / "hf"):
        assert str(place) in msg
    assert str(env / "mine" / "eformer_s0_450.pth") in msg  # told to save the file there
    assert "https://drive.google.com/file/d/1PXb7b9pv9ZB4cfkRkYEdwgWuVwvEiazq" in msg


def test_official_only_weights_are_never_downloaded(env, monkeypatch):
    monkeypatch.delenv(S.OFFLINE_ENV)  # online: still nothing may be fetched for a Google-Drive file
    with pytest.raises(S.WeightsNotFoundError) as err:
        S.resolve_weights("mobileformer_52m", "imagenet")
    msg = str(err.value)
    assert not isinstance(err.value, S.WeightsDownloadError) and "\n" not in msg
    assert "https://drive.google.com/file/d/1ekq_FPl57gjIlYX16Ll0nBuEyB0pjgGt" in msg
    assert str(env / "xdg" / "yolo_backbones" / "mobile-former-52m.pth.tar") in msg


class _Server:
    """Loopback HTTP server; ``routes`` maps a path to (status, body, headers, delay seconds)."""

    def __init__(self, routes: dict[str, tuple[int, bytes, dict[str, str], float]]):
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                status, body, headers, delay = routes.get(self.path, (404, b"not found", {}, 0.0))
                time.sleep(delay)
                try:
                    self.send_response(status)
                    for k, v in {"Content-Length": str(len(body)), **headers}.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:  # the client gave up (timeout test)
                    pass

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    servers = []

    def start(routes):
        servers.append(_Server(routes))
        return servers[-1]
    yield start
    for s in servers:
        s.close()


def _sha(data: bytes) -> str:
    import hashlib
    return hashlib.sha256(data).hexdigest()


def test_http_download_success_and_sha256(env, server):
    body = b"x" * 3000
    srv = server({"/ok": (200, body, {"X-Linked-ETag": f'"{_sha(body)}"'}, 0.0),
                  "/bad": (200, body, {"X-Linked-ETag": f'"{_sha(b"other")}"'}, 0.0)})
    dest = env / "dl" / "file.bin"
    assert S._http_download(srv.url + "/ok", dest) == dest and dest.read_bytes() == body
    with pytest.raises(ValueError, match="SHA-256 mismatch"):
        S._http_download(srv.url + "/ok", env / "dl" / "pinned.bin", sha256=_sha(b"pinned"))
    with pytest.raises(ValueError, match="SHA-256 mismatch"):
        S._http_download(srv.url + "/bad", env / "dl" / "bad.bin")
    assert sorted(p.name for p in (env / "dl").iterdir()) == ["file.bin"]  # no partial files left


def test_http_download_server_error_and_timeout(env, server, monkeypatch):
    monkeypatch.setattr(S, "HTTP_TIMEOUT", 0.3)
    srv = server({"/err": (500, b"boom", {}, 0.0), "/slow": (200, b"late", {}, 1.5)})
    with pytest.raises(urllib.error.HTTPError):
        S._http_download(srv.url + "/err", env / "dl" / "a")
    start = time.monotonic()
    with pytest.raises((TimeoutError, urllib.error.URLError)):
        S._http_download(srv.url + "/slow", env / "dl" / "b")
    assert time.monotonic() - start < 1.2
    assert not list((env / "dl").iterdir())


def test_download_without_huggingface_hub_uses_plain_http(env, server, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "huggingface_hub", None)
    monkeypatch.delenv(S.OFFLINE_ENV)
    sd = small_sd(3)
    tmp = write(env / "src" / "w.bin", sd)
    srv = server({f"/{V2_REPO}/resolve/main/pytorch_model.bin": (200, tmp.read_bytes(), {}, 0.0)})
    monkeypatch.setenv("HF_ENDPOINT", srv.url)
    path = S.resolve_weights(V2, "timm")  # model.safetensors is a 404 there, so the .bin is taken
    assert path == env / "xdg" / "yolo_backbones" / "efficientformerv2_s0.snap_dist_in1k.bin"
    assert_same(S.read_weights_file(path), sd)
    srv.close()
    assert S.resolve_weights(V2, "timm") == path  # now step 2, no server needed


def test_download_without_huggingface_hub_server_error(env, server, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "huggingface_hub", None)
    monkeypatch.delenv(S.OFFLINE_ENV)
    srv = server({f"/{V2_REPO}/resolve/main/model.safetensors": (503, b"down", {}, 0.0)})
    monkeypatch.setenv("HF_ENDPOINT", srv.url)
    with pytest.raises(S.WeightsDownloadError, match="HTTP Error 503") as err:
        S.resolve_weights(V2, "timm")
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------- names and errors
def test_unknown_name_lists_the_names_of_that_backbone():
    with pytest.raises(S.WeightsNotFoundError, match="names: imagenet, official, timm, official_300d"):
        S.resolve_weights("efficientformer_l1", "offical")
    with pytest.raises(S.WeightsNotFoundError, match="names: imagenet, official$"):
        S.resolve_weights("mobileformer_508m", "timm")


@pytest.mark.parametrize("variant", ["xxs", "xs", "s"])
def test_edgevit_has_no_weights(variant):
    assert S.weights_names(f"edgevit_{variant}") == []
    with pytest.raises(S.WeightsNotFoundError, match="no released pretrained weights"):
        S.resolve_weights(f"edgevit_{variant}", "imagenet")


def test_missing_path(env):
    with pytest.raises(S.WeightsNotFoundError, match="weights file not found: .*nope.pth"):
        S.resolve_weights(V2, str(env / "nope.pth"))
    with pytest.raises(S.WeightsNotFoundError):
        S.read_weights_file(env / "nope.pth")


# ---------------------------------------------------------------- formats
FORMATS = {
    "raw.pth": lambda sd: sd,
    "model.pth": lambda sd: {"model": sd, "optimizer": {"lr": 0.1}, "epoch": 299, "args": argparse.Namespace(lr=1e-3)},
    "state_dict.pth.tar": lambda sd: {"state_dict": sd, "arch": "mobile_former_52m", "epoch": 449},
    "ddp.pt": lambda sd: {"state_dict": {f"module.{k}": v for k, v in sd.items()}},
    "model_over_ema.pth": lambda sd: {"model": sd, "model_ema": {k: v + 1 for k, v in sd.items()}},
    "ema_only.pth": lambda sd: {"state_dict_ema": sd, "epoch": 3},
    "raw.bin": lambda sd: sd,
    "raw.safetensors": lambda sd: sd,
    "prefixed.safetensors": lambda sd: {f"module.{k}": v for k, v in sd.items()},
}


@pytest.mark.parametrize("name", list(FORMATS))
def test_formats(env, name):
    sd = small_sd(1)
    assert_same(S.read_weights_file(write(env / name, FORMATS[name](sd))), sd)


def test_safetensors_is_recognised_by_content_and_bypasses_pickle_loader(env, monkeypatch):
    sd = small_sd(2)
    f = write(env / "w.safetensors", sd).rename(env / "w.bin")  # e.g. renamed by hand
    monkeypatch.setattr(S, "load_checkpoint", lambda p, **kw: pytest.fail("pickle loader used"))
    assert_same(S.read_weights_file(f), sd)


def test_pickle_loader_is_used_for_torch_files(env, monkeypatch):
    seen = []
    f = write(env / "w.pth", {"model": small_sd()})
    real = S.load_checkpoint
    monkeypatch.setattr(S, "load_checkpoint", lambda p, **kw: seen.append(p) or real(p, **kw))
    out = S.read_weights_file(f)
    assert seen == [f] and list(out) == list(small_sd())


def _truncate(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def _text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


BAD = {
    "empty.pth": lambda p: _text(p, ""),
    "text.pth": lambda p: _text(p, "<html>Google Drive - Virus scan warning</html>"),  # saved a web page
    "truncated.pth": lambda p: _truncate(write(p)),
    "truncated.safetensors": lambda p: _truncate(write(p)),
    "no_tensors.pth": lambda p: write(p, {"epoch": 3, "arch": "x"}),
    "empty_dict.pth": lambda p: write(p, {}),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_files_raise_one_line_weights_file_error(env, name):
    path = BAD[name](env / name)
    with pytest.raises(S.WeightsFileError) as err:
        S.read_weights_file(path)
    msg = str(err.value)
    assert str(path) in msg and "\n" not in msg
    assert any(fix in msg for fix in ("delete it", "pass a")), msg


def test_untrusted_pickle_is_refused_without_running_it(env):
    ran = []

    class Evil:
        def __reduce__(self):
            return (ran.append, ("ran",))
    f = env / "evil.pth"
    torch.save({"model": small_sd(), "x": Evil()}, f)
    with pytest.raises(S.WeightsFileError, match=r"Refusing to load .*getattr.*Nothing from the file was executed") as err:
        S.read_weights_file(f)
    assert ran == [] and "\n" not in str(err.value)


# ---------------------------------------------------------------- catalogue and table
def _registered_backbones() -> list[str]:
    try:
        from yolo_backbones.core.registry import backbone_names
    except ImportError:  # layout before the core/ restructuring
        from yolo_backbones.registry import backbone_names
    return backbone_names()


def test_catalogue_covers_every_registered_backbone():
    registered = _registered_backbones()
    assert sorted(S.available_weights()) == sorted(registered)
    for bb, entries in S.available_weights().items():
        family = bb.rsplit("_", 1)[0]
        assert bool(entries) == (family != "edgevit")
        assert all(e.backbone == bb for e in entries)
        assert [e.name for e in entries][:1] in ([], ["official"])
        assert any(e.downloadable for e in entries) == family.startswith("efficientformer")
        assert S.weights_names(bb) == ([] if not entries else ["imagenet", *(e.name for e in entries)])


def test_table_lists_every_backbone_and_entry():
    table = S.weights_table_markdown()
    rows = [r for r in table.splitlines() if r.startswith("| `")]
    for bb, entries in S.available_weights().items():
        mine = [r for r in rows if r.startswith(f"| `{bb}` |")]
        assert len(mine) == max(1, len(entries)), bb
        for e, row in zip(entries, mine):
            assert f"`{e.name}`" in row and (e.hf_repo or e.filename) in row
    assert all(r.count("|") == 7 for r in table.splitlines())


def test_sources_imports_nothing_else_from_the_package_at_top_level():
    """Only the restricted loader (which imports nothing of the package back): no import cycles."""
    tree = ast.parse(Path(S.__file__).read_text())
    top = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            top.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module == "safe_load":
                continue
            assert node.level == 0, "relative import at module level"
            top.add(node.module.split(".")[0])
    assert top <= {"__future__", "argparse", "collections", "hashlib", "os", "pickle", "re", "urllib", "dataclasses",
                   "pathlib", "typing", "torch"}, top


def test_default_pickle_reader_is_the_restricted_loader(env, monkeypatch):
    """Torch pickles go through ``load_checkpoint`` (training checkpoints with their ``argparse.Namespace``
    options load; nothing else reads pickles)."""
    sd = small_sd()
    f = write(env / "train_ckpt.pth", {"model": sd, "opt": argparse.Namespace(lr=0.01), "epoch": 3})
    seen = []
    real = S.load_checkpoint
    assert real is yolo_backbones.load_checkpoint
    monkeypatch.setattr(S, "load_checkpoint", lambda p, **kw: seen.append(p) or real(p, **kw))
    assert_same(S.read_weights_file(f), sd)
    assert seen == [f]
