#!/usr/bin/env python3
"""Writes a GGUF file with random weights and the exact shapes and metadata of a real model, for
speed and memory measurements at real sizes without real weights (speed does not depend on the
weight values). Weights are F16, norms F32; `hearth quantize` then makes the Q4_0 / Q8_0 / Q4_K_M
/ ... files the way llama.cpp's quantizer would. The vocabulary is byte-level (GPT-2 style: the 256
byte tokens, a few control tokens, then filler tokens up to the real vocabulary size), so any text
tokenizes. Needs numpy.

    scripts/synth-gguf.py SHAPE OUT.gguf [--layers N] [--seed S]
    scripts/synth-gguf.py --list
"""
import argparse
import struct
import sys

import numpy as np

# Shapes of real models (from their config.json / GGUF metadata).
SHAPES = {
    "smollm2-135m": dict(arch="llama", d=576, layers=30, ff=1536, heads=9, kv=3, hd=64, vocab=49152,
                         ctx=8192, rope=100000.0, tied=True),
    "qwen2.5-coder-0.5b": dict(arch="qwen2", d=896, layers=24, ff=4864, heads=14, kv=2, hd=64,
                               vocab=151936, ctx=32768, rope=1000000.0, tied=True, bias=True),
    "qwen2.5-coder-1.5b": dict(arch="qwen2", d=1536, layers=28, ff=8960, heads=12, kv=2, hd=128,
                               vocab=151936, ctx=32768, rope=1000000.0, tied=True, bias=True),
    "qwen2.5-coder-7b": dict(arch="qwen2", d=3584, layers=28, ff=18944, heads=28, kv=4, hd=128,
                             vocab=152064, ctx=32768, rope=1000000.0, tied=False, bias=True),
    "llama-3.2-1b": dict(arch="llama", d=2048, layers=16, ff=8192, heads=32, kv=8, hd=64,
                         vocab=128256, ctx=131072, rope=500000.0, tied=True),
    "llama-3.2-3b": dict(arch="llama", d=3072, layers=28, ff=8192, heads=24, kv=8, hd=128,
                         vocab=128256, ctx=131072, rope=500000.0, tied=True),
    "phi-3-mini": dict(arch="phi3", d=3072, layers=32, ff=8192, heads=32, kv=32, hd=96,
                       vocab=32064, ctx=4096, rope=10000.0, tied=False),
    "gemma-3-270m": dict(arch="gemma3", d=640, layers=18, ff=2048, heads=4, kv=1, hd=256,
                         vocab=262144, ctx=32768, rope=1000000.0, tied=True, window=512),
    "gemma-3-1b": dict(arch="gemma3", d=1152, layers=26, ff=6912, heads=4, kv=1, hd=256,
                       vocab=262144, ctx=32768, rope=1000000.0, tied=True, window=512),
}

F32, F16 = 0, 1
T_U32, T_I32, T_F32, T_BOOL, T_STR, T_ARR = 4, 5, 6, 7, 8, 9
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|fim_prefix|>", "<|fim_suffix|>",
            "<|fim_middle|>"]


def byte_chars():
    """GPT-2's byte -> printable character table."""
    printable = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def s(x):
    b = x.encode()
    return struct.pack("<Q", len(b)) + b


def kv(key, ty, val):
    out = s(key) + struct.pack("<I", ty)
    if ty == T_U32:
        out += struct.pack("<I", val)
    elif ty == T_F32:
        out += struct.pack("<f", val)
    elif ty == T_BOOL:
        out += struct.pack("<B", int(val))
    elif ty == T_STR:
        out += s(val)
    elif ty == T_ARR:
        ety, items = val
        out += struct.pack("<IQ", ety, len(items))
        if ety == T_STR:
            out += b"".join(s(i) for i in items)
        elif ety == T_I32:
            out += np.asarray(items, dtype="<i4").tobytes()
    return out


def tensors(c):
    """(name, dims in row-major order [rows, cols], is_weight) of every tensor."""
    d, hd, ff, v = c["d"], c["hd"], c["ff"], c["vocab"]
    qd, kvd = c["heads"] * hd, c["kv"] * hd
    out = [("token_embd.weight", [v, d], True), ("output_norm.weight", [d], False)]
    if not c["tied"]:
        out.append(("output.weight", [v, d], True))
    for i in range(c["layers"]):
        p = f"blk.{i}."
        out += [(p + "attn_norm.weight", [d], False), (p + "ffn_norm.weight", [d], False)]
        if c["arch"] == "phi3":
            out += [(p + "attn_qkv.weight", [qd + 2 * kvd, d], True),
                    (p + "ffn_up.weight", [2 * ff, d], True)]
        else:
            out += [(p + "attn_q.weight", [qd, d], True), (p + "attn_k.weight", [kvd, d], True),
                    (p + "attn_v.weight", [kvd, d], True), (p + "ffn_gate.weight", [ff, d], True),
                    (p + "ffn_up.weight", [ff, d], True)]
        if c.get("bias"):
            out += [(p + "attn_q.bias", [qd], False), (p + "attn_k.bias", [kvd], False),
                    (p + "attn_v.bias", [kvd], False)]
        if c["arch"] == "gemma3":
            out += [(p + "attn_q_norm.weight", [hd], False), (p + "attn_k_norm.weight", [hd], False),
                    (p + "post_attention_norm.weight", [d], False),
                    (p + "post_ffw_norm.weight", [d], False)]
        out += [(p + "attn_output.weight", [d, qd], True), (p + "ffn_down.weight", [d, ff], True)]
    return out


