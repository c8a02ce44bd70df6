#!/usr/bin/env python3
"""The reference for `mixopt bench train --vs-pytorch`: the same proxy model,
initialization, optimizer and batch shape as mixopt's candle proxy
(src/proxy/model.rs, src/proxy/train.rs), trained in PyTorch on the CPU with the
same thread count. Prints one JSON line of figures.

Installs torch with pip on first use (benchmarks only; the test suite never
needs it)."""
import argparse
import importlib
import json
import math
import subprocess
import sys
import time


def peak_rss_mib():
    # VmHWM, not getrusage: ru_maxrss survives fork+exec on Linux, so it would
    # report the parent's (mixopt's) peak when mixopt starts this script.
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def ensure_torch():
    try:
        return importlib.import_module("torch")
    except ImportError:
        print("bench: installing torch with pip (first use only)", file=sys.stderr)
        subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "torch"])
        return importlib.import_module("torch")


def describe():
    """One JSON line: torch's version and the CPU kernels it dispatches to."""
    torch = ensure_torch()
    print(json.dumps({
        "impl": "pytorch " + torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }))


def main():
    if sys.argv[1:] == ["--describe"]:
        return describe()
    p = argparse.ArgumentParser()
    for name, typ in [("vocab", int), ("n_layers", int), ("d_model", int), ("n_heads", int),
                      ("d_ff", int), ("seq_len", int), ("batch_size", int), ("steps", int),
                      ("warmup_steps", int), ("threads", int), ("seed", int),
                      ("lr", float), ("weight_decay", float), ("init_std", float),
                      ("rope_theta", float), ("grad_clip", float)]:
        p.add_argument("--" + name.replace("_", "-"), type=typ, required=True)
    p.add_argument("--attention", choices=["sdpa", "naive"], default="sdpa",
                   help="sdpa: torch's fused causal attention; naive: matmul, mask, softmax, matmul")
    a = p.parse_args()
    torch = ensure_torch()
    import torch.nn as nn
    import torch.nn.functional as F

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    d, h, L = a.d_model, a.n_heads, a.n_layers
    hd = d // h

    class RMSNorm(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(d))

        def forward(self, x):
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * self.weight

    half = hd // 2
    freqs = 1.0 / a.rope_theta ** (torch.arange(half, dtype=torch.float64) * 2 / hd)
    ang = torch.arange(a.seq_len, dtype=torch.float64)[:, None] * freqs[None, :]
    cos = torch.cat([ang.cos(), ang.cos()], -1).float()
    sin = torch.cat([ang.sin(), ang.sin()], -1).float()

    def rope(x):  # rotate-half RoPE, as candle_nn::rotary_emb::rope_slow
        x1, x2 = x[..., :half], x[..., half:]
        return x * cos + torch.cat([-x2, x1], -1) * sin

    mask = torch.full((a.seq_len, a.seq_len), float("-inf")).triu(1)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn_norm, self.mlp_norm = RMSNorm(), RMSNorm()
            self.wq, self.wk, self.wv, self.wo = (nn.Linear(d, d, bias=False) for _ in range(4))
            self.w_gate = nn.Linear(d, a.d_ff, bias=False)
            self.w_up = nn.Linear(d, a.d_ff, bias=False)
            self.w_down = nn.Linear(a.d_ff, d, bias=False)

        def forward(self, x):
            b, t, _ = x.shape
            y = self.attn_norm(x)
            q, k, v = (m(y).view(b, t, h, hd).transpose(1, 2) for m in (self.wq, self.wk, self.wv))
            q, k = rope(q), rope(k)
            if a.attention == "sdpa":
                o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            else:
                att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd) + mask, -1)
                o = att @ v
            x = x + self.wo(o.transpose(1, 2).reshape(b, t, d))
            y = self.mlp_norm(x)
            return x + self.w_down(F.silu(self.w_gate(y)) * self.w_up(y))

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok_emb = nn.Embedding(a.vocab, d)
            self.blocks = nn.ModuleList(Block() for _ in range(L))
            self.final_norm = RMSNorm()
            self.lm_head = nn.Linear(d, a.vocab, bias=False)

        def forward(self, ids):
            x = self.tok_emb(ids)
            for blk in self.blocks:
                x = blk(x)
            return self.lm_head(self.final_norm(x))

    model = Model()
    std_out = a.init_std / math.sqrt(2 * L)
    for name, prm in model.named_parameters():
        if prm.dim() == 2:
            nn.init.normal_(prm, 0.0, std_out if name.endswith(("wo.weight", "w_down.weight")) else a.init_std)
    decay = [p_ for p_ in model.parameters() if p_.dim() == 2]
    plain = [p_ for p_ in model.parameters() if p_.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.weight_decay},
                             {"params": plain, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.95), eps=1e-8)
    g = torch.Generator().manual_seed(a.seed)

    def step():
        ids = torch.randint(0, a.vocab, (a.batch_size, a.seq_len + 1), generator=g)
        logits = model(ids[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, a.vocab), ids[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), a.grad_clip)
        opt.step()

    for _ in range(a.warmup_steps):
        step()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        step()
    dt = time.perf_counter() - t0
    tokens = a.steps * a.batch_size * a.seq_len
    print(json.dumps({
        "impl": "pytorch " + torch.__version__ + " (" + a.attention + " attention)",
        "tokens_per_s": tokens / dt,
        "ms_per_step": 1000 * dt / a.steps,
        "peak_rss_mib": peak_rss_mib(),
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }))


if __name__ == "__main__":
    main()
