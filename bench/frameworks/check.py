"""Load one mixopt export with the framework's own code on the small local
data of make_data.py, and compare what the framework will sample with the
token shares mixopt asked for. Prints one line:

    PASS|FAIL|STRUCTURAL  FORMAT  PACKAGE==VERSION  what was checked (figures)

    python check.py FORMAT EXPORT DATA_DIR '{"domain": token share, ...}'
"""

import collections
import importlib.metadata as md
import json
import os
import sys


def version(pkg):
    try:
        return f"{pkg}=={md.version(pkg)}"
    except md.PackageNotFoundError:
        return f"{pkg} (not installed)"


def slug(name):
    return name.replace(":", "_").replace(" ", "_")


def close(measured, expected, tol):
    return all(abs(measured.get(k, 0.0) - v) <= tol for k, v in expected.items())


def fmt(d):
    return ", ".join(f"{k} {v:.3f}" for k, v in sorted(d.items()))


def domain_of_text(text, data):
    """The domain whose alphabet a sampled text is written in."""
    alphabets = {"web:news": "abcdef", "books": "ghijkl", "code 2": "mnopqr"}
    counts = {d: sum(text.count(c) for c in a) for d, a in alphabets.items()}
    return max(counts, key=counts.get)


def token_shares(samples):
    """Token share per domain of sampled texts (bytes stand in for tokens)."""
    tok = collections.Counter()
    for d, n in samples:
        tok[d] += n
    total = sum(tok.values())
    return {d: n / total for d, n in tok.items()}


def check_megatron(path, data, expected):
    from megatron.core.datasets.utils import get_blend_from_list

    with open(path) as f:
        prefixes, weights = get_blend_from_list(f.read().split())
    with open(path.replace(".txt", ".per_split.json")) as f:
        per_split = json.load(f)
    get_blend_from_list(per_split["train"].split())
    for p in prefixes:
        assert os.path.exists(p + ".bin") and os.path.exists(p + ".idx"), p
    # Build Megatron's own blended index over the weights (its C++ helper).
    import numpy as np
    from megatron.core.datasets import helpers_cpp

    n = 20000
    w = np.array(weights, dtype=np.float64)
    idx = np.zeros(n, dtype=np.int16)
    sample_idx = np.zeros(n, dtype=np.int64)
    helpers_cpp.build_blending_indices(idx, sample_idx, w / w.sum(), len(w), n, False)
    # Each sample is a fixed-length token sequence: sample shares are token shares.
    names = {p: next(d for d in expected if p.endswith(slug(d) + "_text_document")) for p in prefixes}
    counts = collections.Counter(names[prefixes[i]] for i in idx)
    measured = {d: c / n for d, c in counts.items()}
    ok = close(measured, expected, 0.005)
    return ok, f"get_blend_from_list + helpers_cpp.build_blending_indices, {n} sequences: {fmt(measured)}"


def check_olmo_core(path, data, expected):
    import yaml
    from olmo_core.data.source_mixture import (
        SourceMixtureConfig,
        SourceMixtureDatasetConfig,
        SourceMixtureList,
    )
    from olmo_core.data.types import NumpyDatasetDType

    doc = yaml.safe_load(open(path))
    sources = [SourceMixtureConfig(**s) for s in doc["sources"]]
    cfg = SourceMixtureDatasetConfig(
        source_list=SourceMixtureList(sources=sources),
        requested_tokens=40000,
        global_batch_size=64 * 8,
        processes=1,
        seed=0,
        render_tables=False,
        quiet=True,
    )
    cfg.validate()
    built = cfg.build(npdtype=NumpyDatasetDType.uint16.as_np_dtype(), sequence_length=64)
    tok = {s.name: sum(p.tokens for p in s.path_tokens) for s in built.sources}
    total = sum(tok.values())
    measured = {k: v / total for k, v in tok.items()}
    return close(measured, expected, 0.01), f"SourceMixtureDatasetConfig.build, {total} tokens selected: {fmt(measured)}"


def check_llm_foundry(path, data, expected):
    from omegaconf import OmegaConf
    from streaming import Stream, StreamingDataset

    cfg = OmegaConf.load(path)  # refuses duplicate keys
    streams_cfg = cfg.train_loader.dataset.streams
    streams = [
        Stream(local=s.local, proportion=float(s.proportion)) for s in streams_cfg.values()
    ]
    ds = StreamingDataset(streams=streams, batch_size=8, shuffle=True, shuffle_seed=0, epoch_size=6000)
    counts = collections.Counter()
    for i, sample in enumerate(ds):
        counts[sample["domain"]] += 1
        if i >= 5999:
            break
    n = sum(counts.values())
    measured = {d: c / n for d, c in counts.items()}
    return close(measured, expected, 0.03), (
        f"OmegaConf.load + streaming.StreamingDataset over MDS (64-token samples), {n} samples: {fmt(measured)}"
    )


def run_snippet(path, data):
    """Execute a Python export with the local data directories for its paths."""
    env = {}
    exec(compile(open(path).read(), path, "exec"), env)
    return env


