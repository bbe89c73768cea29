#!/usr/bin/env python
"""Forward throughput of every upstream, ours against s3prl's implementation of the same
architecture, in one run.

Each upstream is built with random weights at the paper / s3prl size (the overrides in
SPECS below, on top of the config run.py composes for ``upstream=<name>``) and run frozen
(eval mode, torch.inference_mode, torch.set_num_threads(2)) on one fixed batch (default 8 x 10 s of
seeded noise). Our side runs in this process; s3prl's runs in a worker process started
with another interpreter (``--s3prl-python``, a venv with ``pip install s3prl``: see
benchmarks/README.md), which builds s3prl's own UpstreamExpert classes from a checkpoint
file this script writes from randomly initialised s3prl model classes (nothing is
downloaded). The two sides are timed alternately, repeat by repeat, so machine load
drifts hit both alike. Printed: seconds of audio per second of wall time (median of the
repeats), the ratio ours / s3prl (> 1: ours is faster), forward GFLOPs per utterance-batch
(torch.utils.flop_counter, with formulas added for LSTM and SDPA), achieved GFLOP/s and
its fraction of this machine's fp32 matmul peak (2048 x 2048 matmul loop, 2 threads,
measured in the same run).

    python benchmarks/bench_upstream_throughput.py                 # 8 x 10 s, 5 repeats
    python benchmarks/bench_upstream_throughput.py --quick         # 2 x 2 s, 3 repeats
        (without the s3prl venv, --quick times ours alone instead of stopping)
    python benchmarks/bench_upstream_throughput.py --only apc,wav2vec2 --profile wav2vec2

The same file is the s3prl worker (``--worker``): in that mode it never imports speechssl.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    compose_config,
    fill_sizes,
    fmt,
    load_average,
    machine_header,
    median,
    option_overrides,
    table,
)

DEFAULT_S3PRL_PYTHON = "/tmp/s3prl-venv/bin/python"

BASE_768 = {"frontend": "conv", "conv_dim": 512, "hidden_size": 768, "num_layers": 12,
            "num_heads": 12, "ff_size": 3072}
# name -> (our overrides on the recipe: the paper / s3prl size, s3prl model, note)
SPECS: dict[str, tuple[dict, str | None, str]] = {
    "apc": ({}, "apc", "3-layer GRU 512, residual (recipe size = paper size)"),
    "vq_apc": ({}, "vq_apc", "APC + Gumbel VQ (512 codes) after the last layer"),
    "npc": ({"hidden_size": 512}, "npc",
            "4 blocks (conv3 + BN + conv1x1 + BN), 512, masked conv 15, mask 5: the same "
            "layers; ours stores only the masked conv's non-zero taps"),
    "mockingjay": ({"hidden_size": 768, "num_heads": 12, "ff_size": 3072, "num_layers": 3,
                    "downsample": 1}, "mockingjay",
                   "3-layer 768 post-LN transformer on 80-d log-mel, 10 ms frames (s3prl's "
                   "on-the-fly base; our recipe stacks 3 frames, downsample=1 here)"),
    "tera": ({"hidden_size": 768, "num_heads": 12, "ff_size": 3072, "num_layers": 3}, "tera",
             "3-layer 768 (TERA base)"),
    "vqvae": ({}, None, "no s3prl counterpart"),
    "cpc": ({"hidden_size": 256}, "cpc",
            "modified CPC: conv encoder 256 with channel norm, 1-layer LSTM 256"),
    "wav2vec": ({"hidden_size": 512, "context_layers": 9}, "wav2vec",
                "wav2vec (paper base): 5 conv 512 + 9 causal conv 512 (k=3); s3prl's hub "
                "model is wav2vec large, so s3prl's Wav2VecModel is built with the base config"),
    "vq_wav2vec": ({"hidden_size": 512, "context_layers": 9}, "vq_wav2vec",
                   "wav2vec base + Gumbel VQ 2 x 320"),
    "wav2vec2": ({**BASE_768, "final_dim": 256}, "wav2vec2",
                 "BASE: conv 512 (stride 320) + 12 x 768 transformer, conv positions 128"),
    "hubert": ({**BASE_768, "final_dim": 256}, "hubert", "BASE, same backbone"),
    "distilhubert": ({**BASE_768, "num_layers": 2, "teacher_hidden": 768,
                      "target_layers": [4, 8, 12]}, None,
                     "DistilHuBERT: HuBERT BASE's conv encoder + 2 x 768 transformer (the "
                     "prediction heads are not run); s3prl's side not built here"),
    "data2vec": ({**BASE_768, "top_k": 8}, "data2vec",
                 "BASE backbone as ours (group-norm extractor, one conv-position layer of "
                 "128); fairseq's data2vec uses a layer-norm extractor and 5 conv-position "
                 "layers. Our parameter count includes the EMA teacher copy, which the "
                 "forward does not run"),
    "fbank": ({"deltas": True, "normalize": True}, "fbank",
              "Kaldi fbank 80 + deltas + utterance CMVN (s3prl's fbank.yaml)"),
    "mfcc": ({"deltas": True, "normalize": True}, "mfcc",
             "Kaldi MFCC 13 + deltas + utterance CMVN (s3prl's mfcc.yaml)"),
}


# ---------------------------------------------------------------------------------------
# shared by both sides (torch only)
# ---------------------------------------------------------------------------------------

def _sdpa_flop(q, k, v, *args, out_shape=None, **kwargs) -> int:
    """(B, H, L, E) q, (B, H, S, E) k, (B, H, S, Ev) v: Q K^T and A V."""
    *batch, L, E = q
    S, Ev = k[-2], v[-1]
    n = 1
    for b in batch:
        n *= b
    return 2 * n * L * S * E + 2 * n * L * S * Ev


def _rnn_flop(inp, hx, params, has_biases, num_layers, dropout, train, bidirectional,
              batch_first, out_shape=None, **kwargs) -> int:
    """aten.lstm.input: 2 * B * T * (sum of the weight matrices' sizes)."""
    B, T = (inp[0], inp[1]) if batch_first else (inp[1], inp[0])
    weights = sum(p[0] * p[1] for p in params if len(p) == 2)
    return 2 * B * T * weights


def count_flops(fn) -> int:
    """Forward FLOPs of ``fn()`` (matmuls, convs, attention, recurrent layers). Counted under
    no_grad: FlopCounterMode under inference_mode fails on weight-normed convs (torch 2.9)."""
    from torch.utils.flop_counter import FlopCounterMode

    aten = torch.ops.aten
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping={
            aten.scaled_dot_product_attention: _sdpa_flop, aten.lstm: _rnn_flop}) as fc:
        fn()
    return int(fc.get_total_flops())


