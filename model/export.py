"""Export the real-time inference path (features -> front end -> encoder -> classifier).

Three formats, all taking (audio [B, T] float32, lengths [B] int64) and
returning (speech probability [B], sentiment probabilities [B, 3]):

* TorchScript (``torch.jit.trace``): runs from C++/libtorch without Python.
* ``torch.export`` program (``.pt2``): the current PyTorch path, dynamic batch and length.
* ONNX (``torch.onnx.export(dynamo=True)``, needs the ``onnx`` and ``onnxscript``
  packages): for onnxruntime / TensorRT deployments.

Exported modules need at least ``MIN_SAMPLES`` samples per row (shorter
windows: zero-pad the array and pass the true length -- padding does not
change results). The decoder is not exported: real-time inference never runs it.

Usage: ``python -m model.export --checkpoint model.pt --out-dir exported/``
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import torch

from model.inference import VoiceToneModel, load

MIN_SAMPLES = 1600  # 0.1 s; the traced STFT/conv shapes are valid from 1152 samples up
MAX_SAMPLES = 16000 * 120


def _example(model: VoiceToneModel, batch: int = 2, seconds: float = 5.0):
    n = int(model.sample_rate * seconds)
    gen = torch.Generator().manual_seed(0)
    audio = torch.randn(batch, n, generator=gen) * 0.1
    lengths = torch.tensor([n] + [n // 2] * (batch - 1), dtype=torch.long)
    return audio, lengths


def _cpu_net(model: VoiceToneModel):
    return model.net.to("cpu").eval() if model.device.type != "cpu" else model.net.eval()


def export_torchscript(model: VoiceToneModel, path: str | Path) -> Path:
    net = _cpu_net(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings about shape-derived Python ints: valid above MIN_SAMPLES
        traced = torch.jit.trace(net, _example(model), check_trace=False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    traced.save(str(path))
    return path


def _dynamic_shapes():
    batch = torch.export.Dim("batch", min=1, max=4096)
    samples = torch.export.Dim("samples", min=MIN_SAMPLES, max=MAX_SAMPLES)
    return ({0: batch, 1: samples}, {0: batch})


def export_program(model: VoiceToneModel, path: str | Path) -> Path:
    ep = torch.export.export(_cpu_net(model), _example(model), dynamic_shapes=_dynamic_shapes())
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.export.save(ep, str(path))
    return path


def export_onnx(model: VoiceToneModel, path: str | Path) -> Path:
    try:
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise RuntimeError("ONNX export needs the onnx and onnxscript packages; use TorchScript instead") from exc
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(_cpu_net(model), _example(model), str(path), dynamo=True,
                      dynamic_shapes=_dynamic_shapes(), input_names=["audio", "lengths"],
                      output_names=["speech_probability", "sentiment"], verbose=False)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", help="classifier-stage checkpoint (default: the bundled model)")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--formats", default="torchscript,program,onnx")
    args = p.parse_args(argv)
    model = load(args.checkpoint, device="cpu")
    out = Path(args.out_dir)
    makers = {"torchscript": (export_torchscript, "voicetone.ts.pt"), "program": (export_program, "voicetone.pt2"),
              "onnx": (export_onnx, "voicetone.onnx")}
    for fmt in args.formats.split(","):
        fn, name = makers[fmt]
        print(f"{fmt}: {fn(model, out / name)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
