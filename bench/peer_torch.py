"""PyTorch CPU peer of thinkscale's training step (issue 16), run by bench_peer.sh.

The same Transformer++ as src/models/transformerpp.c (docs: ../shared/specs/transformerpp.md):
pre-norm blocks without biases, RMSNorm (eps 1e-5, learned scale), RoPE (theta 10000) on Q and K
rotating the interleaved pairs (2i, 2i+1) as Meta's Llama, causal multi-head attention, SwiGLU
W2(silu(W1 u) * W3 u) with hidden = ffn_mult * D, final RMSNorm, an untied head D -> V, mean
cross-entropy; AdamW (0.9, 0.999, weight decay 0.01) after a gradient-norm clip of 1.0.

`ebt` trains the Energy-Based Transformer's S1 step as the official code runs it
(../shared/specs/ebt.md): p = softmax(y) made a leaf, the doubled sequence [t_k; emb(x); p W_v2e]
of length 2L+1 through the whole backbone under the EBT mask (observed tokens causal, prediction
r sees observed 0..r+1 and itself), energy = Linear(D, 1) on the predicted half after the final
norm, g = autograd.grad(E.sum(), p, create_graph=True), y = p - alpha g, loss = mean over steps of
CE(y); S1 detaches y between steps. thinkscale computes the same energy as two streams (the
observed one once per landscape): same function, fewer FLOPs.

Prints one line: PEER key=value ... (parameter count, median seconds per step over the steps after
the first two, tokens per second).
"""
import argparse
import math
import time

import numpy as np
import torch
import torch.nn.functional as F

torch.set_num_threads(1)


class RMSNorm(torch.nn.Module):
    def __init__(self, d, eps):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope_tables(positions, dh, theta):
    inv = theta ** (-torch.arange(0, dh, 2, dtype=torch.float64) / dh)
    angle = positions.to(torch.float64)[:, None] * inv[None, :]  # [T, dh/2]
    return torch.cos(angle).float(), torch.sin(angle).float()


def apply_rope(x, cos, sin):
    """x [B, H, T, dh]; rotates the pairs (2i, 2i+1) by the angle of position t."""
    a, b = x[..., 0::2], x[..., 1::2]
    return torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).flatten(-2)