def matmul_peak(seconds: float = 2.0, n: int = 2048) -> float:
    """fp32 GFLOP/s of an n x n matmul loop: the median of 5 rounds of ~seconds/5 each."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up
    t0 = time.perf_counter()
    a @ b
    per = max(time.perf_counter() - t0, 1e-4)
    reps = max(1, int(seconds / 5 / per))
    rates = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ b
        rates.append(2 * n ** 3 * reps / (time.perf_counter() - t0) / 1e9)
    return median(rates)


def make_batch(batch: int, seconds: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(batch, int(seconds * 16000), generator=g)


def time_call(fn) -> float:
    t0 = time.perf_counter()
    with torch.inference_mode():
        fn()
    return time.perf_counter() - t0


# ---------------------------------------------------------------------------------------
# our side
# ---------------------------------------------------------------------------------------

def build_ours(name: str) -> torch.nn.Module:
    """Our upstream of the composed config ``upstream=name`` with SPECS' size overrides,
    random weights."""
    cfg = compose_config([f"upstream={name}", *option_overrides("upstream", SPECS[name][0])])
    from speechssl.upstream.load import build_from_config

    torch.manual_seed(0)
    return build_from_config(cfg.upstream).eval()


def ours_call(model, wavs: torch.Tensor):
    lengths = torch.full((wavs.shape[0],), wavs.shape[1], dtype=torch.long)
    return lambda: model(wavs, lengths)


# ---------------------------------------------------------------------------------------
# s3prl's side (worker process; imports s3prl, never speechssl)
# ---------------------------------------------------------------------------------------

def _save(obj, tmp: Path, name: str) -> str:
    path = tmp / f"{name}.ckpt"
    torch.save(obj, path)
    return str(path)


def build_s3prl(kind: str, tmp: Path) -> torch.nn.Module:
    """s3prl's UpstreamExpert for ``kind``, loaded from a checkpoint file written here from
    randomly initialised s3prl model classes at the paper / hub size."""
    torch.manual_seed(0)
    if kind in ("apc", "vq_apc"):
        from s3prl.upstream.apc.apc import APC
        from s3prl.upstream.apc.expert import UpstreamExpert
        audio = {"feat_type": "fbank", "feat_dim": 80, "frame_length": 25, "frame_shift": 10,
                 "dither": 0.0, "cmvn": True}
        paras = {"hidden_size": 512, "num_layers": 3, "dropout": 0.1, "residual": True}
        if kind == "vq_apc":
            paras["vq"] = {"codebook_size": [512], "code_dim": [512], "gumbel_temperature": 0.5}
        model = APC(80, **paras)
        ckpt = {"config": {"data": {"audio": audio}, "model": {"paras": paras}},
                "model": model.state_dict()}
        return UpstreamExpert(_save(ckpt, tmp, kind))
    if kind == "npc":
        from s3prl.upstream.npc.expert import UpstreamExpert
        from s3prl.upstream.npc.npc import NPC
        audio = {"feat_type": "fbank", "feat_dim": 80, "frame_length": 25, "frame_shift": 10,
                 "dither": 0.0, "cmvn": True}
        paras = {"hidden_size": 512, "n_blocks": 4, "dropout": 0.1, "residual": True,
                 "kernel_size": 15, "mask_size": 5, "batch_norm": True, "activate": "relu"}
        model = NPC(80, **paras)
        ckpt = {"config": {"data": {"audio": audio}, "model": {"paras": paras}},
                "model": model.state_dict()}
        return UpstreamExpert(_save(ckpt, tmp, kind))
    if kind in ("mockingjay", "tera"):
        from s3prl.upstream.mockingjay.expert import UpstreamExpert
        from s3prl.upstream.mockingjay.model import TransformerConfig, TransformerModel
        transformer = {"hidden_size": 768, "num_hidden_layers": 3, "num_attention_heads": 12,
                       "hidden_act": "gelu", "intermediate_size": 3072,
                       "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
                       "initializer_range": 0.02, "layer_norm_eps": 1e-12,
                       "share_layer": False, "pre_layer_norm": False}
        audio = {"target_level": -25, "win_ms": 25, "hop_ms": 10, "n_freq": 201, "n_mels": 80,
                 "n_mfcc": 13,
                 "input": {"feat_type": "mel", "channel": 0, "log": True, "delta": 0,
                           "cmvn": True}}
        model = TransformerModel(TransformerConfig(transformer), 80)
        states = {"Config": {"transformer": transformer, "audio": audio,
                             "task": {"sequence_length": 1500}},
                  "Transformer": model.state_dict()}
        return UpstreamExpert(_save(states, tmp, kind))
    if kind == "cpc":
        from s3prl.upstream.cpc.cpc_default_config import get_default_cpc_config
        from s3prl.upstream.cpc.expert import UpstreamExpert
        from s3prl.upstream.cpc.feature_loader import getAR, getEncoder
        from s3prl.upstream.cpc.model import CPCModel
        args = get_default_cpc_config()  # modified CPC: 256, channel norm, LSTM
        model = CPCModel(getEncoder(args), getAR(args))
        return UpstreamExpert(_save({"config": vars(args), "weights": model.state_dict()},
                                    tmp, kind))
    if kind in ("wav2vec", "vq_wav2vec"):
        from s3prl.upstream.wav2vec.expert import UpstreamExpert
        from s3prl.upstream.wav2vec.wav2vec_model import Wav2VecConfig, Wav2VecModel
        cfg = {"infonce": False, "prediction_steps": 12, "num_negatives": 10,
               "conv_feature_layers": "[(512, 10, 5), (512, 8, 4), (512, 4, 2), (512, 4, 2), "
                                      "(512, 4, 2)]",
               "conv_aggregator_layers": "[(512, 3, 1)] * 9",
               "skip_connections_agg": False, "log_compression": False, "vq_type": "none"}
        if kind == "vq_wav2vec":
            cfg.update(vq_type="gumbel", vq_vars=320, vq_groups=2, vq_depth=2,
                       combine_groups=True, prediction_steps=8)
        model = Wav2VecModel(Wav2VecConfig(**cfg))
        return UpstreamExpert(_save({"task_cfg": {"normalize": False}, "model_cfg": cfg,
                                     "model_weight": model.state_dict()}, tmp, kind))
    w2v2_base = {"extractor_mode": "default", "encoder_layers": 12, "encoder_embed_dim": 768,
                 "encoder_ffn_embed_dim": 3072, "encoder_attention_heads": 12,
                 "final_dim": 256, "conv_pos": 128, "conv_pos_groups": 16,
                 "layer_norm_first": False}
    if kind == "wav2vec2":
        from s3prl.upstream.wav2vec2.expert import UpstreamExpert
        from s3prl.upstream.wav2vec2.wav2vec2_model import Wav2Vec2Config, Wav2Vec2Model
        model = Wav2Vec2Model(Wav2Vec2Config(**w2v2_base))
        return UpstreamExpert(_save({"task_cfg": {"normalize": False}, "model_cfg": w2v2_base,
                                     "model_weight": model.state_dict()}, tmp, kind))
    if kind == "hubert":
        from s3prl.upstream.hubert.expert import UpstreamExpert
        from s3prl.upstream.hubert.hubert_model import (
            HubertConfig,
            HubertModel,
            HubertPretrainingConfig,
        )
        cfg = {**w2v2_base, "label_rate": 50.0}
        task = {"label_rate": 50.0, "normalize": False}
        symbols = [["<s>", "<pad>", "</s>", "<unk>"] + [str(i) for i in range(500)]]
        model = HubertModel(HubertConfig(**cfg), HubertPretrainingConfig(**task), symbols)
        return UpstreamExpert(_save({"task_cfg": task, "model_cfg": cfg,
                                     "model_weight": model.state_dict(),
                                     "dictionaries_symbols": symbols}, tmp, kind))
    if kind == "data2vec":
        from s3prl.upstream.data2vec.data2vec_model import Data2VecAudioConfig, Data2VecAudioModel
        from s3prl.upstream.data2vec.expert import UpstreamExpert
        cfg = {**w2v2_base, "average_top_k_layers": 8, "pos_conv_depth": 1}
        model = Data2VecAudioModel(Data2VecAudioConfig(**cfg))
        model.remove_pretraining_modules()
        weights = {**model.state_dict(), "_ema": torch.zeros(1)}
        return UpstreamExpert(_save({"task_cfg": {"normalize": False}, "model_cfg": cfg,
                                     "model_weight": weights}, tmp, kind))
    if kind in ("fbank", "mfcc"):
        import s3prl.upstream.baseline as baseline
        from s3prl.upstream.baseline.expert import UpstreamExpert
        return UpstreamExpert(str(Path(baseline.__file__).parent / f"{kind}.yaml"))
    raise ValueError(f"no s3prl builder for {kind!r}")


def s3prl_call(model, wavs: torch.Tensor):
    wav_list = list(wavs)
    return lambda: model(wav_list)


def worker(args) -> None:
    """Answer JSON commands on stdin, one per line, with JSON lines on the original stdout
    (s3prl prints to stdout; that goes to stderr here)."""
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    torch.set_num_threads(args.threads)
    import s3prl  # noqa: F401  (fail early if the worker interpreter has no s3prl)

    with tempfile.TemporaryDirectory(prefix="s3prl-bench-") as tmp:  # the s3prl checkpoints
        serve(Path(tmp), out)


def serve(tmp: Path, out) -> None:
    """The worker's command loop; s3prl's experts load their checkpoints from ``tmp``."""
    models, wavs = {}, None
    for line in sys.stdin:
        cmd = json.loads(line)
        try:
            op = cmd["op"]
            if op == "batch":
                wavs = make_batch(cmd["batch"], cmd["seconds"])
                reply = {"ok": True}
            elif op == "peak":
                reply = {"gflops": matmul_peak(cmd.get("seconds", 2.0))}
            elif op == "build":
                t0 = time.perf_counter()
                models[cmd["name"]] = build_s3prl(SPECS[cmd["name"]][1], tmp).eval()
                n = sum(p.numel() for p in models[cmd["name"]].parameters())
                reply = {"params": n, "build_s": time.perf_counter() - t0}
            elif op == "flops":
                reply = {"flops": count_flops(s3prl_call(models[cmd["name"]], wavs))}
            elif op == "time":
                reply = {"seconds": time_call(s3prl_call(models[cmd["name"]], wavs))}
            elif op == "profile":
                reply = {"table": profile(s3prl_call(models[cmd["name"]], wavs))}
            elif op == "drop":
                models.pop(cmd["name"], None)
                reply = {"ok": True}
            elif op == "quit":
                break
            else:
                reply = {"error": f"unknown op {op}"}
        except Exception as exc:  # report, keep serving
            import traceback

            traceback.print_exc()
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        out.write(json.dumps(reply) + "\n")


class Worker:
    def __init__(self, python: str, threads: int, log: Path):
        self.log = open(log, "w")
        self.proc = subprocess.Popen([python, __file__, "--worker", "--threads", str(threads)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log, text=True, cwd=tempfile.gettempdir())

    def ask(self, **cmd) -> dict:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"s3prl worker died; see {self.log.name}")
        return json.loads(line)

    def close(self):
        try:
            self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=60)
        except Exception:
            self.proc.kill()
        self.log.close()


# ---------------------------------------------------------------------------------------

def profile(fn, rows: int = 15) -> str:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with torch.inference_mode(), torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="2 x 2 s batch, 3 repeats, shorter matmul references; without the "
                        "s3prl interpreter, ours alone")
    p.add_argument("--batch", type=int, default=None, help="default 8 (--quick: 2)")
    p.add_argument("--seconds", type=float, default=None, help="default 10 (--quick: 2)")
    p.add_argument("--repeats", type=int, default=None, help="default 5 (--quick: 3)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--only", default="", help="comma-separated upstream names")
    p.add_argument("--s3prl-python", default=os.environ.get("S3PRL_PYTHON", DEFAULT_S3PRL_PYTHON),
                   help="interpreter of a venv with s3prl installed ('' to skip s3prl)")
    p.add_argument("--profile", default="",
                   help="comma-separated names to profile (torch.profiler) on both sides")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    # seconds of the matmul reference: at the start and the end, and before each upstream
    peak_s, row_peak_s = 2.0, 1.0
    if args.quick:
        peak_s, row_peak_s = 0.5, 0.25
    fill_sizes(args, batch=(8, 2), seconds=(10.0, 2.0), repeats=(5, 3))
    torch.set_num_threads(args.threads)
    names = [n for n in args.only.split(",") if n] or list(SPECS)
    unknown = set(names) - set(SPECS)
    if unknown:
        sys.exit(f"unknown upstream(s) {sorted(unknown)}; known: {', '.join(SPECS)}")
    to_profile = {n for n in args.profile.split(",") if n}

    print(f"# upstream forward throughput: ours vs s3prl\n\n{machine_header()}")
    print(f"- batch: {args.batch} x {args.seconds:g} s of seeded noise, fp32, eval, "
          f"inference_mode, {args.threads} threads, {args.warmup} warm-up + {args.repeats} "
          f"timed forwards per side, alternating ours / s3prl")
    cmd = " ".join([sys.executable] + sys.argv)
    print(f"- command: `{cmd}`\n")

    wk = None
    if args.s3prl_python and args.quick and not Path(args.s3prl_python).exists():
        print(f"- NOTE: --s3prl-python {args.s3prl_python} not found: s3prl skipped "
              f"(benchmarks/README.md builds that venv)")
        args.s3prl_python = ""
    if args.s3prl_python:
        if not Path(args.s3prl_python).exists():
            sys.exit(f"--s3prl-python {args.s3prl_python} not found: build the s3prl venv "
                     f"(benchmarks/README.md) or pass --s3prl-python ''")
        log = Path(tempfile.gettempdir()) / "bench_upstream_s3prl_worker.log"
        wk = Worker(args.s3prl_python, args.threads, log)
        wk.ask(op="batch", batch=args.batch, seconds=args.seconds)
        print(f"- s3prl worker: `{args.s3prl_python}` (log: {log})")

    wavs = make_batch(args.batch, args.seconds)
    audio_s = args.batch * args.seconds
    peak = matmul_peak(peak_s)
    peak_s3 = wk.ask(op="peak", seconds=peak_s)["gflops"] if wk else None
    print(f"- fp32 matmul peak (2048^2, {args.threads} threads): ours process "
          f"{peak:.1f} GFLOP/s, s3prl process {fmt(peak_s3)} GFLOP/s\n", flush=True)

    rows, notes, profiles = [], [], []
    for name in names:
        ours = build_ours(name)
        ours_params = sum(p.numel() for p in ours.parameters())
        fn = ours_call(ours, wavs)
        ours_flops = count_flops(fn)
        has_s3 = wk is not None and SPECS[name][1] is not None
        s3 = {}
        if has_s3:
            s3 = wk.ask(op="build", name=name)
            if "error" in s3:
                notes.append(f"{name}: s3prl build failed: {s3['error']}")
                has_s3 = False
            else:
                s3.update(wk.ask(op="flops", name=name))
        # the matmul reference right before this upstream, in each process (load drifts)
        row_peak = matmul_peak(row_peak_s)
        row_peak_s3 = wk.ask(op="peak", seconds=row_peak_s)["gflops"] if has_s3 else None
        for _ in range(args.warmup):
            time_call(fn)
            if has_s3:
                wk.ask(op="time", name=name)
        t_ours, t_s3 = [], []
        for _ in range(args.repeats):
            t_ours.append(time_call(fn))
            if has_s3:
                r = wk.ask(op="time", name=name)
                if "error" in r:
                    notes.append(f"{name}: s3prl forward failed: {r['error']}")
                    has_s3 = False
                else:
                    t_s3.append(r["seconds"])
        mo = median(t_ours)
        ms3 = median(t_s3) if t_s3 else None
        ratio = ms3 / mo if ms3 else None
        gf_ours = ours_flops / mo / 1e9
        gf_s3 = s3["flops"] / ms3 / 1e9 if ms3 else None
        rows.append([
            name, f"{ours_params / 1e6:.1f}", f"{s3['params'] / 1e6:.1f}" if ms3 else "-",
            fmt(audio_s / mo), fmt(audio_s / ms3) if ms3 else "-",
            f"**{ratio:.2f}**" if ratio else "-",
            fmt(ours_flops / 1e9), fmt(s3["flops"] / 1e9) if ms3 else "-",
            f"{fmt(gf_ours)} ({gf_ours / row_peak:.0%} of {row_peak:.0f})",
            f"{fmt(gf_s3)} ({gf_s3 / row_peak_s3:.0%} of {row_peak_s3:.0f})" if ms3 else "-",
        ])
        print(f"{name}: ours {audio_s / mo:.1f} s/s (median of {fmt(mo)} s), "
              f"s3prl {fmt(audio_s / ms3) if ms3 else '-'} s/s, ratio {fmt(ratio)}; "
              f"runs ours {[round(t, 3) for t in t_ours]} s3prl {[round(t, 3) for t in t_s3]}; "
              f"load {load_average()}", file=sys.stderr, flush=True)
        if name in to_profile:
            profiles.append(f"### {name}: ours\n```\n{profile(fn)}\n```")
            if has_s3:
                profiles.append(f"### {name}: s3prl\n```\n"
                                f"{wk.ask(op='profile', name=name)['table']}\n```")
        if has_s3:
            wk.ask(op="drop", name=name)
        del ours, fn

    if wk:
        wk.close()
    peak_end = matmul_peak(peak_s)
    print(table(["upstream", "params M ours", "params M s3prl", "audio s/s ours",
                 "audio s/s s3prl", "ours/s3prl", "GFLOP/batch ours", "GFLOP/batch s3prl",
                 "GFLOP/s ours (% of matmul ref)", "GFLOP/s s3prl (% of matmul ref)"], rows))
    print(f"\n- ratio = s3prl median time / our median time (> 1: ours faster); audio s/s = "
          f"{audio_s:g} s of audio / median forward time")
    print("- matmul ref = the 2048^2 fp32 matmul GFLOP/s measured in the same process just "
          "before that upstream (load-matched); it is a reference, not the hardware peak: "
          "convolutions (oneDNN) can exceed it")
    print(f"- matmul peak at the end: {peak_end:.1f} GFLOP/s (start {peak:.1f}); load average "
          f"at the end: {load_average()}")
    print("\nArchitectures compared:\n" + "\n".join(f"- {n}: {SPECS[n][2]}" for n in names))
    for n in notes:
        print(f"- NOTE {n}")
    for prof in profiles:
        print("\n" + prof)


if __name__ == "__main__":
    main()