def metadata(c, name):
    a = c["arch"]
    md = [kv("general.architecture", T_STR, a), kv("general.name", T_STR, f"random-weight {name}"),
          kv(f"{a}.block_count", T_U32, c["layers"]), kv(f"{a}.context_length", T_U32, c["ctx"]),
          kv(f"{a}.embedding_length", T_U32, c["d"]), kv(f"{a}.feed_forward_length", T_U32, c["ff"]),
          kv(f"{a}.attention.head_count", T_U32, c["heads"]),
          kv(f"{a}.attention.head_count_kv", T_U32, c["kv"]),
          kv(f"{a}.attention.layer_norm_rms_epsilon", T_F32, 1e-6),
          kv(f"{a}.rope.freq_base", T_F32, c["rope"]),
          kv(f"{a}.rope.dimension_count", T_U32, c["hd"])]
    if a == "gemma3":
        md += [kv(f"{a}.attention.key_length", T_U32, c["hd"]),
               kv(f"{a}.attention.value_length", T_U32, c["hd"]),
               kv(f"{a}.attention.sliding_window", T_U32, c["window"]),
               kv(f"{a}.rope.local_freq_base", T_F32, 10000.0)]
    toks = byte_chars() + SPECIALS
    types = [1] * 256 + [3] * len(SPECIALS)
    filler = c["vocab"] - len(toks)
    toks += [f"<filler_{i}>" for i in range(filler)]
    types += [1] * filler
    md += [kv("tokenizer.ggml.model", T_STR, "gpt2"), kv("tokenizer.ggml.pre", T_STR, "default"),
           kv("tokenizer.ggml.tokens", T_ARR, (T_STR, toks)),
           kv("tokenizer.ggml.token_type", T_ARR, (T_I32, types)),
           kv("tokenizer.ggml.merges", T_ARR, (T_STR, [])),
           kv("tokenizer.ggml.eos_token_id", T_U32, 256),
           kv("tokenizer.ggml.bos_token_id", T_U32, 256),
           kv("tokenizer.ggml.add_bos_token", T_BOOL, False)]
    return md


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("shape", nargs="?", choices=sorted(SHAPES))
    ap.add_argument("out", nargs="?")
    ap.add_argument("--layers", type=int, help="fewer layers than the real model (tests)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--list", action="store_true", help="list the shapes")
    args = ap.parse_args()
    if args.list:
        for k, c in sorted(SHAPES.items()):
            print(k, c)
        return
    if not args.shape or not args.out:
        ap.error("SHAPE and OUT are required")
    c = dict(SHAPES[args.shape])
    if args.layers:
        c["layers"] = args.layers
    rng = np.random.default_rng(args.seed)
    ts = tensors(c)
    md = metadata(c, args.shape)
    align = 32
    infos, offset = [], 0
    for name, dims, weight in ts:
        size = int(np.prod(dims)) * (2 if weight else 4)
        infos.append(s(name) + struct.pack("<I", len(dims)) +
                     b"".join(struct.pack("<Q", x) for x in reversed(dims)) +
                     struct.pack("<IQ", F16 if weight else F32, offset))
        offset += (size + align - 1) // align * align
    with open(args.out, "wb") as f:
        f.write(b"GGUF" + struct.pack("<IQQ", 3, len(ts), len(md)))
        f.write(b"".join(md) + b"".join(infos))
        f.write(b"\0" * (-f.tell() % align))
        for name, dims, weight in ts:
            if weight:
                # Uniform with the standard deviation 1/sqrt(cols), as real weights roughly have.
                a = np.float32(np.sqrt(3.0 / dims[-1]))
                x = (rng.random(dims, dtype=np.float32) * 2 - 1) * a
                data = x.astype("<f2").tobytes()
            elif name.endswith(".bias"):
                data = ((rng.random(dims, dtype=np.float32) * 2 - 1) * 0.1).astype("<f4").tobytes()
            else:
                data = (1.0 + (rng.random(dims, dtype=np.float32) * 2 - 1) * 0.1).astype("<f4").tobytes()
            f.write(data)
            f.write(b"\0" * (-len(data) % align))
    params = sum(int(np.prod(d)) for _, d, _ in ts)
    print(f"{args.out}: {args.shape}, {c['layers']} layers, {params / 1e9:.2f}B parameters", file=sys.stderr)


if __name__ == "__main__":
    main()
