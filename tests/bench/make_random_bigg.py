#!/usr/bin/env python3
"""Writes a random-weight λ-ECLIPSE model folder with the real bigG shapes, to measure loading in the browser.

The tensors are named and shaped as the real checkpoints are (CLIP ViT-bigG/14 text and vision towers from
kandinsky-community/kandinsky-2-2-prior, the λ prior from ECLIPSE-Community/Lambda-ECLIPSE-Prior-v1.0), from
the configs in src/bench/real_configs/; values are small random numbers (±0.02). The tokenizer and the image
processor are copied from the tiny golden model (same CLIP vocabulary, 224-pixel crops).

    python3 tests/bench/make_random_bigg.py --out /tmp/bigg [--text-dtype f32|f16]   # ≈ 6.6 GB with f32 text
    python3 tests/bench/make_random_bigg.py --out /tmp/tiny-check --configs tiny     # same code, tiny shapes

With `--configs tiny` the shapes come from the tiny golden model's configs, so the result can be compared
with its real safetensors headers (`--check` does: names, dtypes and shapes must be equal).
Needs numpy. Check free disk first (df -h); delete the folder afterwards.
"""
import argparse
import json
import os
import shutil
import struct

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
REAL = os.path.join(ROOT, "src", "bench", "real_configs")
TINY = os.path.abspath(os.path.join(ROOT, "..", "shared", "goldens", "lambda-tiny", "model"))
DTYPES = {"f32": ("F32", np.float32), "f16": ("F16", np.float16)}


def clip_layers(prefix, h, inter, layers):
    out = []
    for i in range(layers):
        p = f"{prefix}.encoder.layers.{i}"
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            out += [(f"{p}.self_attn.{proj}.weight", [h, h]), (f"{p}.self_attn.{proj}.bias", [h])]
        for ln in ("layer_norm1", "layer_norm2"):
            out += [(f"{p}.{ln}.weight", [h]), (f"{p}.{ln}.bias", [h])]
        out += [(f"{p}.mlp.fc1.weight", [inter, h]), (f"{p}.mlp.fc1.bias", [inter])]
        out += [(f"{p}.mlp.fc2.weight", [h, inter]), (f"{p}.mlp.fc2.bias", [h])]
    return out


def text_tensors(c):
    h, p = c["hidden_size"], "text_model"
    floats = [
        (f"{p}.embeddings.token_embedding.weight", [c["vocab_size"], h]),
        (f"{p}.embeddings.position_embedding.weight", [c["max_position_embeddings"], h]),
        *clip_layers(p, h, c["intermediate_size"], c["num_hidden_layers"]),
        (f"{p}.final_layer_norm.weight", [h]),
        (f"{p}.final_layer_norm.bias", [h]),
        ("text_projection.weight", [c["projection_dim"], h]),
    ]
    ints = [(f"{p}.embeddings.position_ids", [1, c["max_position_embeddings"]])]
    return floats, ints


