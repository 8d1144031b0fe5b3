#!/usr/bin/env python3
"""Writes the committed seed corpus of every fuzz target: fuzz/corpus/<target>/<name>.

Seeds are small real inputs (the repository's image fixtures, the tiny models' configs, a tokenizer cut down
from the tiny model's, hand-built safetensors files) plus the decompression bombs of issue 12 (headers that
claim huge images or metadata), so a fuzz run starts from every format variant the tests know and CI replays
the bombs. Folders (configs, tokenizer, sharded weights) are packed as `#file <path>` sections (see
fuzz/src/lib.rs `unpack_folder`). Deterministic; standard library only. Crashers found later are added to the
corpus by hand (README.md), not by this script, which never deletes a file.

    python3 fuzz/make_seeds.py        (needs ../shared beside the repository)
"""
import json
import shutil
import struct
import zlib
from pathlib import Path

FUZZ = Path(__file__).resolve().parent
REPO = FUZZ.parent
SHARED = REPO.parent / "shared"
FIXTURES = REPO / "tests" / "fixtures"
CORPUS = FUZZ / "corpus"


def write(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data if isinstance(data, bytes) else data.encode())


def copy(target, src):
    write(target, src.name, src.read_bytes())


def pack(files):
    """`#file` sections; every body is followed by the newline that separates it from the next header."""
    out = b""
    for name, body in files:
        out += b"#file " + name.encode() + b"\n" + (body if isinstance(body, bytes) else body.encode()) + b"\n"
    return out


# ---------------------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------------------

def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(width, height, idat=b"", extra=b""):
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + extra + png_chunk(b"IDAT", idat)
            + png_chunk(b"IEND", b""))


