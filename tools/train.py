#!/usr/bin/env python3
"""tools/train.py: train consort's three fixture models (models/README.md) on
the Brown corpus and write them as GGUF with the gguf-py package shipped in the
llama.cpp source bundle.

Run on a machine with PyTorch and a GPU (models/README.md says how, through
the device tool):

    python3 tools/train.py --data DIR --gguf-py DIR --out DIR [--models a,b,c]

DIR for --data holds {train,dev,heldout}.{llama-spm,gpt-2}.bin (made here by
build/tools/tokenize_corpus, so the trainer sees exactly llama.cpp's tokens)
and ggml-vocab-{llama-spm,gpt-2}.gguf (the tokenizer of each model is copied
from these, every tokenizer.* key as is).

Model: llama architecture as llama.cpp runs it: RMSNorm (eps 1e-5) before
attention and FFN and at the end; multi-head causal attention, scale
1/sqrt(head_dim), RoPE (base 10000) rotating adjacent pairs (x[2i], x[2i+1])
by pos * base^(-2i/head_dim), which is ggml's NORM mode, so no weight
permutation; SwiGLU FFN down(silu(gate x) * up x); no biases; output tied to
token_embd (no output.weight in the file).

Windowing (the same in tools/heldout.h): a document's tokens are cut into
consecutive pieces of at most CTX-1 tokens; each piece is scored as
[doc-start] + piece, every piece token counted. Training samples are windows
[doc-start] + doc[s : s+CTX-1] with s = 0 one time in ten, else uniform.
Training stops at the best dev loss (patience below); the best state is
exported. The held-out loss is reported for the float weights and for the
exported (Q8_0, dequantized again) weights: the latter is what llama.cpp
must reproduce.

--selftest (numpy only, no torch): writes a random-weight model for checking
this file's reference forward pass against llama.cpp (tools/eval_model).
"""
import argparse
import json
import math
import os
import sys
import time

CTX = 256
EPS = 1e-5
ROPE_BASE = 10000.0

# name: tokenizer, n_embd, n_layer, n_head, n_ff, seed
CONFIGS = {
    "a": dict(vocab="llama-spm", d=224, layers=5, heads=7, ff=576, seed=1),
    "b": dict(vocab="gpt-2", d=160, layers=4, heads=5, ff=448, seed=2),
    "c": dict(vocab="llama-spm", d=192, layers=4, heads=6, ff=512, seed=3),
}
MAX_BYTES = 12_000_000


def read_bin(path):
    import numpy as np
    a = np.fromfile(path, dtype="<i4")
    start, n_docs = int(a[0]), int(a[1])
    lens = a[2:2 + n_docs]
    toks = a[2 + n_docs:]
    assert int(lens.sum()) == len(toks), path
    docs, off = [], 0
    for n in lens:
        docs.append(toks[off:off + int(n)])
        off += int(n)
    return start, docs


def windows(docs, ctx=CTX):
    """(doc index, offset, length) of each scored piece."""
    out = []
    for i, d in enumerate(docs):
        for off in range(0, len(d), ctx - 1):
            out.append((i, off, min(ctx - 1, len(d) - off)))
    return out


def shapes(cfg, n_vocab):
    d, ff = cfg["d"], cfg["ff"]
    s = {"token_embd.weight": (n_vocab, d)}
    for i in range(cfg["layers"]):
        p = "blk.%d." % i
        s[p + "attn_norm.weight"] = (d,)
        for t in ("attn_q", "attn_k", "attn_v", "attn_output"):
            s[p + t + ".weight"] = (d, d)
        s[p + "ffn_norm.weight"] = (d,)
        s[p + "ffn_gate.weight"] = (ff, d)
        s[p + "ffn_up.weight"] = (ff, d)
        s[p + "ffn_down.weight"] = (d, ff)
    s["output_norm.weight"] = (d,)
    return s