def check_hf(path, data, expected):
    env = run_snippet(path, data)
    mixture = env["mixture"]
    samples = []
    for i, ex in enumerate(mixture):
        samples.append((domain_of_text(ex["text"], data), len(ex["text"])))
        if i >= 3000:
            break
    measured = token_shares(samples)
    converted = env["probabilities"] is not env["token_shares"]
    ok = close(measured, expected, 0.04) if converted else True
    return ok, (
        f"interleave_datasets, 3000 documents, token shares {'(converted)' if converted else '(unconverted)'}: "
        f"{fmt(measured)}"
    )


def check_litdata(path, data, expected):
    env = run_snippet(path, data)
    ds = env["combined_dataset"]
    samples = []
    for i, ex in enumerate(ds):
        samples.append((domain_of_text(ex["text"], data), len(ex["text"])))
        if i >= 1999:
            break
    measured = token_shares(samples)
    converted = env["weights"] is not env["token_shares"]
    ok = close(measured, expected, 0.04) if converted else True
    return ok, (
        f"CombinedStreamingDataset, 2000 documents, token shares {'(converted)' if converted else '(unconverted)'}: "
        f"{fmt(measured)}"
    )


def check_torchtitan(path, data, expected):
    import sys as _sys

    _sys.path.insert(0, os.path.dirname(path))
    env = run_snippet(path, data)
    from torchtitan.hf_datasets.interleaved import InterleavedDataset
    from torchtitan.hf_datasets.text_datasets import HuggingFaceTextDataset

    class Bytes:
        """A byte tokenizer (TorchTitan calls encode(text, add_bos, add_eos))."""

        def encode(self, text, add_bos=False, add_eos=False):
            return list(text.encode())

    cfg = env["MIXOPT_DATALOADER"]
    sources = [
        HuggingFaceTextDataset(
            dataset_name=s.dataset,
            dataset_path=s.dataset_path,
            tokenizer=Bytes(),
            seq_len=64,
            infinite=True,
        )
        for s in cfg.sources
    ]
    ds = InterleavedDataset(sources, [s.weight for s in cfg.sources], seed=cfg.seed)
    counts = collections.Counter()
    for i, (inp, _labels) in enumerate(ds):
        ids = inp["input"] if isinstance(inp, dict) else inp
        text = bytes(int(t) for t in ids if 0 < int(t) < 256).decode(errors="ignore")
        counts[domain_of_text(text, data)] += 1
        if i >= 3000:
            break
    n = sum(counts.values())
    measured = {d: c / n for d, c in counts.items()}
    return close(measured, expected, 0.04), (
        f"DATASETS + InterleavedDataset of HuggingFaceTextDataset (64-token sequences), {n} sequences: {fmt(measured)}"
    )


def check_levanter(path, data, expected):
    import draccus
    import yaml
    from levanter.data.dataset import ListAsyncDataset
    from levanter.data.mixture import MixtureDataset, rescale_mixture_schedule_for_batch_schedule
    from levanter.data.text.datasets import LmDataConfig
    from levanter.schedule import BatchSchedule

    doc = yaml.safe_load(open(path))["data"]
    cfg = draccus.decode(LmDataConfig, doc)
    weights = cfg.train_weights
    if isinstance(weights, list):
        # As LmDataConfig.train_set does, at the exported batch size.
        weights = rescale_mixture_schedule_for_batch_schedule(weights, BatchSchedule(256))
        detail = f"{len(weights)} stages at sequences {[s for s, _ in weights]}"
        first = weights[0][1]
    else:
        detail = "constant weights"
        first = weights
    # Levanter's own mixture (it asserts each stage starts on a block boundary).
    datasets = {name: ListAsyncDataset(list(range(1000))) for name in cfg.components}
    MixtureDataset(datasets=datasets, weights=weights, block_size=cfg.mixture_block_size, key=0)
    total = sum(first.values())
    measured = {k: v / total for k, v in first.items()}
    ok = close(measured, expected, 1e-9)
    return ok, (
        f"draccus.decode(LmDataConfig) + MixtureDataset(block_size={cfg.mixture_block_size}): {detail}; "
        f"first stage {fmt(measured)}"
    )


def check_gpt_neox(path, data, expected):
    """GPT-NeoX is not on PyPI: its validate_values rules, restated."""
    import yaml

    doc = yaml.safe_load(open(path))
    for split in ["train", "valid", "test"]:
        p, w = doc.get(f"{split}-data-paths"), doc.get(f"{split}-data-weights")
        assert p and w and len(p) == len(w), split
    return True, "train/valid/test paths each present with as many weights (NeoXArgs.validate_values' rules)"


CHECKS = {
    "megatron": ("megatron-core", check_megatron),
    "olmo-core": ("ai2-olmo-core", check_olmo_core),
    "llm-foundry": ("mosaicml-streaming", check_llm_foundry),
    "hf": ("datasets", check_hf),
    "litdata": ("litdata", check_litdata),
    "torchtitan": ("torchtitan", check_torchtitan),
    "levanter": ("marin-levanter", check_levanter),
    "gpt-neox": (None, check_gpt_neox),
}


def main():
    fmt_name, path, data, expected = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
    pkg, fn = CHECKS[fmt_name]
    try:
        ok, detail = fn(path, data, expected)
    except Exception as e:  # one line per check, whatever failed
        ok, detail = False, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    status = "STRUCTURAL" if pkg is None and ok else ("PASS" if ok else "FAIL")
    print(f"{status:<10} {fmt_name:<12} {version(pkg) if pkg else 'no package':<32} {detail}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