def jpeg_claiming(width, height):
    jpg = bytearray((FIXTURES / "jpeg" / "baseline_420_q75.jpg").read_bytes())
    sof = jpg.index(b"\xff\xc0")
    jpg[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(jpg)


def images():
    for name in ["dec_rgb", "dec_p", "dec_p_trns", "dec_rgb16", "dec_gray16", "dec_gray16_trns", "dec_la", "dec_la16",
                 "dec_l", "dec_1bit", "dec_gray2", "dec_gray4", "dec_rgba", "dec_rgb_trns"]:
        copy("image_png", FIXTURES / "pillow" / f"{name}.png")
    for name in ["dec_exif6", "dec_pal8_gama22", "dec_rgb16_sbit10_srgb", "dec_rgb8_srgb_over_gama", "dec_pal4"]:
        copy("image_png", FIXTURES / "canny" / f"{name}.png")
    # Bombs: a header claiming 16384² with almost no data, a 1×1 image whose colour profile inflates to 8 MiB,
    # a 0×0 header.
    write("image_png", "bomb_ihdr_16384_square.png", png(16384, 16384, zlib.compress(b"\0" * 4096, 9)))
    iccp = png_chunk(b"iCCP", b"bomb\0\0" + zlib.compress(b"\0" * (8 << 20), 9))
    write("image_png", "bomb_iccp_8mib.png", png(1, 1, zlib.compress(b"\0\0", 9), iccp))
    write("image_png", "bomb_zero_size.png", png(0, 0, zlib.compress(b"", 9)))

    for src in sorted((FIXTURES / "jpeg").glob("*.jpg")):
        copy("image_jpeg", src)
    for name in ["dec_cmyk", "dec_progressive", "dec_baseline444"]:
        copy("image_jpeg", FIXTURES / "pillow" / f"{name}.jpg")
    write("image_jpeg", "bomb_sof_30000_square.jpg", jpeg_claiming(30000, 30000))
    write("image_jpeg", "bomb_sof_16384x8192.jpg", jpeg_claiming(16384, 8192))

    for src in [FIXTURES / "pillow" / "dec_lossless.webp", FIXTURES / "pillow" / "dec_lossy.webp",
                FIXTURES / "pillow" / "dec_lossless_rgba.webp", FIXTURES / "canny" / "dec_lossy.webp"]:
        copy("image_webp", src)
    # VP8X (extended) around the lossless fixture, with an EXIF chunk that claims 4 GB.
    lossless = (FIXTURES / "pillow" / "dec_lossless.webp").read_bytes()
    vp8l = lossless[12:]
    width, height = 40, 30
    vp8x = b"VP8X" + struct.pack("<I", 10) + bytes([0x08, 0, 0, 0]) + (width - 1).to_bytes(3, "little") \
        + (height - 1).to_bytes(3, "little")
    exif = b"EXIF" + struct.pack("<I", 0xFFFFFFF0) + b"II*\0\x08\0\0\0"
    body = b"WEBP" + vp8x + vp8l + exif
    write("image_webp", "bomb_exif_claims_4gb.webp", b"RIFF" + struct.pack("<I", len(body)) + body)
    big = b"VP8X" + struct.pack("<I", 10) + bytes([0, 0, 0, 0]) + (16383).to_bytes(3, "little") * 2
    body = b"WEBP" + big + vp8l
    write("image_webp", "bomb_vp8x_16384_square.webp", b"RIFF" + struct.pack("<I", len(body)) + body)

    copy("image_gif", FIXTURES / "pillow" / "dec_anim.gif")
    copy("image_gif", FIXTURES / "canny" / "dec_pal.gif")
    gif = b"GIF89a" + struct.pack("<HH", 30000, 30000) + b"\0\0\0" + b"," + struct.pack("<HHHH", 0, 0, 30000, 30000) \
        + b"\0\x08"
    write("image_gif", "bomb_screen_30000_square.gif", gif)

    for name in ["dec_1bit", "dec_p8", "dec_rgb24", "dec_rgb555", "dec_rgb565", "dec_rgba32"]:
        copy("image_bmp", FIXTURES / "pillow" / f"{name}.bmp")
    for name in ["dec_bgr24", "dec_pal"]:
        copy("image_bmp", FIXTURES / "canny" / f"{name}.bmp")
    # An 8-bit RLE BMP (4×2: runs and an absolute run) and a 32-bit header claiming 16384² with no pixels.
    palette = b"".join(struct.pack("<BBBB", i, 255 - i, i // 2, 0) for i in range(4))
    rle = bytes([4, 1, 0, 0, 0, 4, 0, 1, 2, 3, 0, 1])
    info = struct.pack("<IiiHHIIiiII", 40, 4, 2, 1, 8, 1, len(rle), 2835, 2835, 4, 0)
    offset = 14 + len(info) + len(palette)
    write("image_bmp", "rle8_4x2.bmp", b"BM" + struct.pack("<IHHI", offset + len(rle), 0, 0, offset) + info + palette + rle)
    info = struct.pack("<IiiHHIIiiII", 40, 16384, 16384, 1, 32, 0, 0, 2835, 2835, 0, 0)
    write("image_bmp", "bomb_header_16384_square.bmp", b"BM" + struct.pack("<IHHI", 54, 0, 0, 54) + info)


# ---------------------------------------------------------------------------------------------------------
# Safetensors
# ---------------------------------------------------------------------------------------------------------

def safetensors(tensors, metadata=None):
    """tensors: [(name, dtype, shape, raw bytes)] laid out in order."""
    header, data = {}, b""
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    if metadata is not None:
        header["__metadata__"] = metadata
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def weights():
    f32 = struct.pack("<6f", 1, -2, 0.5, 3.25, -0.0, 7)
    f16 = struct.pack("<4e", 1, -2, 0.5, 65504)
    bf16 = bytes([0x80, 0x3f, 0x00, 0xc0, 0x00, 0x3f, 0x50, 0x40])
    i64 = struct.pack("<3q", 0, 1, 2)
    tensors = [("a.weight", "F32", [2, 3], f32), ("b.bias", "F16", [4], f16), ("c", "BF16", [2, 2], bf16),
               ("position_ids", "I64", [1, 3], i64), ("scalar", "F32", [], struct.pack("<f", 1.5))]
    write("safetensors_header", "mixed_dtypes.safetensors", safetensors(tensors, {"format": "pt"}))
    write("safetensors_header", "empty.safetensors", safetensors([]))
    write("safetensors_header", "zero_sized.safetensors", safetensors([("z", "F32", [0, 4], b"")]))
    shard1 = safetensors(tensors[:2])
    shard2 = safetensors(tensors[2:])
    index = {"metadata": {"total_size": 42},
             "weight_map": {"a.weight": "model-00001-of-00002.safetensors", "b.bias": "model-00001-of-00002.safetensors",
                            "c": "model-00002-of-00002.safetensors", "position_ids": "model-00002-of-00002.safetensors",
                            "scalar": "model-00002-of-00002.safetensors"}}
    write("safetensors_header", "sharded.folder", pack([
        ("w/model.safetensors.index.json", json.dumps(index, indent=1)),
        ("w/model-00001-of-00002.safetensors", shard1),
        ("w/model-00002-of-00002.safetensors", shard2),
    ]))


# ---------------------------------------------------------------------------------------------------------
# Configs and the tokenizer folder
# ---------------------------------------------------------------------------------------------------------

def configs():
    tiny = SHARED / "goldens" / "lambda-tiny" / "model"
    dec = SHARED / "goldens" / "kandinsky-tiny" / "model"
    real = REPO / "src" / "bench" / "real_configs"
    sched = (dec / "scheduler" / "scheduler_config.json").read_text()
    decoder = [("unet/config.json", (dec / "unet" / "config.json").read_text()),
               ("movq/config.json", (dec / "movq" / "config.json").read_text())]
    write("configs", "decoder_tiny.folder", pack(decoder + [("scheduler/scheduler_config.json", sched)]))
    s = json.loads(sched)
    ddim = dict(s, _class_name="DDIMScheduler", set_alpha_to_one=False, steps_offset=1)
    write("configs", "decoder_tiny_ddim.folder", pack(decoder + [("scheduler/scheduler_config.json", json.dumps(ddim, indent=1))]))
    dpm = dict(s, _class_name="DPMSolverMultistepScheduler", algorithm_type="dpmsolver++", solver_order=2,
               lower_order_final=True, use_karras_sigmas=False, final_sigmas_type="zero")
    text = json.dumps(dpm, indent=1).replace('"final_sigmas_type"', '"lambda_min_clipped": -Infinity,\n "final_sigmas_type"')
    write("configs", "decoder_tiny_dpm.folder", pack(decoder + [("scheduler/scheduler_config.json", text)]))
    write("configs", "decoder_real.folder", pack([("unet/config.json", (real / "unet.json").read_text()),
                                                  ("movq/config.json", (real / "movq.json").read_text()),
                                                  ("scheduler/scheduler_config.json", sched)]))
    write("configs", "lambda_tiny.folder", pack([
        ("text_encoder/config.json", (tiny / "text_encoder" / "config.json").read_text()),
        ("image_encoder/config.json", (tiny / "image_encoder" / "config.json").read_text()),
        ("prior/config.json", (tiny / "prior" / "config.json").read_text()),
        ("image_processor/preprocessor_config.json", (tiny / "image_processor" / "preprocessor_config.json").read_text()),
    ]))
    write("configs", "lambda_real.folder", pack([
        ("text_encoder/config.json", (real / "text_encoder.json").read_text()),
        ("image_encoder/config.json", (real / "image_encoder.json").read_text()),
        ("prior/config.json", (real / "prior.json").read_text()),
    ]))


def tokenizer():
    """The tiny model's CLIP tokenizer cut to its 512 byte-level symbols and first 300 merges (ids renumbered:
    merge i makes token 512 + i, as in CLIP's own vocabulary), in both folder layouts."""
    src = SHARED / "goldens" / "lambda-tiny" / "model" / "tokenizer"
    full = json.loads((src / "tokenizer.json").read_text())
    vocab_full = full["model"]["vocab"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in full["model"]["merges"][:300]]
    by_id = sorted(vocab_full.items(), key=lambda kv: kv[1])
    vocab = {tok: i for tok, i in by_id if i < 512}
    for m in merges:
        vocab.setdefault(m.replace(" ", ""), len(vocab))
    specials = {}
    for tok in ["<|startoftext|>", "<|endoftext|>"]:
        specials[tok] = vocab[tok] = len(vocab)
    config = (src / "tokenizer_config.json").read_text()
    write("tokenizer_folder", "vocab_merges.folder", pack([
        ("tokenizer/tokenizer_config.json", config),
        ("tokenizer/vocab.json", json.dumps(vocab, ensure_ascii=False)),
        ("tokenizer/merges.txt", "#version: 0.2\n" + "\n".join(merges) + "\n"),
    ]))
    mini = dict(full)
    mini["model"] = dict(full["model"], vocab=vocab,
                         merges=merges if isinstance(full["model"]["merges"][0], str) else [m.split(" ") for m in merges])
    mini["added_tokens"] = [dict(t, id=vocab[t["content"]]) for t in full["added_tokens"] if t["content"] in vocab]
    if mini.get("post_processor"):
        mini["post_processor"] = json.loads(json.dumps(full["post_processor"])
                                            .replace("49406", str(specials["<|startoftext|>"]))
                                            .replace("49407", str(specials["<|endoftext|>"])))
    write("tokenizer_folder", "tokenizer_json.folder", pack([
        ("tokenizer/special_tokens_map.json", json.dumps({"pad_token": {"content": "<|endoftext|>"}})),
        ("tokenizer/tokenizer.json", json.dumps(mini, ensure_ascii=False)),
    ]))


if __name__ == "__main__":
    images()
    weights()
    configs()
    tokenizer()
    total = sum(f.stat().st_size for f in CORPUS.rglob("*") if f.is_file())
    print(f"seeds: {sum(1 for f in CORPUS.rglob('*') if f.is_file())} files, {total // 1024} KiB in {CORPUS}")
