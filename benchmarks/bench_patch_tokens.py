"""DenseAV training steps on cached patch tokens against the same steps on pixels.

    .venv/bin/python -m benchmarks.bench_patch_tokens                       # the demo's tiny teacher
    .venv/bin/python -m benchmarks.bench_patch_tokens --tower vit-b-32 --batch 16

Both run the same DenseAV model with the image tower frozen (`train_image: aligner`, the case
`dense.patch_token_cache` is for): the audio ViT (1 block, 32 x 32 patches) on 1000 x 128
FBANK, the teacher's image tower, both aligners, DenseAV's loss, Adam. Per step:

- pixels (the baseline, what training does without the cache): decode one cached 224 x 224 JPEG
  per clip, run the frozen tower on it, then the rest of the step;
- tokens: gather the frame's tokens from a float16 array (what `PatchTokens` memory-maps),
  cast to float32, then the same rest of the step.

The two alternate `--repeat` times after a warm-up step each; the ratio is the median of the
back-to-back pairs. It also prints the cache's size per clip (4 frames, float16).
"""

import argparse
import time

import numpy as np
import torch
from open_clip.model import CLIP

from assets.caches.video_frames import decode_jpeg, encode_jpeg
from losses.denseav import DenseAVLoss, RegulariserWeights
from models.audio_vit import AudioViT
from models.clip_patch_tokens import ImagePatchTokens
from models.denseav import DenseAV
from models.tiny_clip import create_tiny_clip

MEAN, STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
VIT_B_32 = {"embed_dim": 512, "vision_cfg": {"image_size": 224, "layers": 12, "width": 768, "patch_size": 32},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 1}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tower", choices=["tiny", "vit-b-32"], default="tiny")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    visual = (create_tiny_clip(seed=0) if args.tower == "tiny" else CLIP(**VIT_B_32)).visual
    tower = ImagePatchTokens(visual, MEAN, STD)
    audio = AudioViT(visual, time_frames=1000, mel_bins=128, patch=(32, 32), stride=(32, 32), layers=1)
    model = DenseAV(audio, tower, code_dim=128, time_pools=1, image_pool=1, train_image="aligner").train()
    loss = DenseAVLoss(1, "misa", "max_elementwise", 1.0, RegulariserWeights(samples=64))
    params = [p for p in (*model.parameters(), *loss.parameters()) if p.requires_grad]
    opt = torch.optim.Adam(params, lr=5e-4)
    rng = np.random.default_rng(0)
    b = args.batch
    fbank = torch.randn(b, 1000, 128)
    lengths = torch.full((b,), 1000)
    jpegs = [encode_jpeg(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8), 90) for _ in range(b)]
    with torch.no_grad():
        cached = tower(torch.from_numpy(np.stack([decode_jpeg(j) for j in jpegs]))).numpy().astype(np.float16)
    gen = torch.Generator().manual_seed(0)

    def step(use_tokens: bool) -> float:
        start = time.perf_counter()
        if use_tokens:
            out = model(fbank, lengths, None, image_tokens=torch.from_numpy(cached.astype(np.float32)))
        else:
            out = model(fbank, lengths, torch.from_numpy(np.stack([decode_jpeg(j) for j in jpegs])))
        value = loss(out.audio, out.mask, out.image, gen)
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()
        return time.perf_counter() - start

    step(False), step(True)
    pixels, tokens = [], []
    for _ in range(args.repeat):
        pixels.append(step(False))
        tokens.append(step(True))
    ratios = np.array(pixels) / np.array(tokens)
    per_clip = 4 * cached[0].nbytes
    print(f"tower {args.tower} ({tower.width} x {tower.grid[0]} x {tower.grid[1]} tokens), batch {b}, "
          f"{args.threads} threads, {args.repeat} pairs")
    print(f"pixels (decode + frozen tower): {1000 * np.median(pixels):.0f} ms/step (best {1000 * min(pixels):.0f})")
    print(f"cached tokens:                  {1000 * np.median(tokens):.0f} ms/step (best {1000 * min(tokens):.0f})")
    print(f"speed-up {np.median(ratios):.2f}x (median of pairs); cache {per_clip / 1024:.0f} KiB per clip of 4 frames")


if __name__ == "__main__":
    main()