def size_estimate(cfg, n_vocab, vocab_file_bytes):
    n_params = q8 = f32 = 0
    for name, shp in shapes(cfg, n_vocab).items():
        n = math.prod(shp)
        n_params += n
        if len(shp) == 2:
            assert shp[1] % 32 == 0, (name, shp)
            q8 += n // 32 * 34
        else:
            f32 += 4 * n
    return n_params, q8 + f32 + vocab_file_bytes


# ---------------------------------------------------------------- export
def export_gguf(path, cfg, weights, vocab_path, name, qtype="Q8_0"):
    """weights: name -> float32 numpy array. Returns the dequantized weights
    exactly as stored (what llama.cpp computes with)."""
    import numpy as np
    import gguf
    reader = gguf.GGUFReader(vocab_path)
    w = gguf.GGUFWriter(path, "llama")
    n_vocab = weights["token_embd.weight"].shape[0]
    hd = cfg["d"] // cfg["heads"]
    w.add_name(name)
    w.add_uint32("general.file_type", int(gguf.LlamaFileType.MOSTLY_Q8_0 if qtype == "Q8_0" else gguf.LlamaFileType.ALL_F32))
    w.add_uint32("llama.context_length", CTX)
    w.add_uint32("llama.embedding_length", cfg["d"])
    w.add_uint32("llama.block_count", cfg["layers"])
    w.add_uint32("llama.feed_forward_length", cfg["ff"])
    w.add_uint32("llama.attention.head_count", cfg["heads"])
    w.add_uint32("llama.attention.head_count_kv", cfg["heads"])
    w.add_float32("llama.attention.layer_norm_rms_epsilon", EPS)
    w.add_uint32("llama.rope.dimension_count", hd)
    w.add_float32("llama.rope.freq_base", ROPE_BASE)
    w.add_uint32("llama.vocab_size", n_vocab)
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer."):
            continue
        t = field.types[0]
        if t == gguf.GGUFValueType.ARRAY:
            w.add_key_value(key, field.contents(), t, sub_type=field.types[-1])
        else:
            w.add_key_value(key, field.contents(), t)
    stored = {}
    for tname, arr in weights.items():
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        if arr.ndim == 2 and qtype == "Q8_0":
            q = gguf.quants.quantize(arr, gguf.GGMLQuantizationType.Q8_0)
            w.add_tensor(tname, q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
            stored[tname] = gguf.quants.dequantize(q, gguf.GGMLQuantizationType.Q8_0).reshape(arr.shape)
        else:
            w.add_tensor(tname, arr)
            stored[tname] = arr
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return stored


# ---------------------------------------------------------------- numpy reference
def np_q8(x):
    """What llama.cpp's CPU backend does to the activations that meet a Q8_0
    weight: rows cut in blocks of 32, each quantized to int8 with scale
    max|x|/127 (stored as float16)."""
    import numpy as np
    x = np.asarray(x, dtype=np.float32)
    b = x.reshape(x.shape[:-1] + (x.shape[-1] // 32, 32))
    amax = np.abs(b).max(-1, keepdims=True)
    d = amax / np.float32(127)
    inv = np.where(amax > 0, np.float32(127) / np.where(amax > 0, amax, 1), 0).astype(np.float32)
    q = np.round(b * inv)
    return (q * d.astype(np.float16).astype(np.float32)).reshape(x.shape).astype(np.float64)


def np_forward(W, cfg, tokens, q8=False):
    """Logits (T, n_vocab) for one sequence, float64: the reference. With q8,
    the inputs of the 2-D weights' products are quantized as llama.cpp does."""
    import numpy as np
    d, H = cfg["d"], cfg["heads"]
    a = np_q8 if q8 else (lambda t: t)  # noqa: E731
    hd = d // H
    T = len(tokens)
    f = lambda k: W[k].astype(np.float64)  # noqa: E731

    def rms(x, g):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + EPS) * g

    inv = ROPE_BASE ** (-np.arange(0, hd, 2) / hd)
    ang = np.arange(T)[:, None] * inv[None, :]
    cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]

    def rope(x):  # (T, H, hd)
        x0, x1 = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = x0 * cos - x1 * sin
        out[..., 1::2] = x0 * sin + x1 * cos
        return out

    x = f("token_embd.weight")[tokens]
    mask = np.triu(np.full((T, T), -np.inf), 1)
    for i in range(cfg["layers"]):
        p = "blk.%d." % i
        h = a(rms(x, f(p + "attn_norm.weight")))
        q = rope((h @ f(p + "attn_q.weight").T).reshape(T, H, hd))
        k = rope((h @ f(p + "attn_k.weight").T).reshape(T, H, hd))
        v = (h @ f(p + "attn_v.weight").T).reshape(T, H, hd)
        s = np.einsum("thd,shd->hts", q, k) / math.sqrt(hd) + mask
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        o = np.einsum("hts,shd->thd", s, v).reshape(T, d)
        x = x + a(o) @ f(p + "attn_output.weight").T
        h = a(rms(x, f(p + "ffn_norm.weight")))
        g = h @ f(p + "ffn_gate.weight").T
        u = h @ f(p + "ffn_up.weight").T
        x = x + a(g / (1 + np.exp(-g)) * u) @ f(p + "ffn_down.weight").T
    x = a(rms(x, f("output_norm.weight")))
    return x @ f("token_embd.weight").T


def np_heldout(W, cfg, start, docs, q8=False):
    import numpy as np
    nll, n = 0.0, 0
    for i, off, ln in windows(docs):
        piece = docs[i][off:off + ln]
        inp = np.concatenate([[start], piece[:-1]]).astype(np.int64)
        lg = np_forward(W, cfg, inp, q8)
        m = lg.max(-1, keepdims=True)
        lse = (m + np.log(np.exp(lg - m).sum(-1, keepdims=True)))[:, 0]
        nll += float((lse - lg[np.arange(ln), piece]).sum())
        n += ln
    return nll / n, n


# ---------------------------------------------------------------- torch model
def torch_model(cfg, n_vocab):
    import torch
    import torch.nn.functional as F

    class Llama(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.names = list(shapes(cfg, n_vocab))
            self.p = torch.nn.ParameterList()
            d = cfg["d"]
            for name, shp in shapes(cfg, n_vocab).items():
                if len(shp) == 1:
                    t = torch.ones(shp)
                elif name == "token_embd.weight":
                    t = torch.randn(shp) * 0.02
                else:
                    std = 0.02
                    if name.endswith(("attn_output.weight", "ffn_down.weight")):
                        std = 0.02 / math.sqrt(2 * cfg["layers"])
                    t = torch.randn(shp) * std
                self.p.append(torch.nn.Parameter(t))
            self.idx = {n: i for i, n in enumerate(self.names)}
            hd = d // cfg["heads"]
            inv = ROPE_BASE ** (-torch.arange(0, hd, 2, dtype=torch.float64) / hd)
            ang = torch.arange(CTX, dtype=torch.float64)[:, None] * inv[None, :]
            self.register_buffer("cos", torch.cos(ang).float(), persistent=False)
            self.register_buffer("sin", torch.sin(ang).float(), persistent=False)
            self.dropout = 0.0
            self.q8 = False  # emulate llama.cpp's Q8_0 activations (np_q8)

        def w(self, name):
            return self.p[self.idx[name]]

        def rope(self, x):  # (B, T, H, hd)
            T = x.shape[1]
            cos, sin = self.cos[:T, None, :], self.sin[:T, None, :]
            x0, x1 = x[..., 0::2].float(), x[..., 1::2].float()
            return torch.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], -1).flatten(-2).type_as(x)

        def forward(self, tok):
            B, T = tok.shape
            d, H = cfg["d"], cfg["heads"]
            hd = d // H

            def rms(x, g):
                xf = x.float()
                return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + EPS) * g).type_as(x)

            def tq8(t):
                b = t.float().reshape(*t.shape[:-1], t.shape[-1] // 32, 32)
                amax = b.abs().amax(-1, keepdim=True)
                inv = torch.where(amax > 0, 127.0 / torch.where(amax > 0, amax, torch.ones_like(amax)),
                                  torch.zeros_like(amax))
                d = (amax / 127.0).half().float()
                return (torch.round(b * inv) * d).reshape(t.shape)

            a = tq8 if self.q8 else (lambda t: t)  # noqa: E731
            drop = lambda t: F.dropout(t, self.dropout, self.training)  # noqa: E731
            x = F.embedding(tok, self.w("token_embd.weight"))
            for i in range(cfg["layers"]):
                p = "blk.%d." % i
                h = a(rms(x, self.w(p + "attn_norm.weight")))
                q = self.rope(F.linear(h, self.w(p + "attn_q.weight")).view(B, T, H, hd))
                k = self.rope(F.linear(h, self.w(p + "attn_k.weight")).view(B, T, H, hd))
                v = F.linear(h, self.w(p + "attn_v.weight")).view(B, T, H, hd)
                o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                                   is_causal=True)
                o = a(o.transpose(1, 2).reshape(B, T, d))
                x = x + drop(F.linear(o, self.w(p + "attn_output.weight")))
                h = a(rms(x, self.w(p + "ffn_norm.weight")))
                g = F.linear(h, self.w(p + "ffn_gate.weight"))
                u = F.linear(h, self.w(p + "ffn_up.weight"))
                x = x + drop(F.linear(a(F.silu(g) * u), self.w(p + "ffn_down.weight")))
            x = a(rms(x, self.w("output_norm.weight")))
            return F.linear(x, self.w("token_embd.weight"))

    return Llama()


