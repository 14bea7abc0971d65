"""Per-frame cost of the reference formulation (PyTorch + diffusers), for issue 5's
side-by-side figures: VAE encode, the *full* UNet, and the reference's map recording
(bicubic upsampling of each observed layer's query input to R x R, `to_q` there, softmax
over all N tokens), as method.md sections 1-2 describe it.

Run on the same machine as `stablekeypoints bench` (not in CI; needs torch + diffusers):
  stablekeypoints init-model --arch sd15 --out /work/sd15
  python tests/reference/bench_reference.py --model /work/sd15 --runs 3
"""

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.models.attention_processor import AttnProcessor2_0


class Recorder:
    """Observes the first `layers` up-path cross-attentions with side <= max_side."""

    def __init__(self, max_side, layers, res, select):
        self.max_side, self.layers, self.res, self.select = max_side, layers, res, select
        self.reset()

    def reset(self):
        self.count, self.sum, self.seconds = 0, None, 0.0


class RecordingProcessor:
    def __init__(self, rec):
        self.rec = rec
        self.inner = AttnProcessor2_0()

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, **kw):
        rec = self.rec
        b, l, c = hidden_states.shape
        side = int(round(l**0.5))
        if side <= rec.max_side and rec.count < rec.layers:
            t = time.perf_counter()
            x = hidden_states.transpose(1, 2).reshape(b, c, side, side)
            x = F.interpolate(x, size=(rec.res, rec.res), mode="bicubic", align_corners=False)
            x = x.reshape(b, c, rec.res * rec.res).transpose(1, 2)
            q = attn.head_to_batch_dim(attn.to_q(x))
            k = attn.head_to_batch_dim(attn.to_k(encoder_hidden_states))
            probs = (q @ k.transpose(1, 2) * attn.scale).softmax(dim=-1)
            m = probs.mean(0)[:, rec.select]
            rec.sum = m if rec.sum is None else rec.sum + m
            rec.count += 1
            rec.seconds += time.perf_counter() - t
        return self.inner(attn, hidden_states, encoder_hidden_states, **kw)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--tokens", type=int, default=500)
    ap.add_argument("--map-res", type=int, default=128)
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    vae = AutoencoderKL.from_pretrained(f"{a.model}/vae").eval()
    unet = UNet2DConditionModel.from_pretrained(f"{a.model}/unet").eval()
    latent = a.size // 8
    rec = Recorder(latent // 2, 4, a.map_res, list(range(10)))
    procs = {}
    for name, proc in unet.attn_processors.items():
        up_cross = name.startswith("up_blocks") and name.endswith("attn2.processor")
        procs[name] = RecordingProcessor(rec) if up_cross else AttnProcessor2_0()
    unet.set_attn_processor(procs)
    ctx = torch.randn(1, a.tokens, unet.config.cross_attention_dim)
    image = torch.rand(1, 3, a.size, a.size)
    times = {"vae_encode": [], "unet_full": [], "map_recording": [], "total": []}
    with torch.inference_mode():
        for run in range(a.runs + 1):
            rec.reset()
            t0 = time.perf_counter()
            z = vae.encode(image * 2 - 1).latent_dist.mean * 0.18215
            t1 = time.perf_counter()
            zt = z + 0.03 * torch.randn_like(z)
            unet(zt, 1, encoder_hidden_states=ctx)
            t2 = time.perf_counter()
            assert rec.count == 4, rec.count
            if run == 0:
                continue  # warm-up
            times["vae_encode"].append(t1 - t0)
            times["unet_full"].append(t2 - t1 - rec.seconds)
            times["map_recording"].append(rec.seconds)
            times["total"].append(t2 - t0)
    print(
        f"reference (torch {torch.__version__}, {torch.get_num_threads()} threads), "
        f"{a.model}, {a.size}x{a.size}, R={a.map_res}, N={a.tokens}, median of {a.runs}"
    )
    total = statistics.median(times["total"])
    for k, v in times.items():
        m = statistics.median(v)
        print(f"{k:>14}: {m * 1e3:10.1f} ms  ({100 * m / total:5.1f}%)")


if __name__ == "__main__":
    main()