class Block(torch.nn.Module):
    def __init__(self, d, heads, hidden, eps):
        super().__init__()
        self.heads = heads
        self.attn_norm, self.mlp_norm = RMSNorm(d, eps), RMSNorm(d, eps)
        self.wq, self.wk, self.wv, self.wo = (torch.nn.Linear(d, d, bias=False) for _ in range(4))
        self.w1 = torch.nn.Linear(d, hidden, bias=False)
        self.w3 = torch.nn.Linear(d, hidden, bias=False)
        self.w2 = torch.nn.Linear(hidden, d, bias=False)

    def split(self, x):
        b, t, d = x.shape
        return x.view(b, t, self.heads, d // self.heads).transpose(1, 2)

    def forward(self, x, cos, sin, mask):
        u = self.attn_norm(x)
        q = apply_rope(self.split(self.wq(u)), cos, sin)
        k = apply_rope(self.split(self.wk(u)), cos, sin)
        v = self.split(self.wv(u))
        scores = (q * (1.0 / math.sqrt(q.shape[-1]))) @ k.transpose(-1, -2) + mask
        a = torch.softmax(scores, dim=-1) @ v
        b, h, t, dh = a.shape
        x = x + self.wo(a.transpose(1, 2).reshape(b, t, h * dh))
        u = self.mlp_norm(x)
        return x + self.w2(F.silu(self.w1(u)) * self.w3(u))


class Backbone(torch.nn.Module):
    def __init__(self, a):
        super().__init__()
        self.embed = torch.nn.Embedding(a.vocab, a.width)
        hidden = max(1, round(a.ffn_mult * a.width))
        self.layers = torch.nn.ModuleList(
            Block(a.width, a.heads, hidden, a.eps) for _ in range(a.depth))
        self.final_norm = RMSNorm(a.width, a.eps)
        self.theta = a.rope_theta

    def run(self, x, positions, mask):
        cos, sin = rope_tables(positions, x.shape[-1] // self.layers[0].heads, self.theta)
        for layer in self.layers:
            x = layer(x, cos, sin, mask)
        return self.final_norm(x)


def causal_mask(t):
    return torch.full((t, t), float("-inf")).triu(1)


class TransformerPP(torch.nn.Module):
    def __init__(self, a):
        super().__init__()
        self.backbone = Backbone(a)
        self.head = torch.nn.Linear(a.width, a.vocab, bias=False)

    def loss(self, inputs, targets):
        t = inputs.shape[1]
        x = self.backbone.run(self.backbone.embed(inputs), torch.arange(t), causal_mask(t))
        logits = self.head(x)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


class EBT(torch.nn.Module):
    def __init__(self, a):
        super().__init__()
        self.backbone = Backbone(a)
        self.time_embed = torch.nn.Embedding(a.ebt_steps, a.width)
        self.vocab_to_embed = torch.nn.Linear(a.vocab, a.width, bias=False)
        self.energy_head = torch.nn.Linear(a.width, 1, bias=False)
        self.step_size = torch.nn.Parameter(torch.tensor(float(a.step_size)))
        self.steps = a.ebt_steps

    @staticmethod
    def mask(t):
        """[2t+1, 2t+1]: rows 0..t observed (causal), row t+1+r prediction r."""
        n = 2 * t + 1
        m = torch.full((n, n), float("-inf"))
        m[: t + 1, : t + 1] = causal_mask(t + 1)
        for r in range(t):
            m[t + 1 + r, : r + 2] = 0
            m[t + 1 + r, t + 1 + r] = 0
        return m

    def energy(self, tokens_embedded, p, k, positions, mask):
        b, t, _ = tokens_embedded.shape
        time = self.time_embed.weight[k].expand(b, 1, -1)
        x = torch.cat((time, tokens_embedded, self.vocab_to_embed(p)), dim=1)
        x = self.backbone.run(x, positions, mask)
        return self.energy_head(x[:, t + 1:]).squeeze(-1)  # [B, T]

    def loss(self, inputs, targets):
        b, t = inputs.shape
        positions = torch.cat((torch.arange(t + 1), torch.arange(t) + 2))
        mask = self.mask(t)
        embedded = self.backbone.embed(inputs)
        y = torch.randn(b, t, self.vocab_to_embed.in_features)
        total = 0
        for k in range(self.steps):
            p = torch.softmax(y.detach(), dim=-1).requires_grad_(True)
            e = self.energy(embedded, p, k, positions, mask)
            (g,) = torch.autograd.grad(e.sum(), p, create_graph=True)
            y = p - self.step_size * g
            total = total + F.cross_entropy(y.reshape(-1, y.shape[-1]), targets.reshape(-1))
        return total / self.steps


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("arch", choices=("transformerpp", "ebt"))
    ap.add_argument("--corpus", required=True, help="a byte text file")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--context", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--vocab", type=int, default=256)
    ap.add_argument("--ffn-mult", type=float, default=1.0)
    ap.add_argument("--eps", type=float, default=1e-5)
    ap.add_argument("--rope-theta", type=float, default=10000.0)
    ap.add_argument("--ebt-steps", type=int, default=1)
    ap.add_argument("--step-size", type=float, default=10.0)
    a = ap.parse_args()
    torch.manual_seed(33)
    model = TransformerPP(a) if a.arch == "transformerpp" else EBT(a)
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.999), weight_decay=0.01)
    data = np.frombuffer(open(a.corpus, "rb").read(), dtype=np.uint8)
    rng = np.random.default_rng(1)
    times = []
    for _ in range(a.steps):
        t0 = time.perf_counter()
        starts = rng.integers(0, len(data) - a.context - 1, a.batch)
        rows = torch.from_numpy(np.stack([data[s:s + a.context + 1] for s in starts]).astype(np.int64))
        loss = model.loss(rows[:, :-1], rows[:, 1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if not math.isfinite(loss.item()):
            raise SystemExit("peer_torch: non-finite loss")
        times.append(time.perf_counter() - t0)
    step = float(np.median(times[2:])) if len(times) > 2 else times[-1]
    print(f"PEER arch={a.arch} params={n_params} seconds_per_step={step:.4f} "
          f"fastest_step={min(times[2:] or times):.4f} "
          f"tokens_per_s={a.batch * a.context / step:.0f} torch={torch.__version__} "
          f"threads={torch.get_num_threads()}")


if __name__ == "__main__":
    main()