def torch_eval(model, start, docs, device, batch=64):
    """Mean NLL per token with the held-out windowing, float32."""
    import torch
    import torch.nn.functional as F
    model.eval()
    ws = windows(docs)
    nll, n = 0.0, 0
    with torch.no_grad():
        for b in range(0, len(ws), batch):
            chunk = ws[b:b + batch]
            L = max(ln for _, _, ln in chunk)
            inp = torch.zeros((len(chunk), L), dtype=torch.long)
            tgt = torch.full((len(chunk), L), -100, dtype=torch.long)
            for j, (i, off, ln) in enumerate(chunk):
                piece = torch.from_numpy(docs[i][off:off + ln].astype("int64"))
                inp[j, 0] = start
                inp[j, 1:ln] = piece[:-1]
                tgt[j, :ln] = piece
            lg = model(inp.to(device)).float()
            nll += F.cross_entropy(lg.view(-1, lg.shape[-1]), tgt.to(device).view(-1),
                                   ignore_index=-100, reduction="sum").item()
            n += int((tgt >= 0).sum())
    return nll / n, n


def train_one(key, args, log):
    import numpy as np
    import torch
    import torch.nn.functional as F
    cfg = CONFIGS[key]
    data = args.data
    vocab_path = os.path.join(data, "ggml-vocab-%s.gguf" % cfg["vocab"])
    start, train = read_bin(os.path.join(data, "train.%s.bin" % cfg["vocab"]))
    _, dev = read_bin(os.path.join(data, "dev.%s.bin" % cfg["vocab"]))
    _, held = read_bin(os.path.join(data, "heldout.%s.bin" % cfg["vocab"]))
    import gguf
    n_vocab = len(gguf.GGUFReader(vocab_path).fields["tokenizer.ggml.tokens"].data)
    n_params, est = size_estimate(cfg, n_vocab, os.path.getsize(vocab_path))
    log("model %s: %s n_vocab %d params %d estimated file %d bytes" % (key, cfg, n_vocab, n_params, est))
    assert est <= MAX_BYTES, "model %s too big" % key

    dev_ = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    t_start = time.time()

    def fit(dropout):
        torch.manual_seed(cfg["seed"])
        rng = np.random.default_rng(cfg["seed"])
        model = torch_model(cfg, n_vocab).to(dev_)
        model.dropout = dropout
        decay = [p for n, p in zip(model.names, model.p) if p.dim() == 2]
        nodecay = [p for n, p in zip(model.names, model.p) if p.dim() == 1]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.wd},
                                 {"params": nodecay, "weight_decay": 0.0}],
                                lr=args.lr, betas=(0.9, 0.95), fused=dev_.type == "cuda")
        lens = np.array([len(d) for d in train])
        prob = lens / lens.sum()
        n_train = int(lens.sum())
        best, best_step, best_state, bad = float("inf"), 0, None, 0
        t0 = time.time()
        history = []
        step = 0
        for step in range(1, args.max_steps + 1):
            lr = args.lr * min(1.0, step / args.warmup)
            lr *= 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, step / args.max_steps)))
            for g in opt.param_groups:
                g["lr"] = lr
            di = rng.choice(len(train), size=args.batch, p=prob)
            inp = np.empty((args.batch, CTX - 1), dtype=np.int64)
            tgt = np.empty((args.batch, CTX - 1), dtype=np.int64)
            for j, i in enumerate(di):
                d = train[i]
                s = 0 if rng.random() < 0.1 else int(rng.integers(0, len(d) - (CTX - 1) + 1))
                piece = d[s:s + CTX - 1]
                inp[j, 0] = start
                inp[j, 1:] = piece[:-1]
                tgt[j] = piece
            model.train()
            with torch.autocast(dev_.type, dtype=torch.bfloat16, enabled=dev_.type == "cuda"):
                lg = model(torch.from_numpy(inp).to(dev_))
            loss = F.cross_entropy(lg.float().view(-1, n_vocab), torch.from_numpy(tgt).to(dev_).view(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            if step % args.eval_every == 0 or step == args.max_steps:
                dl, _ = torch_eval(model, start, dev, dev_)
                epoch = step * args.batch * (CTX - 1) / n_train
                history.append((step, round(loss.item(), 4), round(dl, 4)))
                log("  %s dropout %.2f step %5d epoch %5.2f lr %.2e train %.4f dev %.4f  (%.0fs)"
                    % (key, dropout, step, epoch, lr, loss.item(), dl, time.time() - t0))
                if dl < best:
                    best, best_step, bad = dl, step, 0
                    best_state = [p.detach().float().cpu().clone() for p in model.p]
                else:
                    bad += 1
                    if bad >= args.patience:
                        log("  %s early stop at step %d: best dev %.4f at step %d" % (key, step, best, best_step))
                        break
            if time.time() - t0 > args.max_seconds:
                log("  %s time limit at step %d" % (key, step))
                break
        return best, best_step, best_state, step, history, model

    runs = []
    for dropout in [float(x) for x in args.dropout.split(",")]:
        runs.append((dropout,) + fit(dropout))
        log("  %s dropout %.2f: best dev %.4f at step %d" % (key, dropout, runs[-1][1], runs[-1][2]))
    dropout, best, best_step, best_state, step, history, model = min(runs, key=lambda r: r[1])
    log("  %s chosen: dropout %.2f (best dev %.4f at step %d)" % (key, dropout, best, best_step))
    dev_by_dropout = {str(r[0]): r[1] for r in runs}
    del runs
    with torch.no_grad():
        for p, b in zip(model.p, best_state):
            p.copy_(b)
    model.float()
    float_loss, n_tok = torch_eval(model, start, held, dev_)
    weights = {n: p.detach().cpu().numpy() for n, p in zip(model.names, model.p)}
    out_path = os.path.join(args.out, "%s.gguf" % key)
    stored = export_gguf(out_path, cfg, weights, vocab_path, "consort-brown-%s" % key)
    with torch.no_grad():
        for n, p in zip(model.names, model.p):
            p.copy_(torch.from_numpy(stored[n]))
    q_loss, _ = torch_eval(model, start, held, dev_)
    q_dev, _ = torch_eval(model, start, dev, dev_)
    model.q8 = True
    q8a_loss, _ = torch_eval(model, start, held, dev_)
    model.q8 = False
    res = dict(model=key, config=cfg, n_vocab=n_vocab, params=n_params, file_bytes=os.path.getsize(out_path),
               best_step=best_step, steps_run=step, batch=args.batch, ctx=CTX, lr=args.lr, wd=args.wd,
               dropout=dropout, dev_by_dropout=dev_by_dropout, best_dev_float=best, dev_q8=q_dev, heldout_tokens=n_tok,
               heldout_float=float_loss, heldout_q8=q_loss, heldout_q8_q8act=q8a_loss, seconds=round(time.time() - t_start, 1),
               history=history)
    log("  %s held-out nll/token: float %.6f  exported q8_0 %.6f  q8_0+q8 activations %.6f (%d tokens), "
        "file %d bytes" % (key, float_loss, q_loss, q8a_loss, n_tok, res["file_bytes"]))
    # torch vs the numpy reference on the first held-out piece (checks this file's two forwards agree)
    piece = held[0][:64]
    inp = np.concatenate([[start], piece[:-1]]).astype(np.int64)
    with torch.no_grad():
        tl = model(torch.from_numpy(inp)[None].to(dev_))[0].double().cpu().numpy()
    res["torch_vs_numpy_max_logit_diff"] = float(abs(tl - np_forward(stored, cfg, inp)).max())
    log("  %s torch vs numpy reference: max |logit diff| %.2e" % (key, res["torch_vs_numpy_max_logit_diff"]))
    return res


def selftest(args):
    """Random weights, numpy only: write OUT/selftest.gguf and its held-out loss."""
    import numpy as np
    cfg = dict(vocab=os.environ.get("SELFTEST_VOCAB", "llama-spm"), d=64, layers=2, heads=4, ff=128, seed=0)
    vocab_path = os.path.join(args.data, "ggml-vocab-%s.gguf" % cfg["vocab"])
    start, held = read_bin(os.path.join(args.data, "heldout.%s.bin" % cfg["vocab"]))
    rng = np.random.default_rng(0)
    W = {n: (rng.standard_normal(s) * (0.3 if len(s) == 2 else 0.2) + (1.0 if len(s) == 1 else 0.0)).astype(np.float32)
         for n, s in shapes(cfg, 50257 if cfg["vocab"] == "gpt-2" else 32000).items()}
    qtype = os.environ.get("SELFTEST_QTYPE", "Q8_0")
    stored = export_gguf(os.path.join(args.out, "selftest.gguf"), cfg, W, vocab_path, "selftest", qtype)
    docs = [held[0][:600]]  # 3 pieces: checks the windowing too
    loss, n = np_heldout(stored, cfg, start, docs)
    loss_q8, _ = np_heldout(stored, cfg, start, docs, q8=qtype == "Q8_0")
    print(json.dumps({"selftest_nll": loss, "selftest_nll_q8_activations": loss_q8, "tokens": n}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--gguf-py", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--models", default="a,b,c")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--wd", type=float, default=0.1)
    ap.add_argument("--dropout", default="0.1,0.25,0.4",
                    help="comma-separated; each is trained, the best dev loss wins")
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--max-steps", type=int, default=1500)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--patience", type=int, default=4)
    ap.add_argument("--max-seconds", type=float, default=50)
    ap.add_argument("--selftest", action="store_true")
    args = ap.parse_args()
    sys.path.insert(0, args.gguf_py)
    os.makedirs(args.out, exist_ok=True)
    if args.selftest:
        return selftest(args)
    logf = open(os.path.join(args.out, "train.log"), "a")

    def log(s):
        print(s, flush=True)
        logf.write(s + "\n")
        logf.flush()

    import torch
    log("torch %s cuda %s %s" % (torch.__version__, torch.cuda.is_available(),
                                 torch.cuda.get_device_name(0) if torch.cuda.is_available() else ""))
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    results = []
    for key in args.models.split(","):
        results.append(train_one(key, args, log))
        with open(os.path.join(args.out, "train_results.json"), "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