def vision_tensors(c):
    h, p = c["hidden_size"], "vision_model"
    patches = (c["image_size"] // c["patch_size"]) ** 2 + 1
    floats = [
        (f"{p}.embeddings.class_embedding", [h]),
        (f"{p}.embeddings.patch_embedding.weight", [h, c.get("num_channels", 3), c["patch_size"], c["patch_size"]]),
        (f"{p}.embeddings.position_embedding.weight", [patches, h]),
        (f"{p}.pre_layrnorm.weight", [h]),
        (f"{p}.pre_layrnorm.bias", [h]),
        *clip_layers(p, h, c["intermediate_size"], c["num_hidden_layers"]),
        (f"{p}.post_layernorm.weight", [h]),
        (f"{p}.post_layernorm.bias", [h]),
        ("visual_projection.weight", [c["projection_dim"], h]),
    ]
    ints = [(f"{p}.embeddings.position_ids", [1, patches])]
    return floats, ints


def prior_tensors(c):
    e = c["embedding_dim"]
    w = c["num_attention_heads"] * c["attention_head_dim"]
    seq = c["num_embeddings"] + c.get("additional_embeddings", 4)
    out = [
        ("clip_mean", [1, e]), ("clip_std", [1, e]),
        ("positional_embedding", [1, seq, w]), ("prd_embedding", [1, 1, w]),
        ("norm_out.weight", [w]), ("norm_out.bias", [w]),
        ("proj_to_clip_embeddings.weight", [e, w]), ("proj_to_clip_embeddings.bias", [e]),
    ]
    for name in ("proj_in", "embedding_proj", "embedding_control", "encoder_hidden_states_proj"):
        out += [(f"{name}.weight", [w, e]), (f"{name}.bias", [w])]
    for i in range(c["num_layers"]):
        p = f"transformer_blocks.{i}"
        for proj in ("to_q", "to_k", "to_v", "to_out.0"):
            out += [(f"{p}.attn1.{proj}.weight", [w, w]), (f"{p}.attn1.{proj}.bias", [w])]
        for ln in ("norm1", "norm3"):
            out += [(f"{p}.{ln}.weight", [w]), (f"{p}.{ln}.bias", [w])]
        out += [(f"{p}.ff.net.0.proj.weight", [4 * w, w]), (f"{p}.ff.net.0.proj.bias", [4 * w])]
        out += [(f"{p}.ff.net.2.weight", [w, 4 * w]), (f"{p}.ff.net.2.bias", [w])]
    return out, []


def write_safetensors(path, floats, ints, dtype, rng):
    """Header first, then the data, 4 MiB of random values at a time (the same block repeated)."""
    st_dtype, np_dtype = DTYPES[dtype]
    block = (rng.random(1 << 20, dtype=np.float32) * 0.04 - 0.02).astype(np_dtype).tobytes()
    entries, offset = [], 0
    for name, shape in sorted(floats):
        n = int(np.prod(shape)) * np.dtype(np_dtype).itemsize
        entries.append((name, {"dtype": st_dtype, "shape": shape, "data_offsets": [offset, offset + n]}, n, None))
        offset += n
    for name, shape in ints:
        data = np.arange(int(np.prod(shape)), dtype=np.int64).tobytes()
        entries.append((name, {"dtype": "I64", "shape": shape, "data_offsets": [offset, offset + len(data)]}, len(data), data))
        offset += len(data)
    header = {"__metadata__": {"format": "pt"}, **{name: info for name, info, _, _ in entries}}
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for _, _, n, data in entries:
            if data is not None:
                f.write(data)
                continue
            while n > 0:
                piece = block[: min(n, len(block))]
                f.write(piece)
                n -= len(piece)
    return 8 + len(head) + offset


def load_configs(which):
    folder = {"real": {"text": REAL, "vision": REAL, "prior": REAL},
              "tiny": {"text": os.path.join(TINY, "text_encoder"), "vision": os.path.join(TINY, "image_encoder"),
                       "prior": os.path.join(TINY, "prior")}}[which]
    name = {"real": {"text": "text_encoder.json", "vision": "image_encoder.json", "prior": "prior.json"},
            "tiny": {"text": "config.json", "vision": "config.json", "prior": "config.json"}}[which]
    return {k: json.load(open(os.path.join(folder[k], name[k]))) for k in ("text", "vision", "prior")}


def check_against_tiny(out):
    """Names, dtypes and shapes of the generated float tensors equal those of the tiny golden model."""
    def floats(path):
        with open(path, "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            h = json.loads(f.read(n))
        return {k: (v["dtype"], v["shape"]) for k, v in h.items() if k != "__metadata__" and v["dtype"] in ("F32", "F16", "BF16")}
    for rel in ("text_encoder/model.safetensors", "image_encoder/model.safetensors", "prior/diffusion_pytorch_model.safetensors"):
        got, want = floats(os.path.join(out, rel)), floats(os.path.join(TINY, rel))
        if got != want:
            missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
            wrong = sorted(k for k in set(got) & set(want) if got[k] != want[k])
            raise SystemExit(f"{rel}: differs from the tiny model: missing {missing[:5]}, extra {extra[:5]}, wrong {wrong[:5]}")
        print(f"{rel}: {len(got)} float tensors, same names, dtypes and shapes as the tiny model")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--configs", choices=["real", "tiny"], default="real")
    ap.add_argument("--text-dtype", choices=list(DTYPES), default="f32", help="the real text encoder is f32")
    ap.add_argument("--vision-dtype", choices=list(DTYPES), default="f16", help="the real image encoder is f16")
    ap.add_argument("--prior-dtype", choices=list(DTYPES), default="f32")
    ap.add_argument("--check", action="store_true", help="with --configs tiny: compare with the tiny model's headers")
    args = ap.parse_args()
    cfg = load_configs(args.configs)
    rng = np.random.default_rng(0)
    out = os.path.abspath(args.out)
    total = 0
    for folder, config, tensors, stem, dtype in [
        ("text_encoder", cfg["text"], text_tensors, "model", args.text_dtype),
        ("image_encoder", cfg["vision"], vision_tensors, "model", args.vision_dtype),
        ("prior", cfg["prior"], prior_tensors, "diffusion_pytorch_model", args.prior_dtype),
    ]:
        os.makedirs(os.path.join(out, folder), exist_ok=True)
        with open(os.path.join(out, folder, "config.json"), "w") as f:
            json.dump(config, f, indent=2)
        floats, ints = tensors(config)
        size = write_safetensors(os.path.join(out, folder, f"{stem}.safetensors"), floats, ints, dtype, rng)
        total += size
        print(f"{folder}/{stem}.safetensors: {len(floats)} float tensors ({dtype}), {size / 1e9:.3f} GB", flush=True)
    for folder in ("tokenizer", "image_processor"):
        shutil.copytree(os.path.join(TINY, folder), os.path.join(out, folder), dirs_exist_ok=True)
    print(f"total {total / 1e9:.3f} GB in {out}")
    if args.check:
        if args.configs != "tiny" or args.text_dtype != "f32" or args.vision_dtype != "f32":
            raise SystemExit("--check compares with the tiny model: use --configs tiny --text-dtype f32 --vision-dtype f32")
        check_against_tiny(out)


if __name__ == "__main__":
    main()
